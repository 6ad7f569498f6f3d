"""The device worker: one thread that batches tiles of equal recipes and survives bad batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fseg_server.pipeline.device_worker import DeviceWorker


class Recipe:
    """Returns each tile's mean; ``extra`` results more than tiles when asked to misbehave."""

    def __init__(self, extra: int = 0) -> None:
        self.extra = extra

    def key(self) -> object:
        return ("mean", self.extra)

    def max_batch(self) -> int:
        return 4

    def run(self, batch: torch.Tensor) -> list[float]:
        means = [float(tile.float().mean()) for tile in batch]
        return means + [0.0] * self.extra


def test_a_batch_with_the_wrong_number_of_results_fails_and_the_worker_lives_on():
    tile = np.full((4, 4, 3), 7, np.uint8)
    with DeviceWorker(torch.device("cpu")) as worker:
        bad = worker.submit(Recipe(extra=1), tile)
        with pytest.raises(RuntimeError, match="gave 2 results for 1 tiles"):
            bad.result(timeout=30)
        assert worker.submit(Recipe(), tile).result(timeout=30) == 7.0
