"""What the device computes on a batch of tiles.

:class:`LabelRecipe` turns tiles into concept-class labels for their cores;
:class:`FeatureRecipe` turns them into window-averaged feature vectors for
fitting a concept bank. Both run the extractor under the device's inference
precision and keep the factorization in fp32. A label recipe can start from
cached features instead of pixels (``from_features``): items are then
(C, h, w) fp16 feature grids (with the colour guide stacked under them when
labels are finer than cells), and the extractor is skipped.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..device import channels_last, inference_precision
from ..extract import Extractor
from ..extract.sparse import BlockLayout, core_cells, gather_cells, scatter_cells
from ..factorize import Mode, concept_scores, guide_cells, labels_from_scores
from ..slide.tiles import Tile


@dataclass
class StageClock:
    """Seconds spent in the extractor and in the factorizer, summed over batches."""

    extract: float = 0.0
    factorize: float = 0.0

    def lap(self, device: torch.device, started: float) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - started


def features_of(extractor: Extractor, batch: torch.Tensor, clock: StageClock) -> torch.Tensor:
    """(B, C, h, w) fp32 features extracted from (B, H, W, 3) pixels, timed."""
    started = time.perf_counter()
    features = extract_features(extractor, batch)
    clock.extract += clock.lap(batch.device, started)
    return features


def extract_features(extractor: Extractor, tiles: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) uint8 tiles -> (B, C, H/s, W/s) fp32 features."""
    images = tiles.permute(0, 3, 1, 2)  # channels-last already: (B, H, W, 3) in memory
    if channels_last(extractor, tiles.device):
        images = images.contiguous(memory_format=torch.channels_last)
    with inference_precision(tiles.device, extractor.low_precision_ok):
        return extractor(images).float()


