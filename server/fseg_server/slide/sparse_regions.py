"""Planning block-sparse regions: windows of the slide whose tissue blocks alone are computed.

A network that runs on packed blocks (``extract/sparse.py``) pays for the
blocks that hold tissue and for nothing else, so there is nothing to gain by
cutting the tissue into tight rectangles: the dense planner's cuts
(``regions.py``) exist to leave glass out, and each adds context margins.
Here the slide's block grid is divided into windows of at most ``max_blocks``
blocks a side, as few as that allows, cut where the least tissue lies; each window,
shrunk to the tissue it holds, is one region. Its rectangle is read with
``reach`` blocks of context on every side, and the occupied blocks in that
ring, which belong to the neighbouring windows, are computed with it, so
that labels at the window's edge see their neighbours as a whole-slide pass
would. Model pixels are then the tissue's blocks plus those rings.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np

from ..errors import Cancelled
from .regions import RegionGeometry, shrink_to_tissue, smallest_first
from .tiles import BlockMask, Tile, TileGrid

#: Windows planned between looks at whether the job was cancelled.
STOP_CHECK_WINDOWS = 64


def plan_sparse_regions(
    occupied: np.ndarray,
    grid: TileGrid,
    geometry: RegionGeometry,
    should_stop: Callable[[], bool] = lambda: False,
) -> list[Tile]:
    """One block-sparse region per window that holds tissue: the smallest first, then
    the others row-major.

    Args:
        occupied: (rows, cols) bool over the slide's blocks of ``geometry.block``
            target pixels: True where any tissue lies.

    Each region's core is its window shrunk to its tissue, in whole blocks
    (the canvas clips what passes the slide's edge); its margins are
    ``reach`` whole blocks, ``reach`` = the context margin in blocks.
    """
    block, limit = geometry.block, geometry.max_blocks
    reach = max(1, -(-geometry.margin // block))
    padded = np.pad(occupied, reach)
    row_edges = _cuts(occupied.sum(axis=1), limit, reach)
    col_edges = _cuts(occupied.sum(axis=0), limit, reach)
    tiles = []
    windows = itertools.product(itertools.pairwise(row_edges), itertools.pairwise(col_edges))
    for seen, ((r0, r1), (c0, c1)) in enumerate(windows, start=1):
        if seen % STOP_CHECK_WINDOWS == 0 and should_stop():
            raise Cancelled("the job was cancelled while its regions were planned")
        box = shrink_to_tissue(occupied, r0, r1, c0, c1)
        if box is None:
            continue
        top, bottom, left, right = box
        # In padded coordinates the ring of ``reach`` blocks starts at the box itself.
        ring = padded[top : bottom + 2 * reach, left : right + 2 * reach]
        tiles.append(
            Tile(
                row=top,
                col=left,
                core_x=left * block,
                core_y=top * block,
                core_w=(right - left) * block,
                core_h=(bottom - top) * block,
                margins=(reach * block,) * 4,
                scale=grid.resolution.scale,
                blocks=BlockMask.of(ring, block),
            )
        )
    return smallest_first(tiles)


def _cuts(tissue: np.ndarray, limit: int, reach: int) -> list[int]:
    """Edges of the fewest parts of ``len(tissue)`` block lines, none longer than
    ``limit``, placed where a cut costs least: a cut at line p makes both windows
    compute the tissue within ``reach`` lines of it twice over, so its cost is the
    tissue blocks on lines [p - reach, p + reach) (``tissue``: per line).

    Dynamic programming over the cut positions, one sliding minimum per cut.
    """
    length = len(tissue)
    parts = max(1, math.ceil(length / limit))
    if parts == 1:
        return [0, length]
    counts = np.concatenate([[0], np.cumsum(tissue)])
    p = np.arange(length + 1)
    cost = counts[np.minimum(p + reach, length)] - counts[np.maximum(p - reach, 0)]
    best = np.full(length + 1, np.inf)  # least cost of the cuts so far, the last at p
    best[0] = 0.0
    choices = []
    for _ in range(parts - 1):
        # For each p, the best previous cut q in [p - limit, p - 1].
        padded = np.concatenate([np.full(limit, np.inf), best])
        windows = np.lib.stride_tricks.sliding_window_view(padded[:-1], limit)
        previous = windows.argmin(axis=1) + p - limit  # (length + 1,)
        best = windows.min(axis=1) + cost
        choices.append(previous)
    # The last part ends at the end: its start is within ``limit`` of it.
    last = int(np.argmin(np.where(p >= length - limit, best, np.inf)))
    edges = [length, last]
    for previous in reversed(choices[1:]):
        last = int(previous[last])
        edges.append(last)
    edges.append(0)
    return edges[::-1]
