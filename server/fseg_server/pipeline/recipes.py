"""What the device computes on a batch of tiles.

:class:`LabelRecipe` turns tiles into concept-class labels for their cores;
:class:`FeatureRecipe` turns them into window-averaged feature vectors for
fitting a concept bank. Both run the extractor under the device's inference
precision and keep the factorization in fp32. A label recipe can start from
cached features instead of pixels (``from_features``): items are then
(C, h, w) fp16 feature grids, and the extractor is skipped.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..device import inference_precision
from ..extract import Extractor
from ..factorize import Mode, concept_scores, labels_from_scores


@dataclass
class StageClock:
    """Seconds spent in the extractor and in the factorizer, summed over batches."""

    extract: float = 0.0
    factorize: float = 0.0

    def lap(self, device: torch.device, started: float) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - started


def features_of(
    extractor: Extractor, batch: torch.Tensor, from_features: bool, clock: StageClock
) -> torch.Tensor:
    """(B, C, h, w) fp32 features: extracted from (B, H, W, 3) pixels, or given."""
    if from_features:
        return batch.float()
    started = time.perf_counter()
    features = extract_features(extractor, batch)
    clock.extract += clock.lap(batch.device, started)
    return features


def extract_features(extractor: Extractor, tiles: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) uint8 tiles -> (B, C, H/s, W/s) fp32 features."""
    images = tiles.permute(0, 3, 1, 2)
    if tiles.device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    with inference_precision(tiles.device):
        return extractor(images).float()


@dataclass(eq=False)
class LabelRecipe:
    """Labels of each tile's core, at ``upsample`` label pixels per feature cell.

    Attributes:
        extractor: on the worker's device.
        concepts: (k, C) the bank's centres for k, on the device.
        bank_id: identifies the bank (its digest) so equal jobs share batches.
        mode, components: the F-SEG mode and classify mode's NMF rank.
        margin_cells, core_cells: tile geometry in feature cells.
        upsample: label pixels per feature cell along each axis.
        batch_size: tiles per forward pass.
        from_features: items are cached feature grids, not pixels.
        keep_features: also return each tile's features (fp16, CPU) for a cache.
    """

    extractor: Extractor
    concepts: torch.Tensor
    bank_id: str
    mode: Mode
    components: int
    margin_cells: int
    core_cells: int
    upsample: int
    batch_size: int
    from_features: bool = False
    keep_features: bool = False
    clock: StageClock = field(default_factory=StageClock)

    def key(self) -> Hashable:
        return (
            self.from_features,
            self.keep_features,
            id(self.extractor),
            self.bank_id,
            len(self.concepts),
            self.mode,
            self.components,
            self.margin_cells,
            self.core_cells,
            self.upsample,
        )

    def max_batch(self) -> int:
        return self.batch_size

    def run(self, tiles: torch.Tensor) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """(labels of the core, features or None) per tile."""
        features = features_of(self.extractor, tiles, self.from_features, self.clock)
        started = time.perf_counter()
        # Only the core and one cell of context around it are factorized: the
        # context lets bilinear upsampling at the core's edge use the real
        # neighbours, and is cut away after it.
        m, n, u = self.margin_cells, self.core_cells, self.upsample
        apron = min(1, m)
        core = features[..., m - apron : m + n + apron, m - apron : m + n + apron]
        scores, index = concept_scores(core, self.concepts, self.mode, components=self.components)
        size = ((n + 2 * apron) * u, (n + 2 * apron) * u)
        labels = labels_from_scores(scores, index, size)
        labels = labels[:, apron * u : (n + apron) * u, apron * u : (n + apron) * u]
        kept = list(features.half().cpu().numpy()) if self.keep_features else [None] * len(labels)
        result = list(zip(labels.cpu().numpy(), kept, strict=True))
        self.clock.factorize += self.clock.lap(tiles.device, started)
        return result


@dataclass(eq=False)
class FeatureRecipe:
    """Feature vectors of each tile's core, averaged over windows of cells.

    The F-SEG authors fitted their banks on spatially averaged tile
    features; ``window_cells`` is the averaging window's edge in cells.
    """

    extractor: Extractor
    margin_cells: int
    core_cells: int
    window_cells: int
    batch_size: int
    clock: StageClock = field(default_factory=StageClock)

    def key(self) -> Hashable:
        return (
            "features",
            id(self.extractor),
            self.margin_cells,
            self.core_cells,
            self.window_cells,
        )

    def max_batch(self) -> int:
        return self.batch_size

    def run(self, tiles: torch.Tensor) -> list[np.ndarray]:
        """One (rows, cols, C) array of window vectors per tile."""
        features = features_of(self.extractor, tiles, False, self.clock)
        m, n = self.margin_cells, self.core_cells
        core = features[..., m : m + n, m : m + n]
        window = min(self.window_cells, n)
        pooled = F.avg_pool2d(core, window, ceil_mode=True)  # (B, C, r, c)
        return list(pooled.permute(0, 2, 3, 1).cpu().numpy())  # (r, c, C) per tile
