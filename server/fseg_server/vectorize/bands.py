"""Sieving and tracing a large label grid in horizontal bands.

A whole slide's label grid can hold tens of millions of cells; sieving or
tracing it at once needs working memory of many bytes per cell. Bands of
``band_rows`` rows keep that bounded by the band, whatever the slide's size:

* sieving: each band is sieved inside a window with ``2 * min_cells`` rows of
  context on both sides (a small component spans fewer rows than it has
  cells); components cut by the window's edge are never relabelled and count
  as large;
* tracing: each band is traced, and simplified, on its own (band lines are
  part of its coverage's boundary, so simplification keeps them exact); then
  the polygons of a class that touch a band line are unioned with their
  continuation in the next band.
  Their rings are then given exactly the vertices the whole-grid trace would
  have on band lines: corners and junctions (three labels meeting, or a
  saddle) stay or are inserted, straight-through points the cut left are
  dropped. So shared edges between classes still carry identical vertices,
  which coverage simplification relies on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import shapely

from .sieve import sieve
from .trace import label_polygons

BAND_ROWS = 512


def sieve_in_bands(
    labels: np.ndarray, min_cells: int, nodata: int, band_rows: int = BAND_ROWS
) -> np.ndarray:
    """:func:`sieve`, band by band (identical away from band lines)."""
    height = labels.shape[0]
    context = 2 * min_cells
    if height <= band_rows + 2 * context:
        return sieve(labels, min_cells, nodata)
    out = np.empty_like(labels)
    for top, bottom in _bands(height, band_rows):
        w0, w1 = max(0, top - context), min(height, bottom + context)
        window = sieve(labels[w0:w1], min_cells, nodata, open_edges=(w0 > 0, w1 < height))
        out[top:bottom] = window[top - w0 : bottom - w0]
    return out


def polygons_in_bands(
    labels: np.ndarray,
    nodata: int,
    band_rows: int = BAND_ROWS,
    simplify: Callable[[dict[int, list[shapely.Polygon]]], dict] | None = None,
) -> dict[int, list[shapely.Polygon]]:
    """:func:`label_polygons` of a grid traced band by band, in grid units.

    ``simplify`` (a coverage simplification that keeps the coverage's outer
    boundary) is applied to each band's polygons before they are joined.
    """
    simplify = simplify or (lambda polygons: polygons)
    height = labels.shape[0]
    if height <= band_rows:
        return simplify(label_polygons(labels, nodata=nodata))
    whole: dict[int, list[shapely.Polygon]] = {}
    cut: dict[int, list[shapely.Polygon]] = {}
    lines = np.array([top for top, _ in _bands(height, band_rows)][1:])
    for top, bottom in _bands(height, band_rows):
        shift = np.array([0.0, top])
        for cls, polygons in simplify(label_polygons(labels[top:bottom], nodata=nodata)).items():
            if not polygons:
                continue
            moved = shapely.transform(np.asarray(polygons, object), lambda xy, d=shift: xy + d)
            touches = _touches_lines(moved, lines)
            whole.setdefault(cls, []).extend(moved[~touches].tolist())
            cut.setdefault(cls, []).extend(moved[touches].tolist())
    junctions = _Junctions(labels, lines, nodata)
    for cls, pieces in cut.items():
        if pieces:
            merged = shapely.get_parts(shapely.union_all(np.asarray(pieces, object)))
            whole[cls].extend(junctions.canonical(p) for p in merged.tolist())
    return whole


class _Junctions:
    """Which lattice points on band lines are vertices of the whole-grid trace."""

    def __init__(self, labels: np.ndarray, lines: np.ndarray, nodata: int) -> None:
        self.lines = {int(r): self._row(labels, int(r), nodata) for r in lines}

    @staticmethod
    def _row(labels: np.ndarray, r: int, nodata: int) -> np.ndarray:
        """For x = 0..width: whether (x, r) is a junction of three labels or a saddle."""
        pad = np.full((2, labels.shape[1] + 2), nodata, labels.dtype)
        pad[:, 1:-1] = labels[r - 1 : r + 1]
        ul, ur, ll, lr = pad[0, :-1], pad[0, 1:], pad[1, :-1], pad[1, 1:]
        new_ll = (ll != ul) & (ll != ur)
        new_lr = (lr != ul) & (lr != ur) & (lr != ll)
        distinct = 1 + (ur != ul) + new_ll + new_lr
        saddle = (ul == lr) & (ur == ll) & (ul != ur)
        return (distinct >= 3) | saddle

    def canonical(self, polygon: shapely.Polygon) -> shapely.Polygon:
        exterior = self._ring(np.asarray(polygon.exterior.coords))
        holes = [self._ring(np.asarray(ring.coords)) for ring in polygon.interiors]
        return shapely.Polygon(exterior, holes)

    def _ring(self, xy: np.ndarray) -> np.ndarray:
        points = xy[:-1]
        keep = np.ones(len(points), bool)
        before, after = np.roll(points, 1, axis=0), np.roll(points, -1, axis=0)
        straight = ((before[:, 0] == points[:, 0]) & (after[:, 0] == points[:, 0])) | (
            (before[:, 1] == points[:, 1]) & (after[:, 1] == points[:, 1])
        )
        out: list[np.ndarray] = []
        for i, (x, y) in enumerate(points):
            row = self.lines.get(int(y)) if y == int(y) else None
            if row is not None and straight[i] and not row[int(x)]:
                keep[i] = False
        for i, point in enumerate(points):
            if keep[i]:
                out.append(point[None])
            nxt = after[i]
            row = self.lines.get(int(point[1])) if point[1] == nxt[1] else None
            if row is not None:
                out.append(self._between(point, nxt, row))
        return np.concatenate(out)

    @staticmethod
    def _between(a: np.ndarray, b: np.ndarray, row: np.ndarray) -> np.ndarray:
        """Junctions strictly between a and b on a band line, in walking order."""
        lo, hi = sorted((int(a[0]), int(b[0])))
        xs = np.flatnonzero(row[lo + 1 : hi]) + lo + 1
        xs = xs if a[0] < b[0] else xs[::-1]
        return np.column_stack([xs, np.full(xs.size, a[1])]).astype(float)


def _touches_lines(polygons: np.ndarray, lines: np.ndarray) -> np.ndarray:
    """Whether each polygon's top or bottom edge lies on a band line."""
    bounds = shapely.bounds(polygons)
    return np.isin(bounds[:, 1], lines) | np.isin(bounds[:, 3], lines)


def _bands(height: int, band_rows: int) -> Iterator[tuple[int, int]]:
    for top in range(0, height, band_rows):
        yield top, min(top + band_rows, height)
