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
import time
import warnings
from collections import deque
from collections.abc import Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from .readers import ReaderPool

warnings.filterwarnings("ignore", "The given NumPy array is not writable", UserWarning)

#: How long a batch smaller than its recipe allows waits for more tiles on a
#: GPU, where a small batch wastes the device; on a CPU a batch's cost is
#: its pixels, so nothing is gained by waiting.
GPU_FILL_WAIT_S = 0.005
#: Pinned host buffers kept per tile shape for reuse (CUDA only).
PINNED_KEPT = 32


class Recipe(Protocol):
    """What the device computes for a batch of tiles."""

    def key(self) -> Hashable:
        """Tiles whose recipes have equal keys (and equal shapes) can share one batch."""

    def max_batch(self, shape: tuple[int, ...]) -> int:
        """The largest batch of items of ``shape`` this recipe should run."""

    def run(self, batch: torch.Tensor) -> Sequence[object]:
        """(B, H, W, 3) uint8 on the device -> one result per tile."""


@dataclass
class _Item:
    recipe: Recipe
    tile: torch.Tensor  # staged on the host: pinned for a GPU
    future: Future = field(default_factory=Future)

    @property
    def group(self) -> Hashable:
        return (self.recipe.key(), tuple(self.tile.shape))


class DeviceWorker:
    """A thread that runs recipes on the device, batching equal recipes together.

    It also owns the process's reader threads (:attr:`readers`), so every job
    that feeds this device reads through one pool sized to the cores. The
    device thread does device work only: readers stage each tile for it
    (a tensor; on a GPU, in pinned memory so the copy is asynchronous), and
    jobs stitch the results in their own threads.
    """

    def __init__(
        self,
        device: torch.device,
        *,
        readers: int | None = None,
        fill_wait_s: float | None = None,
    ) -> None:
        self.device = device
        self.readers = ReaderPool(readers)
        self.fill_wait_s = (
            (GPU_FILL_WAIT_S if device.type == "cuda" else 0.0)
            if fill_wait_s is None
            else fill_wait_s
        )
        self._staging = _Staging(device)
        self._inbox: queue.Queue[_Item | None] = queue.Queue()
        self._waiting: deque[_Item] = deque()
        self._busy_s = 0.0
        self._thread = threading.Thread(target=self._loop, name="fseg-device", daemon=True)
        self._thread.start()

    @property
    def busy_s(self) -> float:
        """Seconds the device thread has spent on batches (copies and recipes) so far."""
        return self._busy_s

    def submit(self, recipe: Recipe, tile: np.ndarray) -> Future:
        """Queue one tile (an array; staged here, in the caller's thread); the future
        gives the recipe's result for it."""
        item = _Item(recipe, self._staging.stage(tile))
        self._inbox.put(item)
        return item.future

    def close(self) -> None:
        """Stop after the tiles already queued."""
        if self._thread.is_alive():
            self._inbox.put(None)
            self._thread.join()
        self.readers.close()

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

    def _drain_inbox(self, timeout: float = 0.0) -> bool:
        """Move what arrived into the waiting line; with ``timeout``, wait that long
        for a first item. False when nothing came."""
        came = False
        while True:
            try:
                item = self._inbox.get(timeout=timeout) if timeout > 0 else self._inbox.get_nowait()
            except queue.Empty:
                return came
            timeout = 0.0
            if item is None:  # keep the stop signal for after the waiting tiles
                self._inbox.put(None)
                return came
            self._waiting.append(item)
            came = True

    def _next_batch(self) -> list[_Item]:
        """The oldest live tile and up to max_batch - 1 live tiles of its group, waiting
        up to ``fill_wait_s`` for more when the batch is not full and nothing else waits
        (the device would otherwise idle or run a small batch, not other work)."""
        while self._waiting and not self._waiting[0].future.set_running_or_notify_cancel():
            self._waiting.popleft()  # its job was cancelled
        if not self._waiting:
            return []
        first = self._waiting.popleft()
        try:
            group, limit = first.group, first.recipe.max_batch(tuple(first.tile.shape))
        except Exception as exc:  # a broken recipe fails its tile, not the worker
            first.future.set_exception(exc)
            return []
        batch = [first]
        deadline = time.perf_counter() + self.fill_wait_s
        while True:
            self._take_from_waiting(batch, group, limit)
            left = deadline - time.perf_counter()
            if len(batch) >= limit or left <= 0 or self._waiting:
                return batch
            if not self._drain_inbox(left):
                return batch

    def _take_from_waiting(self, batch: list[_Item], group: Hashable, limit: int) -> None:
        rest: deque[_Item] = deque()
        while self._waiting and len(batch) < limit:
            item = self._waiting.popleft()
            if item.group != group:
                rest.append(item)
            elif item.future.set_running_or_notify_cancel():
                batch.append(item)
        rest.extend(self._waiting)
        self._waiting = rest

    def _run(self, batch: list[_Item]) -> None:
        started = time.perf_counter()
        try:
            tiles = self._staging.to_device([item.tile for item in batch])
            results = self._compute(batch[0].recipe, tiles)
            if len(results) != len(batch):
                raise RuntimeError(f"a recipe gave {len(results)} results for {len(batch)} tiles")
        except BaseException as exc:  # every tile of the batch learns why; the worker lives on
            for item in batch:
                item.future.set_exception(exc)
            return
        finally:
            self._busy_s += time.perf_counter() - started
        for item, result in zip(batch, results, strict=True):
            item.future.set_result(result)

    def _compute(self, recipe: Recipe, tiles: torch.Tensor) -> Sequence[object]:
        """The recipe on a batch on the device (a stand-in device replaces this)."""
        return recipe.run(tiles)


class _Staging:
    """Host tensors for the device: plain on a CPU, pinned and reused on a GPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.pinned = device.type == "cuda"
        self._free: dict[tuple, list[torch.Tensor]] = {}
        self._in_copy: deque[tuple[torch.cuda.Event, list[torch.Tensor]]] = deque()
        self._lock = threading.Lock()

    def stage(self, array: np.ndarray) -> torch.Tensor:
        """``array`` as a tensor the device can copy from (runs in a reader thread)."""
        # Pillow's pixels are read-only; torch warns, but nothing writes into a
        # staged tile (extractors convert it to float first), so it is not copied.
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if not self.pinned:
            return tensor
        key = (tuple(tensor.shape), tensor.dtype)
        with self._lock:
            free = self._free.get(key)
            buffer = free.pop() if free else None
        if buffer is None:
            buffer = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        return buffer.copy_(tensor)

    def to_device(self, tiles: list[torch.Tensor]) -> torch.Tensor:
        """One (B, ...) batch on the device (runs in the device thread)."""
        if not self.pinned:
            return tiles[0][None] if len(tiles) == 1 else torch.stack(tiles)
        self._recycle()
        batch = torch.empty((len(tiles), *tiles[0].shape), dtype=tiles[0].dtype, device=self.device)
        for index, tile in enumerate(tiles):
            batch[index].copy_(tile, non_blocking=True)  # from pinned memory: asynchronous
        copied = torch.cuda.Event()
        copied.record()
        self._in_copy.append((copied, tiles))
        return batch

    def _recycle(self) -> None:
        """Buffers whose copies have finished go back to the free lists."""
        while self._in_copy and self._in_copy[0][0].query():
            _, tiles = self._in_copy.popleft()
            with self._lock:
                for tile in tiles:
                    free = self._free.setdefault((tuple(tile.shape), tile.dtype), [])
                    if len(free) < PINNED_KEPT:
                        free.append(tile)
