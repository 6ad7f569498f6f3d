"""The JSON summary of a segmented slide: areas, counts, resolution and timings."""

from __future__ import annotations

from collections.abc import Sequence

import shapely

from ..concepts.bank import ConceptClass
from ..slide.reader import Slide
from .canvas import NODATA, LabelCanvas
from .plan import SlidePlan


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
