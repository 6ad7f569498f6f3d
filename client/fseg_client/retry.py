"""What to do after a failed attempt: retry, move the slide, or give up.

Kept free of threads and clocks so the decisions can be tested on their own.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import grpc

from .errors import ProtocolError, refused_certificate, rpc_details, rpc_error_code, too_large


class Action(str, Enum):
    """The scheduler's response to one failed attempt."""

    FAIL = "fail"  # the slide fails now with the server's message
    RETRY = "retry"  # back off, then try again (preferably on another server)
    SERVER_DOWN = "server_down"  # the server is unreachable: cool it down, requeue the slide
    MOVE = "move"  # the slide ran out of time here: try it on another server at once
    # This client refuses the server's TLS certificate: no attempt there can succeed
    # until the user changes the client's options, so the server is left out.
    UNTRUSTED = "untrusted"
    STOP = "stop"  # we cancelled the call ourselves (Ctrl-C)


@dataclass(frozen=True)
class Verdict:
    """An :class:`Action` and whether the attempt counts against the slide's retries."""

    action: Action
    counts: bool


# Codes that are the request's own fault: asking again gives the same answer.
FINAL_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }
)
# Codes where the same request may well succeed a little later.
TRANSIENT_CODES = frozenset(
    {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED, grpc.StatusCode.DATA_LOSS}
)


def classify(
    exc: BaseException, *, started: bool, slide_timeout: bool, cancelled_by_us: bool
) -> Verdict:
    """Decide what one failed attempt means.

    Args:
        exc: what the attempt raised.
        started: whether the server had answered anything for this slide. A
            server that cannot even be reached is the server's fault, not the
            slide's, so that attempt does not count against the slide.
        slide_timeout: whether the client set a per-slide deadline
            (``--slide-timeout``); only then does DEADLINE_EXCEEDED move the slide.
        cancelled_by_us: whether the client is shutting down (Ctrl-C).
    """
    if cancelled_by_us:
        return Verdict(Action.STOP, counts=False)
    if isinstance(exc, ProtocolError):
        return Verdict(Action.RETRY if exc.retryable else Action.FAIL, counts=True)
    code = rpc_error_code(exc)
    if code is None:
        # A local problem (unreadable slide file, full disk): retrying will not help.
        return Verdict(Action.FAIL, counts=True)
    if refused_certificate(exc):  # reported as UNAVAILABLE, but no outage
        return Verdict(Action.UNTRUSTED, counts=False)
    if code is grpc.StatusCode.UNAVAILABLE:
        return Verdict(Action.SERVER_DOWN, counts=started)
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return Verdict(Action.MOVE if slide_timeout else Action.FAIL, counts=True)
    details = rpc_details(exc)
    if too_large(code, details):  # the same message will be as large next time
        return Verdict(Action.FAIL, counts=True)
    if code in TRANSIENT_CODES or code is grpc.StatusCode.CANCELLED:
        # CANCELLED here came from the server (e.g. it drained on shutdown).
        return Verdict(Action.RETRY, counts=True)
    return Verdict(Action.FAIL, counts=True)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential back-off with jitter.

    Attributes:
        retries: attempts allowed after the first one, per slide (``--retries``).
        base_s: the first back-off, in seconds; each later one doubles.
        cap_s: the longest single back-off, in seconds.
    """

    retries: int = 4
    base_s: float = 2.0
    cap_s: float = 60.0

    def nominal_delay(self, failures: int) -> float:
        """Back-off in seconds after ``failures`` (>= 1) failures in a row, before jitter."""
        exponent = max(0, failures - 1)
        return min(self.cap_s, self.base_s * 2.0 ** min(exponent, 30))

    def delay(self, failures: int, rand: Callable[[], float] = random.random) -> float:
        """Back-off in seconds, "equal jitter": half fixed, half random.

        The random half keeps many clients that failed together from retrying in
        step; the fixed half guarantees the server some rest.
        """
        nominal = self.nominal_delay(failures)
        return nominal / 2 + rand() * nominal / 2

    def exhausted(self, attempts: int) -> bool:
        """Whether a slide that failed ``attempts`` counted attempts may not try again."""
        return attempts > self.retries

    def budget_s(self) -> float:
        """How long, in seconds, every server may stay unreachable before the batch gives up.

        The sum of the nominal back-offs of all retries: the time a single slide
        would have spent waiting had it retried against one dead server.
        """
        return sum(self.nominal_delay(i) for i in range(1, max(1, self.retries) + 1))
