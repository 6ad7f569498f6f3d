"""Calls in flight, so that Ctrl-C can cancel every one of them at once."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Protocol


class Cancellable(Protocol):
    def cancel(self) -> bool: ...


class Cancelled(Exception):
    """The client is shutting down; no new call may start."""


class CallRegistry:
    """The set of live gRPC calls (streams and futures) of this process."""

    def __init__(self) -> None:
        self._calls: set[Cancellable] = set()
        self._lock = threading.Lock()
        self.stopping = threading.Event()

    @contextlib.contextmanager
    def track(self, call: Cancellable) -> Iterator[Cancellable]:
        """Register ``call`` for the ``with`` block; cancel it at once if already stopping."""
        with self._lock:
            self._calls.add(call)
        if self.stopping.is_set():
            call.cancel()
        try:
            yield call
        finally:
            with self._lock:
                self._calls.discard(call)

    def check(self) -> None:
        """Raise :class:`Cancelled` once shutdown has begun."""
        if self.stopping.is_set():
            raise Cancelled("the client is shutting down")

    def cancel_all(self) -> int:
        """Refuse new calls and cancel the live ones; returns how many were cancelled."""
        self.stopping.set()
        with self._lock:
            calls = list(self._calls)
        for call in calls:
            call.cancel()
        return len(calls)
