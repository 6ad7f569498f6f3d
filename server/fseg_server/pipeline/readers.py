"""Reader threads shared by every job of a server, taking turns between jobs.

Reading a tile (decoding JPEG or JPEG 2000 in OpenSlide, resampling in
Pillow, staging for the device) is the CPU's share of the pipeline. One
pool per process, sized to the cores this process may run on, keeps the
cores busy without oversubscribing them when several jobs run at once, and
fair turns (one task per job in rotation) keep a large slide from starving
a small one that arrived later.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any


def available_cores() -> int:
    """Cores this process may run on (its scheduler affinity, as a container sets it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS and Windows have no affinity call
        return max(1, os.cpu_count() or 1)


class ReaderPool:
    """``threads`` reader threads (default: one per available core) serving job queues in turn."""

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads or available_cores()
        self._turns: deque[JobQueue] = deque()  # jobs with waiting tasks, next first
        self._ready = threading.Condition()
        self._closed = False
        for index in range(self.threads):
            threading.Thread(target=self._loop, name=f"fseg-read-{index}", daemon=True).start()

    def queue(self) -> JobQueue:
        """A new job's queue; close it (or use it as a context manager) when the job ends."""
        return JobQueue(self)

    def close(self) -> None:
        """Let the threads end once the tasks already queued have run."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def _enqueue(self, job: JobQueue) -> None:
        """``job`` has a new task: give it a turn if it has none waiting."""
        with self._ready:
            if not job.in_turns:
                job.in_turns = True
                self._turns.append(job)
                self._ready.notify()

    def _loop(self) -> None:
        while True:
            with self._ready:
                while not self._turns and not self._closed:
                    self._ready.wait()
                if not self._turns:
                    return
                job = self._turns.popleft()
                if not job.tasks:  # its tasks were dropped while it waited
                    job.in_turns = False
                    continue
                future, fn, args = job.tasks.popleft()
                job.running += 1
                if job.tasks:
                    self._turns.append(job)  # back of the line: one task per turn
                else:
                    job.in_turns = False
                if self._turns:
                    self._ready.notify()  # more work: wake another reader for it
            try:
                if future.set_running_or_notify_cancel():  # else cancelled while it waited
                    future.set_result(fn(*args))
            except BaseException as exc:  # the job's thread re-raises it
                future.set_exception(exc)
            finally:
                with self._ready:
                    job.running -= 1
                    self._ready.notify_all()  # a job closing may wait for this


class JobQueue:
    """One job's reading tasks in a :class:`ReaderPool`."""

    def __init__(self, pool: ReaderPool) -> None:
        self._pool = pool
        self.tasks: deque[tuple[Future, Callable[..., Any], tuple]] = deque()
        self.in_turns = False  # guarded by the pool's lock, as is running
        self.running = 0  # tasks of this job in a reader thread now

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Run ``fn(*args)`` in a reader thread; the future gives its result."""
        future: Future = Future()
        with self._pool._ready:
            self.tasks.append((future, fn, args))
        self._pool._enqueue(self)
        return future

    def close(self) -> None:
        """Drop the tasks that have not started (their futures are cancelled), and wait
        for those running: the job may close its slide next, and OpenSlide aborts the
        whole process when a handle is closed under a read."""
        with self._pool._ready:
            dropped = list(self.tasks)
            self.tasks.clear()
            for future, _, _ in dropped:
                future.cancel()
            self._pool._ready.wait_for(lambda: self.running == 0)

    def __enter__(self) -> JobQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
