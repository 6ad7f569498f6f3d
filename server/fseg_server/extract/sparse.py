"""Running a convolutional network on the blocks that hold tissue, and on nothing else.

A tissue region is a rectangle of *blocks* (squares of target pixels, a
multiple of the network's stride, about 16 µm), and only some of them hold
tissue. Computing the whole rectangle spends the model on glass. Here the
occupied blocks go through the network packed as a batch of small images,
(n, C, s, s), and every convolution and pooling is given the *halo* its
window needs from the neighbouring blocks, at every layer. An occupied block
whose neighbours are all in the pack therefore gets exactly the features the
network computes on the whole rectangle, and no output cell is computed
twice: model pixels follow the tissue at the block's grain.

A neighbour that is not in the pack (glass) is stood in for by one extra
block of uniform glass, computed alongside the others with itself as every
neighbour: a uniform image has uniform activations, so at every layer that
block carries what the network computes in the midst of glass.

Which networks can: see ``block_tensor.py``; :func:`runs_block_sparse`
tells once, on a probe, whether an extractor can run this way at all.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .base import PROBE_CELLS, probe_image
from .block_tensor import NEIGHBOUR_OFFSETS, run_block_sparse

#: Largest difference between the block-sparse and the dense features of the
#: probe, relative to the largest feature (fp32: the same sums in another order).
PROBE_TOLERANCE = 1e-4


@dataclass(frozen=True, eq=False)
class BlockLayout:
    """Which blocks of a rectangle go through the network.

    Attributes:
        occupied: (rows, cols) bool over the rectangle's blocks.
        block: block edge in input (target) pixels.
        ring: blocks of context on every side of the core, whose features
            serve the core's and are not kept.
    """

    occupied: np.ndarray
    block: int
    ring: int = 0
    #: :func:`core_cell_index` by cells per block edge.
    core_indices: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    @functools.cached_property
    def positions(self) -> np.ndarray:
        """(n, 2) row and column of each packed block, row-major."""
        return np.argwhere(self.occupied)

    @property
    def count(self) -> int:
        """Occupied blocks n."""
        return len(self.positions)

    @functools.cached_property
    def in_core(self) -> np.ndarray:
        """(n,) bool: which packed blocks lie in the core rather than the ring."""
        rows, cols = (size - 2 * self.ring for size in self.occupied.shape)
        where = self.positions - self.ring
        return ((where >= 0) & (where < (rows, cols))).all(axis=1)

    def neighbours(self) -> np.ndarray:
        """(n + 1, 8) int64: the pack index of each block's neighbours; a neighbour not
        in the pack is the glass block, index n, whose own neighbours are itself."""
        rows, cols = self.occupied.shape
        index = np.full((rows + 2, cols + 2), self.count, np.int64)
        index[1:-1, 1:-1][self.occupied] = np.arange(self.count)
        r, c = (self.positions + 1).T
        table = np.full((self.count + 1, 8), self.count, np.int64)
        for j, (dr, dc) in enumerate(NEIGHBOUR_OFFSETS):
            table[:-1, j] = index[r + dr, c + dc]
        return table


def pack_blocks(pixels: np.ndarray, layout: BlockLayout) -> np.ndarray:
    """The occupied blocks of a rectangle's pixels, and a block of its glass.

    Args:
        pixels: (H, W, 3) uint8, the rectangle in target pixels; H and W may
            fall short of whole blocks at the slide's edge (edges replicated).

    Returns:
        (n + 1, block, block, 3) uint8: the occupied blocks row-major, then a
        uniform block of the median colour of the rectangle's unoccupied
        blocks (white when every block is occupied).
    """
    b = layout.block
    rows, cols = layout.occupied.shape
    height, width = pixels.shape[:2]
    if (height, width) != (rows * b, cols * b):
        pad = ((0, rows * b - height), (0, cols * b - width), (0, 0))
        pixels = np.pad(pixels[: rows * b, : cols * b], pad, mode="edge")
    grid = pixels.reshape(rows, b, cols, b, 3).swapaxes(1, 2)  # (rows, cols, b, b, 3)
    packed = np.empty((layout.count + 1, b, b, 3), np.uint8)
    packed[:-1] = grid[layout.occupied]
    packed[-1] = _glass_colour(grid, ~layout.occupied)
    return packed


def _glass_colour(grid: np.ndarray, glass: np.ndarray) -> np.ndarray:
    """Median RGB of the glass blocks (every 4th pixel: a median needs no more)."""
    if not glass.any():
        return np.full(3, 255, np.uint8)
    sample = grid[glass][:, ::4, ::4].reshape(-1, 3)
    return np.median(sample, axis=0).astype(np.uint8)


def core_cells(values: torch.Tensor, layout: BlockLayout) -> torch.Tensor:
    """(n, C, s, s) values of the packed blocks -> (C, N): the cells of the blocks in the
    core (not the ring), block by block, row-major within a block; the order of
    :func:`core_cell_index`."""
    inside = torch.from_numpy(np.flatnonzero(layout.in_core)).to(values.device)
    kept = values.index_select(0, inside)  # (m, C, s, s)
    return kept.permute(1, 0, 2, 3).reshape(values.shape[1], -1)


def core_cell_index(layout: BlockLayout, s: int) -> np.ndarray:
    """(N,) positions in the core's (rows * s) x (cols * s) grid of the cells that
    :func:`core_cells` gives, row-major; made once per layout (a region's labels and
    its cached features are laid out by the same index)."""
    if s not in layout.core_indices:
        layout.core_indices[s] = _core_cell_index(layout, s)
    return layout.core_indices[s]


def _core_cell_index(layout: BlockLayout, s: int) -> np.ndarray:
    cols = layout.occupied.shape[1] - 2 * layout.ring
    where = layout.positions[layout.in_core] - layout.ring  # (m, 2) blocks in the core
    y, x = np.divmod(np.arange(s * s), s)
    rows = where[:, :1] * s + y[None]  # (m, s²)
    columns = where[:, 1:] * s + x[None]
    return (rows * (cols * s) + columns).reshape(-1)


def scatter_cells(cells: torch.Tensor, layout: BlockLayout, s: int) -> torch.Tensor:
    """(C, N) values of the core cells (features, or labels) -> (C, rows * s, cols * s)
    grid of the core, zero elsewhere."""
    rows, cols = core_size(layout, s)
    grid = cells.new_zeros(cells.shape[0], rows * cols)
    index = torch.from_numpy(core_cell_index(layout, s)).to(cells.device)
    grid[:, index] = cells
    return grid.view(cells.shape[0], rows, cols)


def gather_cells(grid: torch.Tensor, layout: BlockLayout, s: int) -> torch.Tensor:
    """(C, rows * s, cols * s) grid of the core -> (C, N) values of its core cells, in
    :func:`core_cells`' order: the inverse of :func:`scatter_cells`."""
    index = torch.from_numpy(core_cell_index(layout, s)).to(grid.device)
    return grid.flatten(1).index_select(1, index)