def block_layout(tile: Tile) -> BlockLayout:
    """A block-sparse region's blocks as the extractor takes them (its margins are
    whole blocks, equal on every side)."""
    blocks = tile.blocks
    assert blocks is not None, "a block-sparse region"
    return BlockLayout(blocks.array(), blocks.block, ring=tile.margins[0] // blocks.block)


def extract_core_cells(
    extractor: Extractor, blocks: torch.Tensor, layout: BlockLayout
) -> torch.Tensor:
    """(n + 1, b, b, 3) uint8 packed blocks (``sparse.pack_blocks``) -> (C, N) fp32
    features of the cells of the layout's core blocks (``sparse.core_cells``)."""
    images = blocks.permute(0, 3, 1, 2)
    if channels_last(extractor, blocks.device):
        images = images.contiguous(memory_format=torch.channels_last)
    neighbours = torch.from_numpy(layout.neighbours()).to(blocks.device)
    with inference_precision(blocks.device, extractor.low_precision_ok):
        values = extractor.forward_blocks(images, neighbours)
    return core_cells(values[:-1], layout).float()


@dataclass(eq=False)
class LabelRecipe:
    """Labels of each tile's core, at ``upsample`` label pixels per feature cell.

    Attributes:
        extractor: on the worker's device.
        concepts: (k, C) the bank's centres for k, on the device.
        bank_id: identifies the bank (its digest) so equal jobs share batches.
        mode, components: the F-SEG mode and classify mode's NMF rank.
        margin_cells: context on each side of the tiles' cores (left, top,
            right, bottom), feature cells; the core is what remains of a
            tile's feature grid (the tiles of one batch have one shape).
        upsample: label pixels per feature cell along each axis.
        batch_pixels: input pixels (target px, margins included) per forward pass.
        from_features: items are cached feature grids, not pixels.
        keep_features: also return each tile's features (fp16, CPU) for a cache.
        layout: for a block-sparse region, its blocks; items are then the packed
            blocks (``sparse.pack_blocks``), one region per batch, and the
            features are the core's alone (``margin_cells`` is zero).
    """

    extractor: Extractor
    concepts: torch.Tensor
    bank_id: str
    mode: Mode
    components: int
    margin_cells: tuple[int, int, int, int]
    upsample: int
    batch_pixels: int
    from_features: bool = False
    keep_features: bool = False
    layout: BlockLayout | None = None
    clock: StageClock = field(default_factory=StageClock)

    def key(self) -> Hashable:
        return (
            id(self.layout),  # a block-sparse region is a batch of its own
            self.from_features,
            self.keep_features,
            id(self.extractor),
            self.bank_id,
            len(self.concepts),
            self.mode,
            self.components,
            self.margin_cells,
            self.upsample,
        )

    def max_batch(self, shape: tuple[int, ...]) -> int:
        """Tiles of one item ``shape`` per batch: pixels (H, W, 3) or cached features (C, h, w)."""
        if self.layout is not None:
            return 1
        if self.from_features:
            stride = self.extractor.spec.stride
            return _fitting(self.batch_pixels, shape[1] * shape[2] * stride * stride)
        return _fitting(self.batch_pixels, shape[0] * shape[1])

    @property
    def guided(self) -> bool:
        """Whether labels are finer than cells, so the tiles' colours guide them."""
        return self.upsample > 1

    def cached_item(self, features: np.ndarray, pixels: np.ndarray | None) -> np.ndarray:
        """An item for a ``from_features`` recipe: cached (C, h, w) features,
        with the colour guide of the tile's (S, S, 3) pixels stacked under them
        when labels are guided."""
        if not self.guided:
            return features
        assert pixels is not None, "guided labels need the tile's pixels"
        guide = guide_cells(
            torch.from_numpy(pixels)[None], self.extractor.spec.stride, self.upsample
        )
        return np.concatenate([features, guide[0].to(torch.float16).numpy()])

    def run(self, tiles: torch.Tensor) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """(labels of the core, features or None) per tile."""
        if self.layout is not None:
            return [self._run_blocks(tiles[0], self.layout)]
        features, guide = self._features_and_guide(tiles)
        started = time.perf_counter()
        # Only the core and one cell of context around it are factorized: the
        # context lets upsampling at the core's edge use the real neighbours,
        # and is cut away after it.
        (left, top, right, bottom), u = self.margin_cells, self.upsample
        rows = features.shape[-2] - top - bottom  # the core
        cols = features.shape[-1] - left - right
        aprons = [min(1, m) for m in self.margin_cells]
        crop = (
            ...,
            slice(top - aprons[1], top + rows + aprons[3]),
            slice(left - aprons[0], left + cols + aprons[2]),
        )
        scores, index = concept_scores(
            features[crop], self.concepts, self.mode, components=self.components
        )
        labels = labels_from_scores(scores, index, u, None if guide is None else guide[crop])
        labels = labels[
            :, aprons[1] * u : (rows + aprons[1]) * u, aprons[0] * u : (cols + aprons[0]) * u
        ]
        kept = list(features.half().cpu().numpy()) if self.keep_features else [None] * len(labels)
        result = list(zip(labels.cpu().numpy(), kept, strict=True))
        self.clock.factorize += self.clock.lap(tiles.device, started)
        return result

    def _run_blocks(
        self, item: torch.Tensor, layout: BlockLayout
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """A block-sparse region: only the cells of its core's blocks are factorized (as
        one 1 x N image), and their labels laid out over the core; elsewhere 0, which
        the tissue mask clears. ``item`` is packed pixels, or the cached core grid."""
        s = layout.block // self.extractor.spec.stride
        if self.from_features:  # the cached (C, h, w) core grid
            cells = gather_cells(item.float(), layout, s)
        else:
            started = time.perf_counter()
            cells = extract_core_cells(self.extractor, item, layout)
            self.clock.extract += self.clock.lap(item.device, started)
        started = time.perf_counter()
        scores, best = concept_scores(
            cells[None, :, None, :], self.concepts, self.mode, components=self.components
        )
        labels = labels_from_scores(scores, best, 1, None).reshape(1, -1)  # (1, N) uint8
        kept = None
        if self.keep_features:
            kept = scatter_cells(cells.half(), layout, s).cpu().numpy()
        self.clock.factorize += self.clock.lap(item.device, started)
        return scatter_cells(labels, layout, s)[0].cpu().numpy(), kept

    def _features_and_guide(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, C, h, w) features and, for guided labels, (B, 3u², h, w) colours."""
        if self.from_features:
            channels = self.extractor.spec.feature_dim
            guide = batch[:, channels:].float() if self.guided else None
            return batch[:, :channels].float(), guide
        features = features_of(self.extractor, batch, self.clock)
        if not self.guided:
            return features, None
        return features, guide_cells(batch, self.extractor.spec.stride, self.upsample)


@dataclass(eq=False)
class FeatureRecipe:
    """Feature vectors of each tile's core, averaged over windows of cells.

    The F-SEG authors fitted their banks on spatially averaged tile
    features; ``window_cells`` is the averaging window's edge in cells.
    """

    extractor: Extractor
    margin_cells: int
    window_cells: int
    batch_pixels: int
    clock: StageClock = field(default_factory=StageClock)

    def key(self) -> Hashable:
        return ("features", id(self.extractor), self.margin_cells, self.window_cells)

    def max_batch(self, shape: tuple[int, ...]) -> int:
        """Tiles of (H, W, 3) ``shape`` per batch."""
        return _fitting(self.batch_pixels, shape[0] * shape[1])

    def run(self, tiles: torch.Tensor) -> list[np.ndarray]:
        """One (rows, cols, C) array of window vectors per tile."""
        features = features_of(self.extractor, tiles, self.clock)
        m = self.margin_cells
        core = features[..., m : features.shape[-2] - m, m : features.shape[-1] - m]
        window = min(self.window_cells, *core.shape[-2:])
        pooled = F.avg_pool2d(core, window, ceil_mode=True)  # (B, C, r, c)
        return list(pooled.permute(0, 2, 3, 1).cpu().numpy())  # (r, c, C) per tile


def _fitting(budget: int, item_pixels: int) -> int:
    """How many items of ``item_pixels`` fit a ``budget`` of pixels; at least one."""
    return max(1, budget // max(1, item_pixels))
