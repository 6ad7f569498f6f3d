"""Remove small regions from a label grid before tracing.

A *small component* is a 4-connected component of one class with fewer than
``min_cells`` cells. Each one takes the label of the neighbour it shares the
most edge with among the components that are not small; one surrounded only
by other small components joins its largest neighbour, so an island made of
small pieces ends up as its largest piece. Regions never grow into nodata and
nodata never fills tissue, with one exception: a small component with no
tissue neighbour at all (debris on the glass) becomes nodata, since filling it
from across the glass would invent a class there.

The grid is labelled once; merging then happens on the graph of components
(a union-find over component ids), and the grid is relabelled once at the
end. Memory is one int32 per cell, whatever the number of regions, so sieving
a whole slide's label grid stays cheap.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

MAX_ROUNDS = 64
_FOUR = ndimage.generate_binary_structure(2, 1)
_NODATA_ID = 0


def sieve(
    labels: np.ndarray,
    min_cells: int,
    nodata: int = 255,
    open_edges: tuple[bool, bool] = (False, False),
) -> np.ndarray:
    """Relabel every class component smaller than ``min_cells`` cells (see module docstring).

    Args:
        labels: 2-D integer grid of class indices, one per grid cell.
        min_cells: smallest component (in grid cells) that survives; 0 or 1 keeps all.
        nodata: label of cells outside the tissue.
        open_edges: whether the grid's (top, bottom) row is cut from a larger
            grid; components touching a cut edge are left alone and count as
            large, since their true size is unknown here.

    Returns:
        A new array of the same shape and dtype.
    """
    grid = np.asarray(labels)
    if min_cells <= 1 or grid.size == 0:
        return grid.copy()
    ids, sizes, classes = _components(grid, nodata)
    for is_open, row in zip(open_edges, (ids[0], ids[-1]), strict=True):
        if is_open:
            cut = np.unique(row)
            sizes[cut[cut != _NODATA_ID]] = np.iinfo(np.int64).max // 4
    if not (sizes[1:] < min_cells).any():
        return grid.copy()
    own, other, shared = _adjacency(ids, sizes < min_cells)
    parent = _merge(own, other, shared, sizes, min_cells)
    root = _find_all(parent)
    final = np.where(root == _NODATA_ID, nodata, classes[root]).astype(grid.dtype)
    return final[ids]


def _components(grid: np.ndarray, nodata: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A global id per 4-connected class component (0 for nodata), sizes and classes by id."""
    ids = np.zeros(grid.shape, np.int32)
    sizes, classes = [np.zeros(1, np.int64)], [np.array([nodata])]
    offset = 0
    present = np.flatnonzero(np.bincount(grid.ravel().astype(np.int64)))
    for value in present[present != nodata]:
        mask = grid == value
        local, count = ndimage.label(mask, structure=_FOUR, output=np.int32)
        local[mask] += offset
        np.copyto(ids, local, where=mask)
        sizes.append(np.bincount(local[mask] - offset, minlength=count + 1)[1:])
        classes.append(np.full(count, value))
        offset += count
        del mask, local
    return ids, np.concatenate(sizes), np.concatenate(classes)


def _adjacency(ids: np.ndarray, small: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges between a small component and any neighbour: (small id, neighbour id, shared edges).

    The grid's outside counts as nodata (id 0).
    """
    padded = np.pad(ids, 1, constant_values=_NODATA_ID)
    pairs = []
    for a, b in ((padded[:, :-1], padded[:, 1:]), (padded[:-1, :], padded[1:, :])):
        touching = (a != b) & (small[a] | small[b])
        left, right = a[touching], b[touching]
        pairs.append(np.stack([left, right]))
        pairs.append(np.stack([right, left]))
    both = np.concatenate(pairs, axis=1)
    both = both[:, small[both[0]]]
    keys, shared = np.unique(_pair_keys(both[0], both[1], small.size), return_counts=True)
    own, other = np.divmod(keys, small.size)
    return own, other, shared


def _merge(
    own: np.ndarray, other: np.ndarray, shared: np.ndarray, sizes: np.ndarray, min_cells: int
) -> np.ndarray:
    """Union-find parents after small components have joined their neighbours.

    Each round, every small root joins (by root ids and pooled edge counts):
    the not-small neighbour it shares most edges with; else a larger small
    neighbour (ties to the higher id); a root with only nodata around joins
    nodata (id 0). Joins only go to "larger", so no cycle can form.
    """
    parent = np.arange(sizes.size)
    for _ in range(MAX_ROUNDS):
        roots = _find_all(parent)
        size = np.bincount(roots, weights=sizes, minlength=sizes.size)
        root_own, root_other = roots[own], roots[other]
        live = (root_own != root_other) & (root_own != _NODATA_ID)
        live &= size[root_own] < min_cells
        if not live.any():
            break
        keys, edges = _pool(root_own[live], root_other[live], shared[live])
        mine, theirs = keys
        tissue = theirs != _NODATA_ID
        big = tissue & (size[theirs] >= min_cells)
        larger = (size[theirs] > size[mine]) | ((size[theirs] == size[mine]) & (theirs > mine))
        rank = np.where(big, 2e12 + edges, np.where(tissue & larger, 1e12 + size[theirs], 0.0))
        order = np.lexsort((rank, mine))
        best = order[np.r_[np.flatnonzero(np.diff(mine[order])), order.size - 1]]
        joins = rank[best] > 0
        isolated = np.setdiff1d(mine, mine[tissue])
        if not joins.any() and isolated.size == 0:
            break
        parent[mine[best][joins]] = theirs[best][joins]
        parent[isolated] = _NODATA_ID
    return parent


def _pool(own: np.ndarray, other: np.ndarray, shared: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum edge counts of duplicate (own, other) root pairs."""
    count = int(max(own.max(), other.max())) + 1
    keys, inverse = np.unique(_pair_keys(own, other, count), return_inverse=True)
    return np.stack(np.divmod(keys, count)), np.bincount(inverse, weights=shared)


def _pair_keys(a: np.ndarray, b: np.ndarray, count: int) -> np.ndarray:
    """One int64 per (a, b) pair, ordered by a then b (1-D unique is far faster than axis=1)."""
    return a.astype(np.int64) * count + b


def _find_all(parent: np.ndarray) -> np.ndarray:
    """The root of every id, by pointer jumping (vectorized path compression)."""
    root = parent.copy()
    while True:
        nxt = root[root]
        if np.array_equal(nxt, root):
            return root
        root = nxt
