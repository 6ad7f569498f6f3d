"""Streaming tiles from a slide through the device, with bounded memory.

A pool of reader threads prepares tiles (reads and resamples pixels, or loads
cached features; OpenSlide, Pillow and NumPy release the GIL while they work);
each tile goes to the device worker as soon as it is ready. At most
``in_flight`` tiles exist at once, so memory does not grow with the slide, and
results come back in tile order.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..errors import Cancelled
from ..slide.reader import Slide
from ..slide.tiles import Tile, TileGrid
from .device_worker import DeviceWorker, Recipe


@dataclass
class ReadClock:
    """Seconds spent reading and resizing, summed over reader threads."""

    seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, seconds: float) -> None:
        with self._lock:
            self.seconds += seconds


def read_tile(slide: Slide, grid: TileGrid, tile: Tile) -> np.ndarray:
    """A tile's pixels, core and margins, resampled to the working resolution.

    Returns:
        (S, S, 3) uint8 with S = grid.input_size target pixels.
    """
    size = grid.input_size
    left, top, span = tile.read_box()
    pixels = slide.read(grid.resolution.level, left, top, span, span)
    exact = (tile.source_x - left, tile.source_y - top)
    if grid.resolution.scale == 1.0 and exact == (0.0, 0.0):
        return np.ascontiguousarray(pixels[:size, :size])
    # Pillow's bilinear filter widens its support when shrinking (antialiased),
    # and `box` takes the exact fractional source square.
    box = (exact[0], exact[1], exact[0] + tile.source_size, exact[1] + tile.source_size)
    image = Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR, box=box)
    return np.asarray(image)


Prepare = Callable[[Tile], tuple[Recipe, np.ndarray]]


def pixels_with(slide: Slide, grid: TileGrid, recipe: Recipe) -> Prepare:
    """The usual preparation: read the tile's pixels for ``recipe``."""
    return lambda tile: (recipe, read_tile(slide, grid, tile))


def stream_tiles(
    tiles: Sequence[Tile],
    prepare: Prepare,
    worker: DeviceWorker,
    *,
    readers: int = 4,
    in_flight: int = 16,
    should_stop: Callable[[], bool] = lambda: False,
    clock: ReadClock | None = None,
) -> Iterator[tuple[Tile, object]]:
    """Yield (tile, recipe result) for every tile, in order.

    ``prepare(tile)`` runs in a reader thread and returns the recipe and the
    array (pixels or cached features) to send to the device.

    Raises:
        Cancelled: when ``should_stop()`` turns true; queued work is dropped.
    """
    clock = clock or ReadClock()
    stopped = threading.Event()

    def read_and_submit(tile: Tile) -> Future:
        started = time.perf_counter()
        recipe, item = prepare(tile)
        clock.add(time.perf_counter() - started)
        if stopped.is_set():  # the consumer has gone; do not occupy the device
            dropped: Future = Future()
            dropped.cancel()
            return dropped
        return worker.submit(recipe, item)

    pending: deque[tuple[Tile, Future]] = deque()
    source = iter(tiles)
    done = 0
    with ThreadPoolExecutor(readers, thread_name_prefix="fseg-read") as pool:
        try:
            while True:
                for tile in _take(source, in_flight - len(pending)):
                    pending.append((tile, pool.submit(read_and_submit, tile)))
                if not pending:
                    return
                where = f"after {done} of {len(tiles)} tiles"
                if should_stop():
                    raise Cancelled(f"the job was cancelled {where}")
                tile, submitted = pending.popleft()
                yield tile, _wait(submitted, should_stop, where)
                done += 1
        finally:
            stopped.set()
            _cancel_all(pending)


def _take(source: Iterator[Tile], n: int) -> list[Tile]:
    taken = []
    for _ in range(max(n, 0)):
        tile = next(source, None)
        if tile is None:
            break
        taken.append(tile)
    return taken


def _wait(submitted: Future, should_stop: Callable[[], bool], where: str) -> object:
    """The device result of a tile, checking for cancellation while waiting."""
    device_future: Future = submitted.result()
    while True:
        try:
            return device_future.result(timeout=0.25)
        except FutureTimeout:  # not the built-in TimeoutError before Python 3.11
            if should_stop():
                device_future.cancel()
                raise Cancelled(f"the job was cancelled {where}") from None


def _cancel_all(pending: deque[tuple[Tile, Future]]) -> None:
    for _, submitted in pending:
        if not submitted.cancel() and submitted.done() and submitted.exception() is None:
            submitted.result().cancel()
