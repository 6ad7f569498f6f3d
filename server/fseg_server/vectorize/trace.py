"""Exact polygons from a label grid, in grid units.

Frame: cell (row ``i``, column ``j``) is the unit square ``x in [j, j+1]``,
``y in [i, i+1]`` (x right, y down, like image pixels). Every boundary
therefore lies on the integer lattice, so polygons of neighbouring classes
share their vertices bit for bit and tile the labelled area exactly.

Algorithm (no per-cell or per-edge Python loop):

1. Boundary edges come from two whole-grid comparisons. Each unit segment
   between two different labels gives one directed edge per non-nodata side,
   oriented with its own cell on the left (in x-right, y-down coordinates this
   makes shells positive by the shoelace formula and holes negative). A
   directed edge is named by (start vertex, direction); edges are kept in four
   direction groups, each sorted by start vertex, so lookups are
   ``searchsorted`` on nearly sorted queries.
2. Each edge's successor follows from the two cells ahead of its end vertex.
   At a saddle (the edge's class on one diagonal only) the edge first turns
   tightly around its own cell, which keeps diagonal cells apart as
   4-connectivity requires. If both passages through the saddle then lie on
   the same ring, the two diagonal cells belong to one component and the ring
   would touch itself (invalid in GEOS); re-linking the saddle the wide way
   splits that ring into a shell/hole or hole/hole pair that only touch at the
   saddle point, which GEOS accepts.
3. Rings are the cycles of the successor permutation
   (``scipy.sparse.csgraph``); one depth-first pass over the cycles chained
   end to start lists their edges in order.
4. Holes are assigned by connected components over rings: every horizontal
   run of same-class cells links the ring of its left end to the ring of its
   right end. Runs join only rings of one 4-connected component, and every
   hole links to a ring further left, so each group is one component: its
   single positive ring is the shell and the rest are its holes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from scipy import sparse
from scipy.sparse.csgraph import connected_components, depth_first_order

# Directions: 0 = +x, 1 = +y, 2 = -x, 3 = -y. Adding 1 is a left turn in the
# sense that keeps the edge's own cell on the left.
_DX = np.array([1, 0, -1, 0])
_DY = np.array([0, 1, 0, -1])


@dataclass
class _Edges:
    """Directed boundary edges, grouped by direction, each group sorted by start vertex."""

    start: np.ndarray  # start vertex key y * (W + 1) + x, int64
    direction: np.ndarray  # uint8, 0..3
    cls: np.ndarray  # label of the cell on the left
    other: np.ndarray  # label of the cell on the right (may be nodata)
    offsets: np.ndarray  # group d holds edges offsets[d]:offsets[d + 1]
    width: int  # grid width W


@dataclass
class _Topology:
    """Boundary edges linked into rings, and rings grouped by component."""

    edges: _Edges
    ring: np.ndarray  # ring id per edge
    order: np.ndarray  # edge indices, ring after ring, each in traversal order
    sizes: np.ndarray  # edges per ring
    area2: np.ndarray  # twice the signed area per ring (> 0: shell, < 0: hole)
    group: np.ndarray  # component id per ring
    ring_cls: np.ndarray  # label per ring (the class on its left)


@dataclass
class Runs:
    """Horizontal runs of same-class cells, each tagged with its 4-connected component.

    Run ``k`` covers cells ``(row[k], start[k]:stop[k])`` of the grid. Components
    are numbered ``0..len(size) - 1``; ``size`` counts cells and ``cls`` is the label.
    """

    row: np.ndarray
    start: np.ndarray
    stop: np.ndarray
    component: np.ndarray
    size: np.ndarray
    cls: np.ndarray


def label_polygons(labels: np.ndarray, nodata: int = 255) -> dict[int, list[shapely.Polygon]]:
    """Trace every 4-connected component of every class into one exact polygon.

    Args:
        labels: 2-D integer array of class indices, one per grid cell.
        nodata: label of cells that produce no polygon (no tissue).

    Returns:
        Polygons in grid units (see module docstring), keyed by class index,
        one per 4-connected component, holes kept as interior rings. Only
        corners are kept as vertices; a vertex where three regions meet is a
        corner too, so shared boundaries carry identical vertices on both sides.
    """
    topo = _topology(labels, nodata)
    if topo is None:
        return {}
    rings = _ring_geometries(topo.edges, topo.ring, topo.order, topo.sizes)
    return _assemble(rings, topo.area2, topo.group, topo.ring_cls)


def component_runs(labels: np.ndarray, nodata: int = 255) -> Runs:
    """Label 4-connected components of every class at once, as horizontal runs.

    Cheaper than one ``scipy.ndimage.label`` per class: the work is proportional
    to the boundary length, plus two whole-grid comparisons.
    """
    topo = _topology(labels, nodata)
    if topo is None:
        empty = np.zeros(0, dtype=np.int64)
        return Runs(empty, empty, empty, empty, empty, np.asarray(labels).ravel()[:0])
    e, o = topo.edges, topo.edges.offsets
    left, right = np.arange(o[3], o[4]), np.arange(o[1], o[2])  # paired run ends
    y, x0 = np.divmod(e.start[left], e.width + 1)
    count = int(topo.group.max()) + 1
    cls = np.empty(count, dtype=e.cls.dtype)
    cls[topo.group] = topo.ring_cls  # all rings of a component share its label
    size = np.bincount(topo.group, weights=topo.area2, minlength=count) / 2
    return Runs(
        row=y - 1,
        start=x0,
        stop=e.start[right] % (e.width + 1),
        component=topo.group[topo.ring[left]],
        size=np.rint(size).astype(np.int64),
        cls=cls,
    )


def count_boundary_edges(labels: np.ndarray, nodata: int = 255) -> int:
    """Number of directed boundary edges (unit segments, one per non-nodata side)."""
    padded = np.pad(_as_grid(labels), 1, constant_values=nodata)
    return int(_boundary_edges(padded, nodata).start.size)


def _as_grid(labels: np.ndarray) -> np.ndarray:
    grid = np.asarray(labels)
    if grid.ndim != 2 or not np.issubdtype(grid.dtype, np.integer):
        raise ValueError(f"labels must be a 2-D integer array, got {grid.dtype} {grid.shape}")
    return grid


def _topology(labels: np.ndarray, nodata: int) -> _Topology | None:
    """Edges, rings and components of a label grid; None when nothing is labelled."""
    grid = _as_grid(labels)
    if grid.size == 0:
        return None
    padded = np.pad(grid, 1, constant_values=nodata)
    edges = _boundary_edges(padded, nodata)
    if edges.start.size == 0:
        return None
    ring, order, sizes = _rings(_link(edges, padded))
    area2 = np.bincount(ring, weights=_shoelace_terms(edges), minlength=sizes.size)
    group = _component_of_ring(edges, ring, sizes.size)
    ring_cls = edges.cls[order[np.cumsum(sizes) - sizes]]
    return _Topology(edges, ring, order, sizes, area2, group, ring_cls)


def _boundary_edges(padded: np.ndarray, nodata: int) -> _Edges:
    """Directed unit edges between differing labels, one per non-nodata side."""
    w = padded.shape[1] - 2
    wp, flat = w + 2, padded.ravel()
    # Horizontal lines y = r (0..H), between padded rows r and r + 1, grid column j.
    pos = np.flatnonzero(padded[:-1, 1:-1] != padded[1:, 1:-1])
    r, j = np.divmod(pos, w)
    cell = r * wp + j + 1
    above, below = flat[cell], flat[cell + wp]
    vert = r * (w + 1) + j
    # Vertical lines x = c (0..w), between padded columns c and c + 1, grid row i.
    pos = np.flatnonzero(padded[1:-1, :-1] != padded[1:-1, 1:])
    i, c = np.divmod(pos, w + 1)
    cell = (i + 1) * wp + c
    left, right = flat[cell], flat[cell + 1]
    groups = [
        (below != nodata, vert, below, above),  # 0: top side of the cell below, +x
        (left != nodata, pos, left, right),  # 1: right side of the cell to the left, +y
        (above != nodata, vert + 1, above, below),  # 2: bottom side of the cell above, -x
        (right != nodata, pos + w + 1, right, left),  # 3: left side of the cell to the right, -y
    ]
    parts = [(s[m], own[m], oth[m]) for m, s, own, oth in groups]
    sizes = np.array([p[0].size for p in parts])
    return _Edges(
        start=np.concatenate([p[0] for p in parts]).astype(np.int64, copy=False),
        direction=np.repeat(np.arange(4, dtype=np.uint8), sizes),
        cls=np.concatenate([p[1] for p in parts]),
        other=np.concatenate([p[2] for p in parts]),
        offsets=np.concatenate([[0], np.cumsum(sizes)]),
        width=w,
    )


def _link(edges: _Edges, padded: np.ndarray) -> np.ndarray:
    """Successor of every edge along its ring, with saddles resolved (see module docstring)."""
    w1, wp = edges.width + 1, edges.width + 2
    d = edges.direction.astype(np.int64)
    end = edges.start + _DX[d] + _DY[d] * w1
    y, x = np.divmod(end, w1)
    se = (y + 1) * wp + x + 1  # padded index of the cell below-right of the end vertex
    # Offsets to the cells ahead-left / ahead-right of the end vertex, per direction.
    ahead_left = np.array([0, -1, -wp - 1, -wp])[d]
    ahead_right = np.array([-wp, 0, -1, -wp - 1])[d]
    flat = padded.ravel()
    keep_left = flat[se + ahead_left] == edges.cls
    keep_right = flat[se + ahead_right] == edges.cls
    turn = np.where(keep_left, np.where(keep_right, 3, 0), 1)
    succ = _lookup(edges, end, (d + turn) % 4)
    saddle = np.flatnonzero(~keep_left & keep_right)
    if saddle.size:
        ring = _cycle_labels(succ)
        wide = _lookup(edges, end[saddle], (d[saddle] + 3) % 4)
        same = ring[saddle] == ring[wide]
        succ[saddle[same]] = wide[same]
    return succ


def _lookup(edges: _Edges, vertex: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Index of the edge leaving ``vertex`` in ``direction`` (it must exist)."""
    out = np.empty(vertex.size, dtype=np.int64)
    for g in range(4):
        sel = np.flatnonzero(direction == g)
        lo, hi = edges.offsets[g], edges.offsets[g + 1]
        out[sel] = lo + np.searchsorted(edges.start[lo:hi], vertex[sel])
    return out


