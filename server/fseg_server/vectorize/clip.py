"""Cutting traced polygons at the edge of the area they may cover.

Label cells are squares of several level-0 pixels; those on an ROI's edge or
on the image's last row and column reach past it. QuPath expects what an ROI
produced to lie inside the ROI, so the polygons are cut there exactly.
"""

from __future__ import annotations

import math

import numpy as np
import shapely

from .frame import to_output_frame
from .trace import label_polygons


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


def area_within(
    labels: np.ndarray,
    *,
    nodata: int,
    cell_size: float,
    origin: tuple[float, float],
    extent: shapely.Geometry,
) -> float:
    """Area (level-0 px²) of the labelled cells (not ``nodata``) that lies inside ``extent``.

    Cell (row, col) of ``labels`` covers level-0 ``origin + (col, row) *
    cell_size`` to one cell further; ``extent`` is in the same frame. Only the
    grid under the extent's bounding box is traced, so a small ROI on a large
    slide costs little.
    """
    rows, cols = labels.shape
    minx, miny, maxx, maxy = extent.bounds
    c0 = max(0, math.floor((minx - origin[0]) / cell_size))
    r0 = max(0, math.floor((miny - origin[1]) / cell_size))
    c1 = min(cols, math.ceil((maxx - origin[0]) / cell_size))
    r1 = min(rows, math.ceil((maxy - origin[1]) / cell_size))
    if c1 <= c0 or r1 <= r0:
        return 0.0
    window = (labels[r0:r1, c0:c1] != nodata).astype(np.uint8)
    traced = label_polygons(window, nodata=0).get(1, [])
    if not traced:
        return 0.0
    corner = (origin[0] + c0 * cell_size, origin[1] + r0 * cell_size)
    placed = to_output_frame({1: traced}, cell_size=cell_size, origin=corner)[1]
    return float(shapely.area(shapely.intersection(np.asarray(placed, dtype=object), extent)).sum())
