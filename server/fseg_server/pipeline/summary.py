"""The JSON summary of a segmented slide: areas, counts, resolution, timings, the job's
metadata (also written into the GeoJSON) and warnings for the user."""

from __future__ import annotations

from collections.abc import Sequence

import shapely

from .. import __version__
from ..concepts.bank import ConceptBank, ConceptClass
from ..extract import Extractor
from ..slide.reader import Slide
from .canvas import NODATA, LabelCanvas
from .options import SegmentOptions
from .plan import SlidePlan

MPP_AGREEMENT = 0.01  # --mpp within 1% of the slide's own µm/px is no override


def build_summary(
    slide: Slide,
    canvas: LabelCanvas,
    plan: SlidePlan,
    classes: Sequence[ConceptClass],
    polygons: dict[int, list],
    metadata: dict,
    timings: dict[str, float],
    tissue_px2: float | None = None,
) -> dict:
    """Per-class areas (µm²) and the job's figures.

    ``area_um2`` and ``fraction_of_tissue`` are those of the polygons, which
    are what QuPath imports (regions under ``--min-area`` merged into their
    surroundings, outlines simplified). ``label_grid_area_um2`` counts the
    label grid (``labels.png``) before that merge. The tissue's area is the
    label grid's too, unless ``tissue_px2`` (level-0 px²) gives it: with an
    ROI, whose edge cells reach past it, the tissue inside the ROI. Without a
    calibration areas are given in level-0 px² instead.
    """
    level0_pixel_um2 = plan.level0_pixel_um2
    counts = canvas.class_counts(len(classes))
    tissue_pixels = int(counts.sum())
    area_unit = "um2" if level0_pixel_um2 else "px2"
    scale = level0_pixel_um2 or 1.0  # µm² per level-0 px²
    pixel_area = canvas.downsample**2 * scale
    polygon_areas = [
        float(shapely.area(polygons[i]).sum()) * scale if polygons.get(i) else 0.0
        for i in range(len(classes))
    ]
    covered = sum(polygon_areas)
    per_class = [
        {
            "index": index,
            "name": concept.name,
            "color": list(concept.color),
            f"area_{area_unit}": polygon_areas[index],
            "fraction_of_tissue": polygon_areas[index] / covered if covered else 0.0,
            "regions": len(polygons.get(index, [])),
            f"label_grid_area_{area_unit}": float(counts[index] * pixel_area),
        }
        for index, concept in enumerate(classes)
    ]
    width, height = slide.info.dimensions
    tissue_area = tissue_pixels * pixel_area if tissue_px2 is None else tissue_px2 * scale
    return {
        **metadata,
        "dimensions": [width, height],
        "level_read": plan.resolution.level,
        "labels": {
            "width": int(canvas.labels.shape[1]),
            "height": int(canvas.labels.shape[0]),
            "downsample": canvas.downsample,
            "per_cell": plan.upsample,
            "nodata": NODATA,
            "origin": [0.0 - plan.frame_offset[0], 0.0 - plan.frame_offset[1]],  # no -0.0
        },
        "tiles": {
            "grid": plan.grid.rows * plan.grid.cols,
            "processed": len(plan.tiles),
            "size": plan.grid.tile_size,
            "margin": plan.grid.margin,
        },
        "tissue": {
            f"area_{area_unit}": float(tissue_area),
            "detected": plan.tissue_detected,
            "fraction_of_slide": tissue_area / (width * height * scale) if width * height else 0.0,
        },
        "classes": per_class,
        "timings_s": {name: round(value, 4) for name, value in timings.items()},
    }


def warnings_for(slide: Slide, options: SegmentOptions, tissue_found: bool) -> list[str]:
    """What a user should know about this result: one sentence each."""
    said = []
    if not tissue_found:
        said.append(
            "no tissue was found, so the outputs hold no class; for an image that is all "
            "tissue, pass --tissue off"
            + (", and check that the ROI covers tissue" if options.roi else "")
        )
    override = _mpp_override(options, slide.info.mpp)
    if override:
        said.append(override)
    return said


def _mpp_override(options: SegmentOptions, recorded: tuple[float, float] | None) -> str | None:
    """The sentence for a given µm/px unlike the slide's own (either side), else None."""
    given = options.slide_mpp
    if given is None or recorded is None:
        return None
    # Either side: a slide recording 0.25 x 0.3 µm given 0.25 loses a sixth of its area.
    if all(abs(given / side - 1) <= MPP_AGREEMENT for side in recorded):
        return None
    x, y = recorded
    shown = f"{x:g}" if x == y else f"{x:g} x {y:g}"
    return (
        f"{options.slide_mpp_from} {given:g} µm/px overrides the {shown} µm/px the slide "
        "records; areas and the working resolution follow the value given"
    )


def job_metadata(
    name: str,
    extractor: Extractor,
    bank: ConceptBank,
    bank_name: str,
    options: SegmentOptions,
    plan: SlidePlan,
) -> dict:
    working_mpp = plan.resolution.mpp
    if working_mpp is not None:  # 0.499 µm/px at downsample 2.004 reads 1.0, not 0.99...99
        working_mpp = float(f"{working_mpp:.12g}")
    return {
        "software": f"fseg {__version__}",
        "slide": name,
        "extractor": extractor.spec.name,
        "bank": bank_name or bank.source,
        "bank_sha256": bank.digest,
        "k": options.k,
        "mode": options.mode.value,
        "mpp": plan.level0_mpp,
        "mpp_y": plan.resolution.level0_mpp_y,
        "working_mpp": working_mpp,
        "frame": options.frame.value,
        "frame_offset": list(plan.frame_offset),
        "units": "level-0 pixels",
    }