def core_size(layout: BlockLayout, s: int) -> tuple[int, int]:
    """(rows, cols) of the core's grid of cells, s cells a block."""
    rows, cols = (size - 2 * layout.ring for size in layout.occupied.shape)
    return rows * s, cols * s


def runs_block_sparse(features: Callable[[torch.Tensor], torch.Tensor], stride: int) -> bool:
    """Whether ``features`` (fp32, on the CPU) gives the dense features when run on
    blocks of one stride: a square of PROBE_CELLS of them a side, all occupied,
    with zero fill, must match the dense network on the same image (the image
    that batch-norm folding probed with, so its convolutions are set up already)."""
    cells = PROBE_CELLS
    probe = probe_image(stride)
    layout = BlockLayout(np.ones((cells, cells), bool), stride)
    blocks = probe.reshape(3, cells, stride, cells, stride).permute(1, 3, 0, 2, 4)
    blocks = blocks.reshape(cells * cells, 3, stride, stride)
    blocks = torch.cat([blocks, torch.zeros(1, 3, stride, stride)])
    table = torch.from_numpy(layout.neighbours())
    with torch.inference_mode():
        expected = features(probe)[0]
        try:
            packed = run_block_sparse(features, blocks, table, fill=0.0)
        except Exception:
            return False
    got = scatter_cells(core_cells(packed[:-1], layout), layout, packed.shape[-1])
    if got.shape != expected.shape:
        return False
    scale = float(expected.abs().max()) or 1.0
    return float((got - expected).abs().max()) <= PROBE_TOLERANCE * scale
