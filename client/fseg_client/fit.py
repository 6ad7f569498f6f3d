"""The batch's own concept bank: fitted once on every slide, then sent with each request.

Servers keep no state between calls, so a bank fitted per slide would give
class 3 a different meaning on every slide. Fitting one bank on the whole batch
(FitConcepts) and sending its bytes with every SegmentRequest keeps the classes
comparable across the cohort, whichever server segments which slide.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path

import grpc

from fseg_proto import fseg_pb2

from .atomic import write_bytes_atomic
from .bankfile import BankSpec, bank_metadata, check_bank
from .calls import CallRegistry, Cancelled
from .connect import Connection
from .errors import EXIT_FAILED, ClientError, ProtocolError, rpc_error_code
from .inputs import SlideInput
from .options import RequestOptions
from .progress import Progress
from .remote_slides import SlideResolver
from .retry import Action, RetryPolicy, classify

# Refusals caused by one slide of the batch (unreadable, no resolution...).
_SLIDE_FAULTS = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND,
    }
)


#: Slides one FitConcepts call takes at most (the server's limit, fseg.v1).
MAX_FIT_SLIDES = 10_000


def fit_request(
    conn: Connection, slides: Sequence[SlideInput], options: RequestOptions, resolver: SlideResolver
) -> fseg_pb2.FitRequest:
    """A FitRequest over every slide, each referenced as ``conn``'s server can read it."""
    return fseg_pb2.FitRequest(
        slides=[resolver.slide_ref(conn, slide) for slide in slides],
        extractor=options.extractor,
        k=[options.k],
        slide_mpp=options.slide_mpp,
        target_mpp=options.target_mpp,
    )


def fit_on(
    conn: Connection,
    request: fseg_pb2.FitRequest,
    registry: CallRegistry,
    progress: Progress,
) -> tuple[bytes, dict[int, str]]:
    """Run FitConcepts on one server.

    Returns:
        the bank file's bytes, checked, and why each slide the server could
        not sample was left out, by its index in ``request.slides``.
    """
    bar = progress.slide_bar("concept bank")
    refused: dict[int, str] = {}
    try:
        registry.check()
        call = conn.stub.FitConcepts(request, metadata=conn.metadata)
        fitted = None
        with registry.track(call):
            for event in call:
                kind = event.WhichOneof("event")
                if kind == "progress":
                    bar.stage(event.progress.stage, event.progress.done, event.progress.total)
                elif kind == "skipped":
                    if event.skipped.index >= len(request.slides):
                        raise ProtocolError(f"FitConcepts left out slide {event.skipped.index}")
                    refused[event.skipped.index] = event.skipped.reason
                elif kind == "bank":
                    fitted = event.bank
    finally:
        bar.close()
    if fitted is None or not fitted.safetensors:
        raise ProtocolError("FitConcepts ended without a bank")
    digest = hashlib.sha256(fitted.safetensors).hexdigest()
    if fitted.sha256 and fitted.sha256.lower() != digest:
        raise ProtocolError(f"the bank failed its SHA-256 check ({digest} != {fitted.sha256})")
    return bytes(fitted.safetensors), refused


def fit_batch_bank(
    conns: Sequence[Connection],
    slides: Sequence[SlideInput],
    options: RequestOptions,
    resolver: SlideResolver,
    progress: Progress,
    policy: RetryPolicy,
    path: Path,
) -> tuple[BankSpec, dict[SlideInput, str]]:
    """Fit a bank on all ``slides`` (one server; the next one if it fails) and save it.

    The bank is written atomically to ``path`` so that a re-run reuses it.
    Slides the server could not read are left out of it; the rest still
    count. Returns the bank and why each slide left out was left out.

    Raises:
        ClientError: every server failed, or the fit was refused (exit code 1).
        KeyboardInterrupt: Ctrl-C; the call is cancelled.
    """
    if len(slides) > MAX_FIT_SLIDES:
        raise ClientError(
            f"a concept bank is fitted on at most {MAX_FIT_SLIDES:,} slides and this batch has "
            f"{len(slides):,}; fit one on a sample (fseg-server fit-concepts) and pass it "
            "with --concepts"
        )
    registry = resolver.registry
    tries = (policy.retries + 1) * len(conns)
    message = "no server was tried"
    untrusted: dict[str, str] = {}  # address: why this client refuses its certificate
    for attempt in range(tries):
        conn = conns[attempt % len(conns)]
        if conn.address in untrusted:
            continue
        if attempt and attempt % len(conns) == 0:  # every server failed once more: rest
            time.sleep(policy.delay(attempt // len(conns)))
        progress.note(
            f"fseg: fitting a concept bank (k={options.k}) on {len(slides)} "
            f"slide{'s' if len(slides) != 1 else ''} on {conn.address}"
        )
        try:
            request = fit_request(conn, slides, options, resolver)
            data, refused = fit_on(conn, request, registry, progress)
        except KeyboardInterrupt:
            registry.cancel_all()
            raise
        except (grpc.RpcError, ProtocolError, ClientError, Cancelled) as exc:
            stopping = registry.stopping.is_set() or isinstance(exc, Cancelled)
            verdict = classify(exc, started=True, slide_timeout=False, cancelled_by_us=stopping)
            if verdict.action is Action.STOP:
                raise KeyboardInterrupt from None
            message = conn.explain(exc)
            if verdict.action is Action.UNTRUSTED:  # no retry there can succeed
                untrusted[conn.address] = message
                if len(untrusted) == len(conns):
                    raise ClientError(" ".join(untrusted.values()), exit_code=EXIT_FAILED) from None
                progress.warn(f"fseg: leaving {conn.address} out of the batch: {message}")
                continue
            if verdict.action is Action.FAIL:
                raise _fit_failed(message, advise=rpc_error_code(exc) in _SLIDE_FAULTS) from None
            progress.note(f"fseg: {message.rstrip('.')}; trying again")
            continue
        check_bank(bank_metadata(data, "fitted by the server"), "fitted", options.k, "")
        write_bytes_atomic(path, data)
        n = len(refused)
        left_out = f" ({n} unreadable slide{'s' if n != 1 else ''} left out)" if refused else ""
        progress.note(f"fseg: concept bank saved to {path}{left_out}")
        return BankSpec(data=data, source=str(path)), {slides[i]: r for i, r in refused.items()}
    raise _fit_failed(f"gave up after {tries} attempts: {message}")


def _fit_failed(message: str, advise: bool = False) -> ClientError:
    advice = " (leave out the slide at fault, or pass --concepts)" if advise else ""
    return ClientError(
        f"fitting the batch's concept bank failed: {message.rstrip('.')}{advice}",
        exit_code=EXIT_FAILED,
    )
