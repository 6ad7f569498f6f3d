"""Spreading a batch over servers: worker threads, retries, servers going down.

Each server gets ``concurrency`` worker threads that take slides from one shared
queue. A slide that fails for a transient reason goes back to the queue (after
a back-off), preferably for another server; a server that cannot be reached
is cooled down and probed with health checks before it gets work again. A server
whose TLS certificate this client refuses gets no more work; when no server is
left, the batch stops at once with that sentence.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence

import grpc

from .calls import Cancelled
from .connect import Connection
from .errors import EXIT_FAILED, ClientError, rpc_error_code
from .job import AttemptState, BatchContext, SlideTask, segment_slide
from .report import DONE, FAILED, INTERRUPTED, INTERRUPTED_REASON, SlideOutcome
from .retry import Action, RetryPolicy, classify
from .servers import ServerState

_TICK_S = 0.2


class Scheduler:
    """Runs a list of :class:`SlideTask` over servers; see the module docstring."""

    def __init__(
        self,
        ctx: BatchContext,
        conns: Sequence[Connection],
        policy: RetryPolicy,
        concurrency: int,
        on_outcome: Callable[[SlideOutcome, bool], None],
        fatal_check: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.ctx, self.policy, self.concurrency = ctx, policy, max(1, concurrency)
        self.servers = [ServerState(conn) for conn in conns]
        self.on_outcome, self.fatal_check = on_outcome, fatal_check
        self._cond = threading.Condition()
        # A deque: slides are taken from its front, which a list pays for by moving
        # every pointer behind it (a millisecond a slide in a batch of a million).
        self._pending: deque[SlideTask] = deque()
        self._unfinished = 0
        self._outcomes: dict[str, SlideOutcome] = {}
        self._stopped = ""  # why the whole batch stopped ("" while it runs)

    # -- the main thread -------------------------------------------------------------

    def run(self, tasks: Sequence[SlideTask]) -> list[SlideOutcome]:
        """Process every task; returns their outcomes in the order given.

        Raises:
            KeyboardInterrupt: after cancelling the calls in flight, which finish as
                interrupted; slides never started get no outcome here.
            ClientError: no server can be used (every one's certificate refused);
                the unfinished slides have no outcome.
        """
        with self._cond:
            self._pending = deque(tasks)
            self._unfinished = len(tasks)
        workers = [
            threading.Thread(target=self._worker, args=(server,), daemon=True, name="fseg-worker")
            for server in self.servers
            for _ in range(self.concurrency)
        ]
        for worker in workers:
            worker.start()
        try:
            while not self._all_finished() and not self._stopped:
                self._watchdog()
                time.sleep(_TICK_S)  # Ctrl-C is delivered here, to the main thread
        except KeyboardInterrupt:
            self.ctx.registry.cancel_all()
            with self._cond:
                self._cond.notify_all()
            _join(workers, timeout_s=10.0)
            # Slides never started are left pending: the caller's board marks them all
            # interrupted at once (one by one took seconds for a million-slide batch).
            with self._cond:
                self._pending = deque()
            raise
        _join(workers, timeout_s=10.0)
        if self._stopped:
            raise ClientError(self._stopped, exit_code=EXIT_FAILED)
        return [self._outcomes[t.slide.stem] for t in tasks if t.slide.stem in self._outcomes]

    @property
    def outcomes(self) -> dict[str, SlideOutcome]:
        """Outcomes so far, by slide stem."""
        return dict(self._outcomes)

    def _all_finished(self) -> bool:
        with self._cond:
            return self._unfinished == 0

    def _watchdog(self) -> None:
        """Fail the waiting slides when no server can take them any more."""
        if all(s.untrusted for s in self.servers):  # only the user can change that
            with self._cond:
                self._stopped = " ".join(s.last_error for s in self.servers)
                self._cond.notify_all()
            return
        reason = self.fatal_check()
        if reason is None and all(s.failures > 0 and not s.in_flight for s in self.servers):
            # Counted from when the last server began failing, not from its last
            # answer: a long upload or a wait in a queue is silence, not an outage;
            # and an attempt still running may yet answer.
            silent = time.monotonic() - max(s.down_since or 0.0 for s in self.servers)
            if silent > self.policy.budget_s():
                errors = "; ".join(f"{s.address}: {s.last_error.rstrip('.')}" for s in self.servers)
                reason = f"no server answered for {silent:.0f} s ({errors})"
        if reason is not None:
            self._fail_pending(reason)

    def _fail_pending(self, reason: str) -> None:
        with self._cond:
            waiting, self._pending = self._pending, deque()
        for task in waiting:
            self._finish(task, FAILED, error=reason)

    # -- worker threads ---------------------------------------------------------------

    def _worker(self, server: ServerState) -> None:
        stopping = self.ctx.registry.stopping
        while not stopping.is_set() and not self._all_finished() and not self._stopped:
            if not self._ready(server):
                stopping.wait(_TICK_S)
                continue
            task = self._take(server)
            if task is None:
                continue
            try:
                self._attempt(server, task)
            except Exception as exc:  # a bug; the slide must still finish, or run() waits forever
                self._finish(task, FAILED, server.address, error=f"internal error: {exc!r}")

    def _ready(self, server: ServerState) -> bool:
        """Whether ``server`` may get work now; probes its health after a cool-down."""
        with self._cond:
            if time.monotonic() < server.down_until or server.probing:
                return False
            if not server.needs_probe:
                return True
            server.probing = True
        error = server.probe()
        with self._cond:
            server.probing = False
            if error:
                server.mark_down(self.policy, error)
                return False
            # The failure count stays: only real work proves a server useful (a health
            # service can say SERVING while every call fails; the watchdog must still fire).
            server.needs_probe = False
            return True

    def _take(self, server: ServerState) -> SlideTask | None:
        """The first slide this server may take now, waiting up to a tick for one."""
        with self._cond:
            task = self._eligible(server)
            if task is None:
                self._cond.wait(_TICK_S)
                task = self._eligible(server)
            if task is not None and task is self._pending[0]:
                self._pending.popleft()
            elif task is not None:  # the first waits out a back-off or avoids this server
                self._pending.remove(task)
            return task

    def _eligible(self, server: ServerState) -> SlideTask | None:
        now = time.monotonic()
        up = {s.address for s in self.servers if s.usable(now)}
        for task in self._pending:
            if task.not_before > now:
                continue
            # A slide avoids servers it failed on, as long as another one is up.
            if server.address not in task.avoid or not (up - task.avoid):
                return task
        return None

    def _attempt(self, server: ServerState, task: SlideTask) -> None:
        task.tries += 1
        if task.first_started is None:
            task.first_started = time.monotonic()
        state = AttemptState(on_event=server.answered)
        with self._cond:
            server.in_flight += 1
        try:
            summary = segment_slide(self.ctx, task, server.conn, state)
        except Exception as exc:
            failure: Exception | None = exc
        else:
            failure = None
        finally:
            with self._cond:
                server.in_flight -= 1
        if failure is not None:
            self._failed(server, task, failure, state)
            return
        with self._cond:
            server.answered()
        self._finish(task, DONE, server.address, summary=summary, job_id=state.job_id)

    def _failed(
        self, server: ServerState, task: SlideTask, exc: Exception, state: AttemptState
    ) -> None:
        stopping = self.ctx.registry.stopping.is_set() or isinstance(exc, Cancelled)
        verdict = classify(
            exc,
            started=state.started,
            slide_timeout=self.ctx.slide_timeout_s is not None,
            cancelled_by_us=stopping,
        )
        if verdict.action is Action.STOP:
            self._finish(task, INTERRUPTED, server.address, error=INTERRUPTED_REASON)
            return
        message = server.conn.explain(exc)
        task.last_error = message
        if os.environ.get("FSEG_DEBUG"):
            traceback.print_exception(exc)
        counts = verdict.counts
        if rpc_error_code(exc) is grpc.StatusCode.RESOURCE_EXHAUSTED and server.in_flight:
            # Busy with our own slides: its queue frees up as they finish, so waiting
            # is expected and costs this slide none of its retries.
            counts = False
        task.attempts += int(counts)
        delay = 0.0
        others_left = False
        with self._cond:
            if verdict.action is Action.UNTRUSTED:
                others_left = not server.untrusted and not all(
                    s.untrusted for s in self.servers if s is not server
                )
                server.leave_out(message)
            elif verdict.action is Action.SERVER_DOWN:
                server.mark_down(self.policy, message)
            elif verdict.action is Action.RETRY:
                delay = self.policy.delay(max(1, task.attempts))
                if rpc_error_code(exc) is grpc.StatusCode.RESOURCE_EXHAUSTED:
                    server.down_until = max(server.down_until, time.monotonic() + delay)
        if others_left:  # without any left, the batch stops with the sentence instead
            self.ctx.progress.warn(f"fseg: leaving {server.address} out of the batch: {message}")
        if verdict.action is Action.FAIL:
            self._finish(task, FAILED, server.address, error=message, job_id=state.job_id)
        elif counts and self.policy.exhausted(task.attempts):
            error = f"gave up after {task.tries} attempts: {message}"
            self._finish(task, FAILED, server.address, error=error, job_id=state.job_id)
        else:
            self._requeue(task, server, delay)

    def _requeue(self, task: SlideTask, server: ServerState, delay_s: float) -> None:
        task.not_before = time.monotonic() + delay_s
        task.avoid.add(server.address)
        with self._cond:
            self._pending.append(task)
            self._cond.notify_all()

    def _finish(
        self,
        task: SlideTask,
        status: str,
        server: str = "",
        error: str = "",
        summary: dict | None = None,
        job_id: str = "",
    ) -> None:
        """Record the task's outcome and say so on the console (not for each
        slide a Ctrl-C leaves: one closing line says that)."""
        started = task.first_started
        outcome = SlideOutcome(
            slide=task.slide,
            status=status,
            server=server,
            attempts=task.tries,
            error=error,
            seconds=time.monotonic() - started if started is not None else 0.0,
            summary=summary,
            job_id=job_id,
        )
        with self._cond:
            if task.slide.stem in self._outcomes:
                return
            self._outcomes[task.slide.stem] = outcome
            self._unfinished -= 1
            self._cond.notify_all()
        self.on_outcome(outcome, status != INTERRUPTED)


def _join(threads: Sequence[threading.Thread], timeout_s: float) -> None:
    """Wait for ``threads``, at most ``timeout_s`` seconds in all."""
    deadline = time.monotonic() + timeout_s
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
