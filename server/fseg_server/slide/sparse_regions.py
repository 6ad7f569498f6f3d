"""Planning block-sparse regions: windows of the slide whose tissue blocks alone are computed.

A network that runs on packed blocks (``extract/sparse.py``) pays for the
blocks that hold tissue and for nothing else, so there is nothing to gain by
cutting the tissue into tight rectangles: the dense planner's cuts
(``regions.py``) exist to leave glass out, and each adds context margins.
Here the slide's block grid is divided into equal windows of at most
``max_blocks`` blocks a side (bounded memory per forward pass); each window,
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
    rows, cols = occupied.shape
    row_edges = _edges(rows, limit)
    col_edges = _edges(cols, limit)
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


def _edges(length: int, limit: int) -> list[int]:
    """Edges of equal parts of ``length`` blocks, none longer than ``limit``: equal
    parts rather than full ones and a sliver, for steadier forward passes."""
    parts = max(1, math.ceil(length / limit))
    return [int(v) for v in np.linspace(0, length, parts + 1).round()]
