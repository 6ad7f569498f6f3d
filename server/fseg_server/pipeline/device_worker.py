"""One worker owns the device and batches tiles across every job (dynamic batching).

Jobs submit single tiles with a *recipe* (what to compute on them: labels for
a given extractor, bank, k and mode; or pooled features for fitting a bank).
The worker takes the oldest waiting tile and as many others with an equal
recipe as fit in one batch, runs the recipe once on the stacked batch, and
resolves each tile's future. Two slides segmented at once therefore share
forward passes instead of competing for the device, and a cancelled job's
waiting tiles are dropped without being computed.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch


class Recipe(Protocol):
    """What the device computes for a batch of tiles."""

    def key(self) -> Hashable:
        """Tiles whose recipes have equal keys can share one batch."""

    def max_batch(self) -> int:
        """The largest batch this recipe should run."""

    def run(self, batch: torch.Tensor) -> Sequence[object]:
        """(B, H, W, 3) uint8 on the device -> one result per tile."""


@dataclass
class _Item:
    recipe: Recipe
    tile: np.ndarray
    future: Future = field(default_factory=Future)


class DeviceWorker:
    """A thread that runs recipes on the device, batching equal recipes together."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._inbox: queue.Queue[_Item | None] = queue.Queue()
        self._waiting: deque[_Item] = deque()
        self._thread = threading.Thread(target=self._loop, name="fseg-device", daemon=True)
        self._thread.start()

    def submit(self, recipe: Recipe, tile: np.ndarray) -> Future:
        """Queue one (H, W, 3) uint8 tile; the future gives the recipe's result for it."""
        item = _Item(recipe, tile)
        self._inbox.put(item)
        return item.future

    def close(self) -> None:
        """Stop after the tiles already queued."""
        if self._thread.is_alive():
            self._inbox.put(None)
            self._thread.join()

    def __enter__(self) -> DeviceWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _loop(self) -> None:
        # Denormal floats slow CPU arithmetic by orders of magnitude; nothing
        # here needs values below 1e-38.
        torch.set_flush_denormal(True)
        while True:
            if not self._waiting:
                item = self._inbox.get()
                if item is None:
                    return
                self._waiting.append(item)
            self._drain_inbox()
            batch = self._next_batch()
            if batch:
                self._run(batch)

    def _drain_inbox(self) -> None:
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if item is None:  # keep the stop signal for after the waiting tiles
                self._inbox.put(None)
                return
            self._waiting.append(item)

    def _next_batch(self) -> list[_Item]:
        """The oldest live tile and up to max_batch - 1 live tiles with its recipe key."""
        while self._waiting and not self._waiting[0].future.set_running_or_notify_cancel():
            self._waiting.popleft()  # its job was cancelled
        if not self._waiting:
            return []
        first = self._waiting.popleft()
        key, limit = first.recipe.key(), first.recipe.max_batch()
        batch, rest = [first], deque()
        while self._waiting and len(batch) < limit:
            item = self._waiting.popleft()
            if item.recipe.key() != key:
                rest.append(item)
            elif item.future.set_running_or_notify_cancel():
                batch.append(item)
        rest.extend(self._waiting)
        self._waiting = rest
        return batch

    def _run(self, batch: list[_Item]) -> None:
        try:
            tiles = torch.from_numpy(np.stack([item.tile for item in batch]))
            if self.device.type == "cuda":
                tiles = tiles.pin_memory().to(self.device, non_blocking=True)
            results = batch[0].recipe.run(tiles)
            if len(results) != len(batch):
                raise RuntimeError(f"a recipe gave {len(results)} results for {len(batch)} tiles")
        except BaseException as exc:  # every tile of the batch learns why; the worker lives on
            for item in batch:
                item.future.set_exception(exc)
            return
        for item, result in zip(batch, results, strict=True):
            item.future.set_result(result)
