"""Planning tissue regions: rectangles that follow the tissue, each read once with its context.

A fixed grid of tiles pays for glass twice: every tile that touches tissue is
computed whole, and every tile carries its own context margin. Regions pay
for neither. The slide is divided into *blocks* (a few feature cells, about
32 µm), the blocks that hold tissue are covered by disjoint rectangles of
blocks, and each rectangle is read once with ``margin`` target pixels of
context around it. A convolutional network computes a large rectangle as
cheaply per pixel as many small tiles, so context is paid once per region
instead of once per tile.

The rectangles come from guillotine cuts (Gilmore and Gomory's two-stage
cutting patterns): a rectangle is cut in two along the row or column that
most lowers the cost of the two parts, each part shrunk to the tissue it
holds, and a cut is kept only where the parts together cost less than the
whole. The cost of a rectangle is the target pixels that go through the
model, its core and margins, plus a fixed charge per region (a forward
pass has a set-up cost). Rectangles no larger than ``max_blocks`` blocks
on a side keep memory and (for vision transformers) attention bounded.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import Cancelled
from .tiles import Tile, TileGrid
from .tissue import TissueMask

#: Block edge in µm: two tissue-mask pixels (8 µm each), fine enough to follow a
#: tissue edge, coarse enough to plan an 8,000-px slide in about a second.
BLOCK_UM = 16.0
#: Fixed cost of one region in target pixels (a 128 x 128 square): a forward pass
#: has a set-up cost, and a slide split into thousands of slivers would feel it.
REGION_CHARGE_PX = 128 * 128
#: A region this full of tissue blocks is not cut further: cuts would add margins only.
SOLID = 0.95
#: A cut is explored only when its two parts, each as one box, cost less than this
#: times the whole box: a cut that looks much worse seldom leads to a cheaper cover
#: after further cuts. On the shared slides, exploring every cut found the same
#: covers (within 1%) in 3 to 10 times the planning time.
EXPLORE = 1.1
#: Boxes explored between looks at whether the job was cancelled (a look may ask gRPC).
STOP_CHECK_BOXES = 64


@dataclass(frozen=True)
class RegionGeometry:
    """How regions are laid out, in target pixels of the working resolution.

    Attributes:
        block: edge of a block, a multiple of the extractor's stride.
        max_blocks: most blocks along a region's side.
        margin: context read on the sides of a region that face more tissue.
        glass_margin: context read on the sides that face only glass, where
            the labels of the tissue's edge need less: glass is featureless.
        stride: the extractor's stride; region cores are multiples of it.
    """

    block: int
    max_blocks: int
    margin: int
    glass_margin: int
    stride: int


def block_size(stride: int, working_mpp: float | None, largest: int) -> int:
    """Block edge in target px: about BLOCK_UM, a multiple of ``stride``, at most ``largest``."""
    wanted = BLOCK_UM / working_mpp if working_mpp else 2 * BLOCK_UM
    cells = max(1, round(wanted / stride))
    return min(cells * stride, max(stride, largest // stride * stride))


def tissue_blocks(tissue: TissueMask, grid: TileGrid, block: int) -> np.ndarray:
    """(rows, cols) bool over blocks of ``block`` target pixels: True where any tissue lies.

    A block is level-0 [c * block * d, (c + 1) * block * d) along x with d the
    target downsample; it holds tissue when any mask pixel it overlaps does.
    """
    d = grid.resolution.target_downsample
    rows, cols = math.ceil(grid.height / block), math.ceil(grid.width / block)
    mask = tissue.mask
    # A summed-area table answers "any tissue in this rectangle" for every block at once.
    table = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.int64)
    table[1:, 1:] = mask.astype(np.int64).cumsum(0).cumsum(1)
    per_mask_px = block * d / tissue.downsample  # mask pixels per block
    r0 = np.clip(np.floor(np.arange(rows) * per_mask_px), 0, mask.shape[0]).astype(np.int64)
    r1 = np.clip(np.ceil((np.arange(rows) + 1) * per_mask_px), 0, mask.shape[0]).astype(np.int64)
    c0 = np.clip(np.floor(np.arange(cols) * per_mask_px), 0, mask.shape[1]).astype(np.int64)
    c1 = np.clip(np.ceil((np.arange(cols) + 1) * per_mask_px), 0, mask.shape[1]).astype(np.int64)
    count = (
        table[r1][:, c1] - table[r0][:, c1] - table[r1][:, c0] + table[r0][:, c0]
    )  # (rows, cols)
    return count > 0


def plan_regions(
    occupied: np.ndarray,
    grid: TileGrid,
    geometry: RegionGeometry,
    should_stop: Callable[[], bool] = lambda: False,
) -> list[Tile]:
    """Disjoint rectangles of blocks covering every occupied block: the smallest, then
    the others row-major.

    Cores are clipped to the slide (rounded up to the stride), so a region at
    the right or bottom edge reads no more padding than a stride's worth.

    Raises:
        Cancelled: ``should_stop()`` turned true (a large slide takes seconds).
    """
    cutter = _Cutter(occupied, grid, geometry, should_stop)
    whole = shrink_to_tissue(occupied, 0, occupied.shape[0], 0, occupied.shape[1])
    return smallest_first(
        [cutter.tile(box) for box in sorted(cutter.cover(whole) if whole else [])]
    )


def smallest_first(tiles: list[Tile]) -> list[Tile]:
    """``tiles`` with the one of fewest model pixels moved to the front: it is read
    soonest, so the device starts soonest."""
    if tiles:
        smallest = min(range(len(tiles)), key=lambda i: tiles[i].input_pixels)
        tiles.insert(0, tiles.pop(smallest))
    return tiles


Box = tuple[int, int, int, int]  # block rows [r0, r1) and columns [c0, c1)


class _Cutter:
    """Guillotine covers of the occupied blocks, with the cost of every candidate at once."""

    def __init__(
        self,
        occupied: np.ndarray,
        grid: TileGrid,
        geometry: RegionGeometry,
        should_stop: Callable[[], bool],
    ) -> None:
        self.occupied = occupied
        self.should_stop, self._boxes_seen = should_stop, 0
        self.grid, self.geometry = grid, geometry
        stride, block = geometry.stride, geometry.block
        self.width = -(-grid.width // stride) * stride  # the slide, in whole cells
        self.height = -(-grid.height // stride) * stride
        # Blocks of glass a side's context reaches into.
        self.reach = max(1, -(-geometry.margin // block))
        # A summed-area table, padded by the reach on every side so that strips
        # beyond the slide's edge need no clipping (they hold no tissue).
        padded = np.pad(occupied, self.reach).astype(np.int64)
        self.table = np.zeros((padded.shape[0] + 1, padded.shape[1] + 1), np.int64)
        self.table[1:, 1:] = padded.cumsum(0).cumsum(1)

    def tile(self, box: Box) -> Tile:
        r0, r1, c0, c1 = (int(v) for v in box)
        width, height = (int(v) for v in self._core(r0, r1, c0, c1))
        margins = tuple(int(m) for m in self._margins(*_column(box))[:, 0])
        return Tile(
            row=r0,
            col=c0,
            core_x=c0 * self.geometry.block,
            core_y=r0 * self.geometry.block,
            core_w=width,
            core_h=height,
            margins=margins,
            scale=self.grid.resolution.scale,
        )

    def cover(self, box: Box) -> list[Box]:
        """A cheap guillotine cover of ``box`` (shrunk to its tissue already)."""
        return self._cover(box)[1]

    def _cover(self, box: Box) -> tuple[float, list[Box]]:
        """(cost, boxes) of the cover found by the greedy best cut. Trying the 2 or 3
        best cuts at every box found covers under 2% cheaper on the shared slides,
        for 10 to 50 times the planning time."""
        self._boxes_seen += 1
        if self._boxes_seen % STOP_CHECK_BOXES == 0 and self.should_stop():
            raise Cancelled("the job was cancelled while its regions were planned")
        r0, r1, c0, c1 = box
        limit = self.geometry.max_blocks
        if r1 - r0 > limit or c1 - c0 > limit:
            parts = self._split_evenly(box)
            return sum(self.cost(p) for p in parts), parts
        whole = self.cost(box)
        # A box nearly full of tissue is kept: cutting it only adds context margins.
        if self._tissue(*box) >= SOLID * (r1 - r0) * (c1 - c0):
            return whole, [box]
        cut = self._best_cut(box, whole)
        if cut is None:
            return whole, [box]
        (cost_a, parts_a), (cost_b, parts_b) = self._cover(cut[0]), self._cover(cut[1])
        if cost_a + cost_b < whole:
            return cost_a + cost_b, parts_a + parts_b
        return whole, [box]

    def cost(self, box: Box) -> float:
        """Model pixels of one region, cores and margins, plus the charge per region."""
        return float(self._costs(*_column(box))[0])

    def _core(self, r0, r1, c0, c1):
        """(width, height) of boxes' cores in target pixels, clipped to the slide
        (ints or arrays of n boxes)."""
        b = self.geometry.block
        return np.minimum(c1 * b, self.width) - c0 * b, np.minimum(r1 * b, self.height) - r0 * b

    def _strips(self, r0, r1, c0, c1) -> tuple:
        """The block rectangles beyond each side (left, top, right, bottom) that its
        context reaches, round the corners: a core's corner cells see the tissue that
        lies diagonally beyond it."""
        d = self.reach
        return (
            (r0 - d, r1 + d, c0 - d, c0),
            (r0 - d, r0, c0 - d, c1 + d),
            (r0 - d, r1 + d, c1, c1 + d),
            (r1, r1 + d, c0 - d, c1 + d),
        )

    def _costs(self, r0: np.ndarray, r1: np.ndarray, c0: np.ndarray, c1: np.ndarray) -> np.ndarray:
        """Model pixels of n boxes (see :meth:`cost`)."""
        width, height = self._core(r0, r1, c0, c1)
        left, top, right, bottom = self._margins(r0, r1, c0, c1)
        return (width + left + right) * (height + top + bottom) + REGION_CHARGE_PX

    def _margins(self, r0, r1, c0, c1) -> np.ndarray:
        """(4, n) context per side of n boxes at once: the full margin where more tissue
        lies within its reach, the glass margin where only glass does."""
        full, glass = self.geometry.margin, min(self.geometry.margin, self.geometry.glass_margin)
        strips = self._strips(r0, r1, c0, c1)
        return np.stack([np.where(self._tissue(*s) > 0, full, glass) for s in strips])

    def _tissue(self, r0, r1, c0, c1):
        """Occupied blocks in [r0, r1) x [c0, c1), at most ``reach`` beyond the grid."""
        t, p = self.table, self.reach
        r0, r1, c0, c1 = r0 + p, r1 + p, c0 + p, c1 + p
        return t[r1, c1] - t[r0, c1] - t[r1, c0] + t[r0, c0]

    def _best_cut(self, box: Box, whole: float) -> tuple[Box, Box] | None:
        """The cut whose two parts, each shrunk to its tissue, cost least together, if
        they cost less than EXPLORE times the ``whole`` box; else None."""
        best, best_total = None, EXPLORE * whole
        for axis in (0, 1):
            firsts, seconds = self._cuts(box, axis)
            if not len(firsts):
                continue
            total = self._costs(*firsts.T) + self._costs(*seconds.T)
            i = int(np.argmin(total))
            if total[i] < best_total:
                best_total = float(total[i])
                best = (tuple(int(v) for v in firsts[i]), tuple(int(v) for v in seconds[i]))
        return best

    def _cuts(self, box: Box, axis: int) -> tuple[np.ndarray, np.ndarray]:
        """(n, 4) boxes before and after every cut across ``axis`` (0: between rows)
        that leaves tissue on both sides, each shrunk to its tissue."""
        r0, r1, c0, c1 = box
        sub = self.occupied[r0:r1, c0:c1]
        if axis == 1:
            sub = sub.T
        length, _across = sub.shape
        if length < 2:
            return np.empty((0, 4), int), np.empty((0, 4), int)
        lines = sub.any(axis=1)
        index = np.arange(length)
        # Last tissue line before each cut, first one after it.
        last_before = np.maximum.accumulate(np.where(lines, index, -1))[:-1]
        first_after = np.minimum.accumulate(np.where(lines, index, length)[::-1])[::-1][1:]
        keep = (last_before >= 0) & (first_after < length)
        # The tissue's extent across, before and after each cut.
        before = np.logical_or.accumulate(sub, axis=0)[:-1]
        after = np.logical_or.accumulate(sub[::-1], axis=0)[::-1][1:]
        first_line = int(np.argmax(lines))
        last_line = length - 1 - int(np.argmax(lines[::-1]))
        starts_b, ends_b = _extent(before)
        starts_a, ends_a = _extent(after)
        n = int(keep.sum())
        firsts = np.stack(
            [np.full(n, first_line), last_before[keep] + 1, starts_b[keep], ends_b[keep]], 1
        )
        seconds = np.stack(
            [first_after[keep], np.full(n, last_line + 1), starts_a[keep], ends_a[keep]], 1
        )
        return _place(firsts, box, axis), _place(seconds, box, axis)

    def _split_evenly(self, box: Box) -> list[Box]:
        """A box larger than allowed: equal parts within the limit, each covered on its own."""
        r0, r1, c0, c1 = box
        limit = self.geometry.max_blocks
        rows = math.ceil((r1 - r0) / limit)
        cols = math.ceil((c1 - c0) / limit)
        # Equal parts rather than full ones and a sliver: the same cost, steadier batches.
        row_edges = [int(v) for v in np.linspace(r0, r1, rows + 1).round()]
        col_edges = [int(v) for v in np.linspace(c0, c1, cols + 1).round()]
        parts = []
        for a, b in itertools.pairwise(row_edges):
            for c, d in itertools.pairwise(col_edges):
                part = shrink_to_tissue(self.occupied, a, b, c, d)
                if part:
                    parts.extend(self._cover(part)[1])
        return parts


def _column(box: Box) -> tuple[np.ndarray, ...]:
    """One box as the (r0, r1, c0, c1) arrays of n = 1 boxes that the vector costs take."""
    return tuple(np.array([v]) for v in box)


def _extent(lines: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of a boolean array: first True column and one past the last (0, 0 if none)."""
    width = lines.shape[1]
    start = np.argmax(lines, axis=1)
    end = width - np.argmax(lines[:, ::-1], axis=1)
    return start, end


def _place(spans: np.ndarray, box: Box, axis: int) -> np.ndarray:
    """(n, 4) spans (lines, across) found in ``box``'s (maybe transposed) view, as boxes."""
    r0, _, c0, _ = box
    lines0, lines1, across0, across1 = spans.T
    if axis == 0:
        return np.stack([r0 + lines0, r0 + lines1, c0 + across0, c0 + across1], 1)
    return np.stack([r0 + across0, r0 + across1, c0 + lines0, c0 + lines1], 1)


def shrink_to_tissue(occupied: np.ndarray, r0: int, r1: int, c0: int, c1: int) -> Box | None:
    """The box shrunk to the occupied blocks inside it; None when it holds none."""
    sub = occupied[r0:r1, c0:c1]
    rows, cols = np.flatnonzero(sub.any(axis=1)), np.flatnonzero(sub.any(axis=0))
    if not len(rows):
        return None
    return (r0 + int(rows[0]), r0 + int(rows[-1]) + 1, c0 + int(cols[0]), c0 + int(cols[-1]) + 1)
