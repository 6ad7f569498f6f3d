"""Running a job in its own thread while the call's thread streams its events, and
reading a client's stream without waiting on it for ever."""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterator
from typing import TypeVar

import grpc

from fseg_proto import fseg_pb2

from ..errors import Cancelled

log = logging.getLogger("fseg.server")
PROGRESS_INTERVAL = 0.2  # seconds between progress events of one stage
_DONE = object()
T = TypeVar("T")


class CallStopper:
    """``should_stop()`` for a call: true once the client cancelled or its deadline passed."""

    def __init__(self, context: grpc.ServicerContext) -> None:
        self._context = context

    def __call__(self) -> bool:
        if not self._context.is_active():
            return True
        remaining = self._context.time_remaining()
        return remaining is not None and remaining <= 0


class ProgressEvents:
    """Turns pipeline progress callbacks into rate-limited Progress messages."""

    def __init__(self, emit: Callable[[object], None]) -> None:
        self._emit = emit
        self._last: dict[str, float] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        final = done >= total
        if not final and now - self._last.get(stage, 0.0) < PROGRESS_INTERVAL:
            return
        self._last[stage] = now
        self._emit(fseg_pb2.Progress(stage=stage, done=done, total=total))


def run_job(
    work: Callable[[Callable[[object], None]], object], name: str
) -> Generator[object, None, object]:
    """Run ``work(emit)`` in a thread; yield what it emits; return its result.

    The work's exception, if any, is raised here, in the call's thread. When the
    call ends early (cancelled, deadline), gRPC closes this generator; closing
    waits for the work to notice and stop, so the job keeps its slot until then.
    """
    events: queue.Queue = queue.Queue()
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["result"] = work(events.put)
        except BaseException as exc:  # handed to the call's thread
            outcome["error"] = exc
        finally:
            events.put(_DONE)

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    try:
        while (item := events.get()) is not _DONE:
            yield item
    finally:
        thread.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["result"]


def file_chunks(name: str, data: bytes, chunk_bytes: int) -> Iterator[fseg_pb2.ResultChunk]:
    """A file as ResultChunk messages; the last one carries the whole file's SHA-256."""
    digest = hashlib.sha256(data).hexdigest()
    total = len(data)
    offsets = range(0, total, chunk_bytes) if total else [0]
    for offset in offsets:
        last = offset + chunk_bytes >= total
        yield fseg_pb2.ResultChunk(
            file=name,
            offset=offset,
            data=data[offset : offset + chunk_bytes],
            last=last,
            total_bytes=total,
            sha256=digest if last else "",
        )


def idle_limited(
    messages: Iterator[T], context: grpc.ServicerContext, idle_s: float
) -> Iterator[T]:
    """A client stream's messages; when none comes for ``idle_s`` seconds the call is
    cancelled, which frees the thread blocked reading it (gRPC's read takes no timeout).

    One watchdog thread per stream, not one per message: an upload is thousands
    of 1 MiB chunks.

    Raises:
        Cancelled: the stream went idle (the client sees CANCELLED).
    """
    watchdog = _IdleWatchdog(context, idle_s)
    try:
        for message in messages:
            watchdog.heard()
            yield message
    except grpc.RpcError:
        if watchdog.fired:
            raise Cancelled(f"the stream sent nothing for {idle_s:.0f} s") from None
        raise
    finally:
        watchdog.stop()


class _IdleWatchdog:
    """Cancels a call once ``idle_s`` seconds pass without :meth:`heard`."""

    def __init__(self, context: grpc.ServicerContext, idle_s: float) -> None:
        self._context, self._idle_s = context, idle_s
        self._last = time.monotonic()
        self._stopped = threading.Event()
        self.fired = False
        threading.Thread(target=self._watch, name="fseg-idle-watch", daemon=True).start()

    def heard(self) -> None:
        self._last = time.monotonic()

    def stop(self) -> None:
        self._stopped.set()

    def _watch(self) -> None:
        while not self._stopped.wait(max(0.0, self._last + self._idle_s - time.monotonic())):
            if time.monotonic() - self._last >= self._idle_s:
                log.info("a stream sent nothing for %.0f s and was cancelled", self._idle_s)
                self.fired = True
                self._context.cancel()
                return
