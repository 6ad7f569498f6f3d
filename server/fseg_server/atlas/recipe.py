"""What the device computes for an atlas: each cell's share of every concept's weight."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..extract import Extractor
from ..factorize import Mode, concept_scores
from ..pipeline.recipes import StageClock, features_of


@dataclass(eq=False)
class ShareRecipe:
    """Per cell of each tile's core, the project-mode weights divided by their sum.

    A cell's share of concept c is how much of the cell's non-negative
    reconstruction c carries; the cell's label is the concept with the largest
    share, as segmentation in project mode labels it. Cells with no weight at
    all (features the bank cannot express) get zero shares.

    Attributes:
        concepts: (k, C) the bank's centres for k, on the device.
        bank_id: identifies the bank, so equal jobs share batches.
        margin_cells: context on every side of the cores, feature cells.
        batch_pixels: input pixels (margins included) per forward pass.
    """

    extractor: Extractor
    concepts: torch.Tensor
    bank_id: str
    margin_cells: int
    batch_pixels: int
    clock: StageClock = field(default_factory=StageClock)

    def key(self) -> Hashable:
        return ("shares", id(self.extractor), self.bank_id, len(self.concepts), self.margin_cells)

    def max_batch(self, shape: tuple[int, ...]) -> int:
        """Tiles of (H, W, 3) ``shape`` per batch; at least one."""
        return max(1, self.batch_pixels // max(1, shape[0] * shape[1]))

    def run(self, tiles: torch.Tensor) -> list[np.ndarray]:
        """One (k, rows, cols) float32 array of shares per tile's core."""
        features = features_of(self.extractor, tiles, self.clock)
        m = self.margin_cells
        core = features[..., m : features.shape[-2] - m, m : features.shape[-1] - m]
        weights, _ = concept_scores(core, self.concepts, Mode.PROJECT)
        total = weights.sum(dim=1, keepdim=True)
        shares = torch.where(total > 0, weights / total.clamp_min(1e-30), 0.0)
        return list(shares.cpu().numpy())
