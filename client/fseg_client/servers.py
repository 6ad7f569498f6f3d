"""What a batch knows about each server: up or cooling down, and how to probe it."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import grpc

from .connect import Connection
from .errors import rpc_error_code
from .retry import RetryPolicy

PROBE_TIMEOUT_S = 5.0


@dataclass
class ServerState:
    """One server (one channel) as the scheduler sees it; guarded by the scheduler's lock.

    Times are ``time.monotonic()`` seconds.
    """

    conn: Connection
    failures: int = 0  # unreachable, in a row
    down_since: float | None = None  # the first of those failures (None: answering)
    down_until: float = 0.0  # no new work before
    needs_probe: bool = False  # ask the health service before sending work
    probing: bool = False
    in_flight: int = 0  # this client's attempts running there now
    last_error: str = ""
    untrusted: bool = False  # its TLS certificate was refused: it gets no more work

    @property
    def address(self) -> str:
        return self.conn.address

    def usable(self, now: float) -> bool:
        """Neither cooling down nor waiting for a health probe."""
        return self.down_until <= now and not self.needs_probe

    def mark_down(self, policy: RetryPolicy, error: str) -> None:
        """Cool the server down; the cool-down grows with each failure in a row."""
        if self.failures == 0:
            self.down_since = time.monotonic()
        self.failures += 1
        self.down_until = time.monotonic() + policy.delay(self.failures)
        self.needs_probe = True
        self.last_error = error

    def leave_out(self, error: str) -> None:
        """Give it no more work: this client refuses its TLS certificate, which only
        the user's options (or the server's certificate) can change."""
        if self.failures == 0:
            self.down_since = time.monotonic()
        self.failures += 1
        self.down_until = math.inf
        self.untrusted = True
        self.last_error = error

    def answered(self) -> None:
        """It sent an event: up and working, whatever it did before."""
        self.failures = 0
        self.down_since = None

    def probe(self) -> str:
        """Ask the health service; returns "" when serving, else why not (a sentence).

        Runs without the scheduler's lock (it waits on the network).
        """
        try:
            status = self.conn.check_health(PROBE_TIMEOUT_S)
        except grpc.RpcError as exc:
            # A server without the health service still answered: it is up.
            if rpc_error_code(exc) is grpc.StatusCode.UNIMPLEMENTED:
                return ""
            return self.conn.explain(exc)
        return "" if status == "SERVING" else f"its health service says {status}"
