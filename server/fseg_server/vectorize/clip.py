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
    polygons: dict[int, list[shapely.Polygon]],
    extent: shapely.Geometry,
    min_area: float = 0.0,
) -> dict[int, list[shapely.Polygon]]:
    """Each class's polygons intersected with ``extent`` (same units).

    Polygons wholly inside ``extent`` are kept as they are (the common case,
    and the cheap one); the others are cut, and the polygonal parts of the cut
    with a positive area are kept. Every class is cut by the same edge, so
    neighbouring classes still share their edges. A cut piece smaller than
    ``min_area`` (units²) joins the neighbour it shares the longest edge with,
    as the sieve does before tracing, or goes when it touches no other class.
    """
    shapely.prepare(extent)
    keys: list[int] = []
    pieces: list[shapely.Polygon] = []
    was_cut: list[bool] = []
    for index, polys in polygons.items():
        flat = np.empty(len(polys), dtype=object)
        flat[:] = polys
        inside = shapely.contains(extent, flat) if flat.size else np.zeros(0, bool)
        parts = shapely.get_parts(shapely.get_parts(shapely.intersection(flat[~inside], extent)))
        parts = parts[shapely.get_type_id(parts) == shapely.GeometryType.POLYGON]
        parts = parts[shapely.area(parts) > 0]
        for geometries, cut in ((flat[inside], False), (parts, True)):
            keys.extend([index] * len(geometries))
            pieces.extend(geometries)
            was_cut.extend([cut] * len(geometries))
    if min_area > 0:
        _merge_small_cuts(pieces, was_cut, min_area)
    result: dict[int, list[shapely.Polygon]] = {k: [] for k in polygons}
    for key, piece in zip(keys, pieces, strict=True):
        if piece is not None:
            result[key].append(piece)
    return result


def _merge_small_cuts(pieces: list, was_cut: list[bool], min_area: float) -> None:
    """Merge cut pieces under ``min_area`` into their longest-bordering neighbour, in place.

    Merged or dropped pieces become None. Smallest first, so that a sliver
    beside another sliver ends in whatever the pair borders.
    """
    areas = shapely.area(np.asarray(pieces, dtype=object)) if pieces else np.zeros(0)
    small = [i for i in np.argsort(areas) if was_cut[i] and areas[i] < min_area]
    if not small:
        return
    tree = shapely.STRtree(pieces)
    merged_into = list(range(len(pieces)))

    def owner(i: int) -> int:
        while merged_into[i] != i:
            i = merged_into[i]
        return i

    for i in small:  # pieces[i] is still there: only smaller pieces went before it
        best, longest = None, 0.0
        for j in {owner(int(j)) for j in tree.query(pieces[i])} - {i}:
            if pieces[j] is None:  # dropped: it bordered no other class
                continue
            shared = shapely.length(shapely.intersection(pieces[i].boundary, pieces[j].boundary))
            if shared > longest:
                best, longest = j, shared
        if best is not None:
            pieces[best] = shapely.union(pieces[best], pieces[i])
            merged_into[i] = best
        pieces[i] = None


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
