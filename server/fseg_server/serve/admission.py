"""Admission control: a bounded number of jobs, of which a few run at once.

Jobs beyond ``max_queued`` are refused at once with RESOURCE_EXHAUSTED rather
than piling up; admitted jobs wait for one of ``max_running`` slots. Running
jobs share the device worker, which batches their tiles together.
"""

from __future__ import annotations

import itertools
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import Cancelled, ResourceExhausted

POLL_SECONDS = 0.2


@dataclass
class Ticket:
    """An admitted job."""

    job_id: str
    queue_position: int
    running: bool = False


class Admission:
    def __init__(self, max_queued: int, max_running: int) -> None:
        self.max_queued = max_queued
        self.max_running = max_running
        self._slots = threading.BoundedSemaphore(max_running)
        self._lock = threading.Lock()
        self._admitted = 0
        self._running = 0
        self._ids = itertools.count(1)
        # Job ids are searched for in a fleet's pooled logs: a per-process tag keeps
        # "segment-7" of one server (or of a restart) apart from another's.
        self._tag = secrets.token_hex(4)

    @property
    def counts(self) -> tuple[int, int]:
        """(running, waiting) jobs now."""
        with self._lock:
            return self._running, self._admitted - self._running

    def admit(self, kind: str = "job") -> Ticket:
        with self._lock:
            if self._admitted >= self.max_queued:
                raise ResourceExhausted(
                    f"the server is busy: {self._admitted} jobs are admitted, the limit is "
                    f"{self.max_queued}; retry later or use another server"
                )
            position = max(0, self._admitted - self._running)
            self._admitted += 1
            return Ticket(f"{kind}-{self._tag}-{next(self._ids)}", position)

    def wait_for_slot(self, ticket: Ticket, should_stop: Callable[[], bool]) -> None:
        """Block until the job may run; raises Cancelled if its caller gives up first."""
        while not self._slots.acquire(timeout=POLL_SECONDS):
            if should_stop():
                raise Cancelled("the job was cancelled while it waited for a slot")
        with self._lock:
            self._running += 1
        ticket.running = True

    def release(self, ticket: Ticket) -> None:
        with self._lock:
            self._admitted -= 1
            if ticket.running:
                self._running -= 1
        if ticket.running:
            ticket.running = False
            self._slots.release()
