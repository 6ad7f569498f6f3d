"""The JSON summary of a segmented slide: areas, counts, resolution, timings, the job's
metadata (also written into the GeoJSON) and warnings for the user."""

from __future__ import annotations

from collections.abc import Sequence

import shapely

from .. import __version__
from ..concepts.bank import ConceptBank, ConceptClass
from ..extract import Extractor
from ..slide.reader import Slide
from ..vectorize import area_within
from .canvas import NODATA, LabelCanvas
from .options import SegmentOptions
from .plan import SlidePlan

MPP_AGREEMENT = 0.01  # --mpp within 1% of the slide's own µm/px is no override


def polygon_areas(polygons: dict[int, list], k: int) -> list[float]:
    """Each class's polygon area, level-0 px², for class indices 0..k-1."""
    return [float(shapely.area(polygons[i]).sum()) if polygons.get(i) else 0.0 for i in range(k)]


def shares_of(areas: Sequence[float]) -> list[float]:
    """Each area's fraction of their sum (all 0 when the sum is)."""
    total = sum(areas)
    return [a / total if total else 0.0 for a in areas]


def build_summary(
    slide: Slide,
    canvas: LabelCanvas,
    plan: SlidePlan,
    classes: Sequence[ConceptClass],
    polygons: dict[int, list],
    areas_px2: Sequence[float],
    metadata: dict,
    timings: dict[str, float],
) -> dict:
    """Per-class areas (µm²) and the job's figures.

    ``area_um2`` and ``fraction_of_tissue`` are those of the polygons
    (``areas_px2``, from :func:`polygon_areas`), which are what QuPath imports
    (regions under ``--min-area`` merged into their surroundings, outlines
    simplified). ``label_grid_area_um2`` counts the label grid (``labels.png``)
    before that merge. The tissue's area is the label grid's too, except with
    an ROI, whose edge cells reach past it: then it is the tissue inside the
    ROI. Without a calibration areas are given in level-0 px² instead.
    """
    level0_pixel_um2 = plan.level0_pixel_um2
    counts = canvas.class_counts(len(classes))
    area_unit = "um2" if level0_pixel_um2 else "px2"
    scale = level0_pixel_um2 or 1.0  # µm² per level-0 px²
    pixel_area = canvas.downsample**2 * scale
    shares = shares_of(areas_px2)
    per_class = [
        {
            "index": index,
            "name": concept.name,
            "color": list(concept.color),
            f"area_{area_unit}": areas_px2[index] * scale,
            "fraction_of_tissue": shares[index],
            "regions": len(polygons.get(index, [])),
            f"label_grid_area_{area_unit}": float(counts[index] * pixel_area),
        }
        for index, concept in enumerate(classes)
    ]
    width, height = slide.info.dimensions
    tissue_area = _tissue_px2(canvas, plan, int(counts.sum())) * scale
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
            "origin": list(plan.origin),
        },
        "tiles": {
            "processed": len(plan.tiles),
            "largest": max((max(t.core_w, t.core_h) for t in plan.tiles), default=0),
            "block": plan.block,
            "margin": plan.grid.margin,
            # Whether only the tissue's blocks went through the model (extract/sparse.py).
            "block_sparse": any(tile.blocks is not None for tile in plan.tiles),
            # Target pixels (the working resolution): what went through the
            # model, cores and margins, against the tissue it was for.
            "model_px": plan.model_px,
            "tissue_px": round(plan.tissue_px),
            "model_px_per_tissue_px": round(plan.model_px / plan.tissue_px, 4)
            if plan.tissue_px
            else None,
        },
        "tissue": {
            f"area_{area_unit}": float(tissue_area),
            "detected": plan.tissue_detected,
            "fraction_of_slide": tissue_area / (width * height * scale) if width * height else 0.0,
        },
        "classes": per_class,
        "timings_s": {name: round(value, 4) for name, value in timings.items()},
    }


def _tissue_px2(canvas: LabelCanvas, plan: SlidePlan, tissue_cells: int) -> float:
    """Level-0 px² of tissue: the label grid's ``tissue_cells``, or with an ROI the
    part of them inside it."""
    if plan.roi is None:
        return tissue_cells * canvas.downsample**2
    return area_within(
        canvas.labels, nodata=NODATA, cell_size=canvas.downsample, origin=plan.origin,
        extent=plan.extent,
    )  # fmt: skip


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
    bits = slide.info.bits_per_channel
    if bits > 8:
        said.append(
            f"the image stores {bits} bits per colour channel and was read as 8-bit RGB, its "
            f"full range (0 to {2**bits - 1:,}) mapped onto 0 to 255, as the models see 8-bit "
            "images; an image whose values fill only part of that range (12-bit camera data, "
            "say) was read darker than it is, so rescale it to the full range first"
        )
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
