"""Streaming tiles from a slide through the device, with bounded memory.

The device worker's reader threads, shared by every job, prepare tiles (read
and resample pixels, or load cached features; OpenSlide, Pillow and NumPy
release the GIL while they work); each tile goes to the device as soon as it
is ready. At most
``in_flight`` tiles exist at once, so memory does not grow with the slide, and
results come back in tile order.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from concurrent.futures import Future
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
        (tile.input_h, tile.input_w, 3) uint8, target pixels.
    """
    width, height = tile.input_w, tile.input_h
    left, top, span_w, span_h = tile.read_box()
    pixels = slide.read(grid.resolution.level, left, top, span_w, span_h)
    exact = (tile.source_x - left, tile.source_y - top)
    if tile.scale == 1.0 and exact == (0.0, 0.0):
        return np.ascontiguousarray(pixels[:height, :width])
    # Pillow's bilinear filter widens its support when shrinking (antialiased),
    # and `box` takes the exact fractional source rectangle.
    box = (exact[0], exact[1], exact[0] + tile.source_w, exact[1] + tile.source_h)
    image = Image.fromarray(pixels).resize((width, height), Image.Resampling.BILINEAR, box=box)
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
    in_flight: int = 16,
    ordered: bool = True,
    should_stop: Callable[[], bool] = lambda: False,
    clock: ReadClock | None = None,
) -> Iterator[tuple[Tile, object]]:
    """Yield (tile, recipe result) for every tile: in order, or with ``ordered=False``
    as each is done (tissue regions differ in size, and a large one at the head
    would hold back the small ones behind it while readers sit idle).

    ``prepare(tile)`` runs in one of the worker's reader threads (shared with
    every other job, in turns) and returns the recipe and the array (pixels
    or cached features) to send to the device. At most ``in_flight`` tiles
    are being read, waiting for the device or waiting to be consumed.

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
    with worker.readers.queue() as reads:
        try:
            while True:
                for tile in _take(source, in_flight - len(pending)):
                    pending.append((tile, reads.submit(read_and_submit, tile)))
                if not pending:
                    return
                where = f"after {done} of {len(tiles)} tiles"
                if should_stop():
                    raise Cancelled(f"the job was cancelled {where}")
                index = 0 if ordered else _first_done(pending, should_stop, where)
                tile, submitted = pending[index]
                del pending[index]
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


def _first_done(
    pending: deque[tuple[Tile, Future]], should_stop: Callable[[], bool], where: str
) -> int:
    """The index of a pending tile whose result (or error) is ready, waiting for one."""
    while True:
        current = [_current_stage(submitted) for _, submitted in pending]
        for index, future in enumerate(current):
            if (future.done() and future is not pending[index][1]) or _failed(future):
                return index
        futures.wait(current, timeout=0.25, return_when=futures.FIRST_COMPLETED)
        if should_stop():
            raise Cancelled(f"the job was cancelled {where}")


def _current_stage(submitted: Future) -> Future:
    """The device's future once the tile is read and submitted, else the read's own."""
    if submitted.done() and not submitted.cancelled() and submitted.exception() is None:
        return submitted.result()
    return submitted


def _failed(future: Future) -> bool:
    return future.done() and (future.cancelled() or future.exception() is not None)


def _wait(submitted: Future, should_stop: Callable[[], bool], where: str) -> object:
    """The device result of a tile, checking for cancellation while it is read and computed."""
    device_future: Future = _result(submitted, should_stop, where)
    return _result(device_future, should_stop, where)


def _result(future: Future, should_stop: Callable[[], bool], where: str) -> object:
    while True:
        try:
            return future.result(timeout=0.25)
        except FutureTimeout:  # not the built-in TimeoutError before Python 3.11
            if should_stop():
                future.cancel()
                raise Cancelled(f"the job was cancelled {where}") from None


def _cancel_all(pending: deque[tuple[Tile, Future]]) -> None:
    for _, submitted in pending:
        if not submitted.cancel() and submitted.done() and submitted.exception() is None:
            submitted.result().cancel()
