"""Cutting traced polygons at the edge of the area they may cover.

Label cells are squares of several level-0 pixels; those on an ROI's edge or
on the image's last row and column reach past it. QuPath expects what an ROI
produced to lie inside the ROI, so the polygons are cut there exactly.
"""

from __future__ import annotations

import numpy as np
import shapely


def clip_polygons(
    polygons: dict[int, list[shapely.Polygon]], extent: shapely.Geometry
) -> dict[int, list[shapely.Polygon]]:
    """Each class's polygons intersected with ``extent`` (same units), slivers dropped.

    Polygons wholly inside ``extent`` are kept as they are (the common case,
    and the cheap one); the others are cut, and only the polygonal parts of
    the cut with a positive area are kept. Every class is cut by the same
    edge, so neighbouring classes still share their edges.
    """
    shapely.prepare(extent)
    result: dict[int, list[shapely.Polygon]] = {}
    for index, polys in polygons.items():
        flat = np.empty(len(polys), dtype=object)
        flat[:] = polys
        inside = shapely.contains(extent, flat) if flat.size else np.zeros(0, bool)
        kept = list(flat[inside])
        cut = shapely.intersection(flat[~inside], extent)
        parts = shapely.get_parts(shapely.get_parts(cut))  # collections, then multipolygons
        polygonal = shapely.get_type_id(parts) == shapely.GeometryType.POLYGON
        parts = parts[polygonal]
        kept.extend(parts[shapely.area(parts) > 0])
        result[index] = kept
    return result
