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
    level0_mpp: float | None,
) -> dict:
    """Per-class areas (µm², from the label grid) and the job's figures.

    Areas come from label-pixel counts, which are exact; the GeoJSON's
    measurements come from the (simplified) polygons and differ slightly.
    Without a calibration areas are given in level-0 px² instead.
    """
    counts = canvas.class_counts(len(classes))
    tissue_pixels = int(counts.sum())
    area_unit = "um2" if level0_mpp else "px2"
    pixel_area = canvas.downsample**2 * (level0_mpp**2 if level0_mpp else 1.0)
    per_class = [
        {
            "index": index,
            "name": concept.name,
            "color": list(concept.color),
            f"area_{area_unit}": float(counts[index] * pixel_area),
            "fraction_of_tissue": float(counts[index] / tissue_pixels) if tissue_pixels else 0.0,
            "regions": len(polygons.get(index, [])),
            f"polygon_area_{area_unit}": float(
                shapely.area(polygons.get(index, [])).sum() / canvas.downsample**2 * pixel_area
            )
            if polygons.get(index)
            else 0.0,
        }
        for index, concept in enumerate(classes)
    ]
    width, height = slide.info.dimensions
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
            "origin": [-plan.frame_offset[0], -plan.frame_offset[1]],
        },
        "tiles": {
            "grid": plan.grid.rows * plan.grid.cols,
            "processed": len(plan.tiles),
            "size": plan.grid.tile_size,
            "margin": plan.grid.margin,
        },
        "tissue": {
            f"area_{area_unit}": float(tissue_pixels * pixel_area),
            "detected": plan.tissue_detected,
            "fraction_of_slide": float((canvas.labels != NODATA).mean())
            if canvas.labels.size
            else 0.0,
        },
        "classes": per_class,
        "timings_s": {name: round(value, 4) for name, value in timings.items()},
    }
