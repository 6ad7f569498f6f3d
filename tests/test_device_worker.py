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

    def max_batch(self, shape: tuple[int, ...]) -> int:
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


class Recorder(Recipe):
    """Records the shape of every batch it runs."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[tuple[int, ...]] = []

    def run(self, batch: torch.Tensor) -> list[float]:
        self.batches.append(tuple(batch.shape))
        return super().run(batch)


def test_tiles_of_different_shapes_never_share_a_batch():
    """Tissue regions come in many shapes; a batch stacks tiles of one shape only."""
    recipe = Recorder()
    shapes = [(8, 8, 3), (8, 16, 3)] * 6
    with DeviceWorker(torch.device("cpu")) as worker:
        futures = [worker.submit(recipe, np.full(shape, 1, np.uint8)) for shape in shapes]
        assert [f.result(timeout=30) for f in futures] == [1.0] * len(shapes)
    assert {batch[1:] for batch in recipe.batches} == {(8, 8, 3), (8, 16, 3)}
    assert sum(batch[0] for batch in recipe.batches) == len(shapes)
    assert max(batch[0] for batch in recipe.batches) <= 4


class Unbatchable(Recipe):
    def max_batch(self, shape: tuple[int, ...]) -> int:
        raise ValueError("no batch size for this shape")


def test_a_recipe_that_cannot_size_its_batch_fails_its_tile_and_the_worker_lives_on():
    tile = np.full((4, 4, 3), 3, np.uint8)
    with DeviceWorker(torch.device("cpu")) as worker:
        with pytest.raises(ValueError, match="no batch size"):
            worker.submit(Unbatchable(), tile).result(timeout=30)
        assert worker.submit(Recipe(), tile).result(timeout=30) == 3.0


def test_the_device_time_is_counted():
    """busy_s is what the feed benchmark divides by the stream's wall time."""
    with DeviceWorker(torch.device("cpu")) as worker:
        assert worker.busy_s == 0.0
        worker.submit(Recipe(), np.zeros((64, 64, 3), np.uint8)).result(timeout=30)
        assert worker.busy_s > 0.0


def test_a_small_batch_waits_briefly_for_company_when_the_device_would_idle():
    """With a fill wait, a tile that arrives just after the first joins its batch."""
    recipe = Recorder()
    tile = np.full((8, 8, 3), 2, np.uint8)
    with DeviceWorker(torch.device("cpu"), fill_wait_s=1.0) as worker:
        first = worker.submit(recipe, tile)
        second = worker.submit(recipe, tile)
        assert first.result(timeout=30) == second.result(timeout=30) == 2.0
    assert [batch[0] for batch in recipe.batches] == [2]