def _successor_graph(succ: np.ndarray) -> sparse.csr_matrix:
    n = succ.size
    index_type = np.int32 if n < 2**31 - 1 else np.int64
    return sparse.csr_matrix(
        (np.ones(n, dtype=np.int8), succ.astype(index_type), np.arange(n + 1, dtype=index_type)),
        shape=(n, n),
    )


def _cycle_labels(succ: np.ndarray) -> np.ndarray:
    """Cycle id of every edge; for a permutation, strong components are its cycles."""
    return connected_components(_successor_graph(succ), directed=True, connection="strong")[1]


def _rings(succ: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decompose the successor permutation into rings.

    Returns ``ring`` (ring id per edge), ``order`` (edge indices, ring after ring,
    each ring in traversal order starting at its lowest edge index) and ``sizes``
    (edges per ring, in ring id order).
    """
    n = succ.size
    ring = _cycle_labels(succ)
    count = int(ring.max()) + 1
    first = np.full(count, n, dtype=np.int64)
    np.minimum.at(first, ring, np.arange(n))
    pred = np.empty(n, dtype=np.int64)
    pred[succ] = np.arange(n)
    # Point each ring's last edge at the next ring's first edge: one path through all.
    chain = succ.copy()
    chain[pred[first]] = np.roll(first, -1)
    order = depth_first_order(_successor_graph(chain), int(first[0]), return_predecessors=False)
    return ring, order.astype(np.int64), np.bincount(ring, minlength=count)


def _shoelace_terms(edges: _Edges) -> np.ndarray:
    """Per-edge ``x0*y1 - x1*y0``; summed over a ring it is twice the signed area."""
    y, x = np.divmod(edges.start, edges.width + 1)
    term = np.select([edges.direction == k for k in range(4)], [-y, x, y, -x])
    return term.astype(np.float64)


def _component_of_ring(edges: _Edges, ring: np.ndarray, count: int) -> np.ndarray:
    """Group rings by 4-connected component through horizontal runs of cells."""
    o = edges.offsets
    # Groups 1 (+y, right ends of runs) and 3 (-y, left ends) are both sorted by
    # (row, x), and every run has exactly one of each: the k-th ones pair up.
    run_end = ring[o[1] : o[2]]
    run_start = ring[o[3] : o[4]]
    graph = sparse.coo_matrix(
        (np.ones(run_end.size, dtype=np.int8), (run_start, run_end)), shape=(count, count)
    )
    return connected_components(graph, directed=False)[1]


def _ring_geometries(
    edges: _Edges, ring: np.ndarray, order: np.ndarray, sizes: np.ndarray
) -> np.ndarray:
    """LinearRings (grid units) in ring id order, keeping corner vertices only."""
    starts = np.cumsum(sizes) - sizes
    prev = np.arange(order.size) - 1
    prev[starts] = starts + sizes - 1  # wrap around inside each ring
    prev = order[prev]
    # A vertex is dropped only where the boundary runs straight between the same
    # two labels on both sides, so every polygon through a vertex agrees on it.
    corner = (edges.direction[order] != edges.direction[prev]) | (
        edges.other[order] != edges.other[prev]
    )
    kept = order[corner]
    y, x = np.divmod(edges.start[kept], edges.width + 1)
    coords = np.column_stack([x, y]).astype(np.float64)
    return shapely.linearrings(coords, indices=ring[kept])


def _assemble(
    rings: np.ndarray, area2: np.ndarray, group: np.ndarray, ring_cls: np.ndarray
) -> dict[int, list[shapely.Polygon]]:
    """Polygons from rings: one shell (positive area) plus its holes per group."""
    is_hole = area2 < 0
    by_group = np.lexsort((is_hole, group))
    shells = by_group[~is_hole[by_group]]
    firsts = by_group[np.flatnonzero(np.diff(group[by_group], prepend=-1))]
    if firsts.size != shells.size or is_hole[firsts].any():
        raise RuntimeError("vectorize: a traced component does not have exactly one shell")
    polygons = shapely.polygons(rings[by_group], indices=group[by_group])
    cls = ring_cls[shells]
    return {int(c): polygons[cls == c].tolist() for c in np.unique(cls)}
