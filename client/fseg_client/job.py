"""One attempt at one slide on one server: reference, Segment stream, files in place."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from fseg_proto import fseg_pb2

from . import __version__
from .bankfile import BankSpec
from .calls import CallRegistry
from .connect import Connection
from .errors import ProtocolError
from .inputs import SlideInput
from .options import RequestOptions
from .outputs import finish_slide, parse_server_summary
from .progress import Progress, SlideBar
from .remote_slides import SlideResolver
from .results import ResultAssembler


@dataclass
class SlideTask:
    """A slide waiting for (or going through) its attempts.

    Attributes:
        fingerprint: the request fingerprint stored in the summary.
        identity: the slide identity the fingerprint was built from.
        attempts: failed attempts that count against ``--retries``.
        tries: attempts made, counted or not.
        not_before: monotonic time (s) before which no worker may take it.
        avoid: addresses that should not get it again if another server can.
        first_started: monotonic time (s) of its first attempt.
    """

    slide: SlideInput
    fingerprint: str
    identity: dict
    attempts: int = 0
    tries: int = 0
    not_before: float = 0.0
    avoid: set[str] = field(default_factory=set)
    first_started: float | None = None
    last_error: str = ""


@dataclass
class BatchContext:
    """What every attempt of the batch shares."""

    out_dir: Path
    options: RequestOptions
    bank: BankSpec
    resolver: SlideResolver
    registry: CallRegistry
    progress: Progress
    slide_timeout_s: float | None = None
    template: fseg_pb2.SegmentRequest = field(init=False)

    def __post_init__(self) -> None:
        self.template = self.options.to_request(self.bank.name, self.bank.data)


@dataclass
class AttemptState:
    """What the scheduler learns from an attempt while it runs."""

    started: bool = False  # the Segment stream delivered at least one event
    job_id: str = ""  # the server's id of the job, once it accepted it
    on_event: Callable[[], None] = lambda: None


def consume_events(
    events: Iterable[fseg_pb2.SegmentEvent],
    assembler: ResultAssembler,
    bar: SlideBar,
    state: AttemptState,
) -> str:
    """Read a Segment stream to its end; returns the summary's JSON text."""
    summary = None
    for event in events:
        state.started = True
        state.on_event()
        kind = event.WhichOneof("event")
        if kind == "accepted":
            state.job_id = event.accepted.job_id
            bar.queued(event.accepted.queue_position)
        elif kind == "progress":
            bar.stage(event.progress.stage, event.progress.done, event.progress.total)
        elif kind == "chunk":
            c = event.chunk
            assembler.add(c.file, c.offset, c.data, c.last, c.total_bytes, c.sha256)
        elif kind == "summary":
            summary = event.summary.json
    if summary is None:
        raise ProtocolError("the stream ended without a summary")
    return summary


def _warnings(summary: dict) -> list[str]:
    """The server's warnings about a result (a list of sentences), if it sent any."""
    said = summary.get("warnings")
    return [str(w) for w in said] if isinstance(said, list) else []


def _file_info(slide: SlideInput) -> dict:
    """Size and mtime of a local slide, so a later run can reuse a digest."""
    if not slide.local:
        return {}
    stat = slide.path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def segment_slide(
    ctx: BatchContext, task: SlideTask, conn: Connection, state: AttemptState
) -> dict:
    """Segment ``task``'s slide on ``conn``'s server and put its files in place.

    Returns:
        The summary written to ``<stem>.json``.

    Raises:
        grpc.RpcError, ProtocolError, ClientError, Cancelled: the attempt failed;
        no output file of this attempt is left behind.
    """
    slide = task.slide
    bar = ctx.progress.slide_bar(slide.stem)
    assembler = ResultAssembler(ctx.out_dir, slide.stem)
    began = time.monotonic()
    try:
        ref = ctx.resolver.slide_ref(conn, slide, bar.uploading)
        upload_s = time.monotonic() - began
        request = fseg_pb2.SegmentRequest()
        request.CopyFrom(ctx.template)
        request.slide.CopyFrom(ref)
        ctx.registry.check()
        call = conn.stub.Segment(request, metadata=conn.metadata, timeout=ctx.slide_timeout_s)
        with ctx.registry.track(call):
            text = consume_events(call, assembler, bar, state)
        assembler.require(ctx.options.output_files)
        server_summary = parse_server_summary(text)
        ended = time.monotonic()
        client_info = {
            "server": conn.address,
            "job_id": state.job_id,
            "attempts": task.tries,
            "input": str(slide.path),
            "slide": task.identity,
            "file": _file_info(slide),
            "reference": "sha256" if ref.HasField("sha256") else "path",
            "bank": ctx.bank.source,  # the server knows a bank sent inline by its digest only
            "transfer_seconds": round(upload_s, 3),
            "segment_seconds": round(ended - began - upload_s, 3),
            "seconds": round(ended - (task.first_started or began), 3),
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "client_version": __version__,
        }
        summary = finish_slide(
            assembler, ctx.out_dir, slide.stem, server_summary, task.fingerprint, client_info
        )
        for warning in _warnings(summary):
            ctx.progress.warn(f"fseg: warning: {slide.stem}: {warning}")
        return summary
    finally:
        assembler.discard_all()
        bar.close()
