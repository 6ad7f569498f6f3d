"""Remove small regions from a label grid before tracing.

A *small component* is a 4-connected component of one class with fewer than
``min_cells`` cells. Its cells are taken over by the surrounding regions: the
kept regions grow into small components one cell layer at a time (each cell
takes the most common label among its already settled 4-neighbours), so every
cell ends up with the label of its nearest kept region measured along paths
through the small components. Regions never grow into nodata and nodata never
fills tissue, so the tissue area is unchanged, with one documented exception:

* a tissue island (4-connected non-nodata cells surrounded by nodata) that has
  fewer than ``min_cells`` cells in total becomes nodata: it is debris, and
  filling it from across the glass would invent a far-away class there;
* an island of at least ``min_cells`` cells made only of small components keeps
  its largest component, which then fills the island.

After sieving, every component of every class has at least ``min_cells`` cells.
Work is proportional to the boundary length plus the cells being relabelled.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from fseg_server.vectorize.trace import Runs, component_runs


def sieve(labels: np.ndarray, min_cells: int, nodata: int = 255) -> np.ndarray:
    """Relabel every class component smaller than ``min_cells`` cells (see module docstring).

    Args:
        labels: 2-D integer grid of class indices, one per grid cell.
        min_cells: smallest component (in grid cells) that survives; 0 or 1 keeps all.
        nodata: label of cells outside the tissue.

    Returns:
        A new array of the same shape and dtype.
    """
    grid = np.array(labels, copy=True)
    if min_cells <= 1 or grid.size == 0:
        return grid
    runs = component_runs(grid, nodata)
    small = runs.size < min_cells
    if not small.any():
        return grid
    height, width = grid.shape
    padded = np.pad(grid, 1, constant_values=nodata)
    cells, comp = _small_cells(runs, small, width + 2)
    flat = padded.ravel()
    settled = np.ones(flat.size, dtype=bool)
    settled[cells] = False
    settled[flat == nodata] = False  # nodata never spreads into tissue
    pending = _grow(flat, settled, cells, width + 2)
    while pending.size:
        seeds, dropped = _settle_islands(
            pending, comp[np.searchsorted(cells, pending)], runs, min_cells, width + 2
        )
        flat[dropped] = nodata
        settled[seeds] = True
        rest = np.setdiff1d(pending, np.concatenate([seeds, dropped]), assume_unique=True)
        pending = _grow(flat, settled, rest, width + 2)
    return padded[1 : height + 1, 1 : width + 1].copy()


def _small_cells(runs: Runs, small: np.ndarray, padded_width: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted padded flat indices of cells in small components, and their component ids."""
    pick = np.flatnonzero(small[runs.component])
    length = runs.stop[pick] - runs.start[pick]
    first = (runs.row[pick] + 1) * padded_width + runs.start[pick] + 1
    # Expand each run to its cells: offsets 0..length-1 after each run's first cell.
    run_of_cell = np.repeat(np.arange(pick.size), length)
    offset = np.arange(run_of_cell.size) - np.repeat(np.cumsum(length) - length, length)
    cells = first[run_of_cell] + offset
    comp = runs.component[pick][run_of_cell]
    order = np.argsort(cells, kind="stable")
    return cells[order], comp[order]


def _grow(flat: np.ndarray, settled: np.ndarray, pending: np.ndarray, wp: int) -> np.ndarray:
    """Let settled cells take over ``pending`` layer by layer; return cells never reached."""
    steps = np.array([-wp, -1, wp, 1])
    while pending.size:
        neighbour = pending[:, None] + steps  # (n, 4), always inside the padded grid
        ok = settled[neighbour]
        reached = ok.any(axis=1)
        if not reached.any():
            break
        cells, ok, lab = pending[reached], ok[reached], flat[neighbour[reached]]
        # Most common settled neighbour label; ties go to the first in `steps` order.
        votes = ((lab[:, :, None] == lab[:, None, :]) & ok[:, None, :]).sum(axis=2)
        votes[~ok] = -1
        flat[cells] = lab[np.arange(cells.size), votes.argmax(axis=1)]
        settled[cells] = True  # after the vote, so a layer only sees the previous ones
        pending = pending[~reached]
    return pending


def _settle_islands(
    stranded: np.ndarray, comp: np.ndarray, runs: Runs, min_cells: int, wp: int
) -> tuple[np.ndarray, np.ndarray]:
    """Handle islands made only of small components.

    Returns the cells of each large island's largest component (new seeds) and
    the cells of islands below ``min_cells`` (to become nodata).
    """
    n = stranded.size
    # 4-adjacency among the stranded cells: right and down neighbours suffice.
    src, dst = [], []
    for step in (1, wp):
        j = np.searchsorted(stranded, stranded + step)
        hit = (j < n) & (stranded[np.minimum(j, n - 1)] == stranded + step)
        src.append(np.flatnonzero(hit))
        dst.append(j[hit])
    src_all, dst_all = np.concatenate(src), np.concatenate(dst)
    graph = sparse.coo_matrix((np.ones(src_all.size, dtype=np.int8), (src_all, dst_all)), (n, n))
    island = connected_components(graph, directed=False)[1]
    island_size = np.bincount(island)
    dropped = island_size[island] < min_cells
    # Largest component per island: sort cells by (island, component size), take the last.
    size = runs.size[comp]
    order = np.lexsort((comp, size, island))
    last = order[np.r_[np.flatnonzero(np.diff(island[order])), order.size - 1]]
    best = np.full(island_size.size, -1, dtype=np.int64)
    best[island[last]] = comp[last]
    seeds = ~dropped & (comp == best[island])
    return stranded[seeds], stranded[dropped]
