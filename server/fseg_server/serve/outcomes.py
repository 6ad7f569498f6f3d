"""How a job ended, said once: one log line with the job's fields, and the metrics.

A job's call thread holds its :class:`JobRecord` around the whole call; the
job's own thread (see ``streaming.run_job``) enters :meth:`JobRecord.job_thread`,
so that every line it logs carries the job id, the slide and the stage, and
follows its progress through :meth:`JobRecord.following`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

from ..errors import Cancelled, FsegError
from ..logs import job_fields, set_stage
from ..pipeline.progress import Progress
from .metrics import NoMetrics

log = logging.getLogger("fseg.server")
DONE, FAILED, CANCELLED = "done", "failed", "cancelled"


class JobRecord:
    """One admitted job: what it is, how far it got, and (once done) its summary."""

    def __init__(self, job_id: str, slide: str) -> None:
        self.job_id, self.slide = job_id, slide
        self.stage = "queued"
        self.summary: dict | None = None
        self.stopped = ""  # why the job's thread stopped early, in its words
        self.began = time.monotonic()

    @property
    def fields(self) -> dict[str, str]:
        return {"job_id": self.job_id, "slide": self.slide, "stage": self.stage}

    def following(self, progress: Progress) -> Progress:
        """``progress``, keeping the record's (and the log's) stage up to date."""

        def follow(stage: str, done: int, total: int) -> None:
            if stage != self.stage:
                self.stage = stage
                set_stage(stage)
            progress(stage, done, total)

        return follow

    @contextlib.contextmanager
    def job_thread(self, stage: str) -> Iterator[None]:
        """Around the work in the job's own thread, which begins at ``stage``: its
        lines carry the job's fields."""
        self.stage = stage
        with job_fields(**self.fields):
            try:
                yield
            except Cancelled as exc:  # the call may be gone: keep how far it got
                self.stopped = str(exc)
                raise


@contextlib.contextmanager
def recorded(
    job_id: str, slide: str, metrics: NoMetrics, *, counts_as_slide: bool = True
) -> Iterator[JobRecord]:
    """A job's record; when the block ends, its outcome is logged and counted.

    Exceptions pass through unchanged; gRPC closing the call's stream (a caller
    that went away) ends the block with GeneratorExit, which counts as cancelled.
    """
    record = JobRecord(job_id, slide)
    try:
        yield record
    except BaseException as exc:
        outcome, reason = _ending(exc, record)
        _say(record, outcome, reason)
        if counts_as_slide:
            metrics.job_ended(outcome, None)
        raise
    _say(record, DONE, "")
    if counts_as_slide:
        metrics.job_ended(DONE, record.summary)


def _ending(exc: BaseException, record: JobRecord) -> tuple[str, str]:
    """(outcome, reason in one sentence) of a job that ended with ``exc``."""
    if isinstance(exc, Cancelled):
        return CANCELLED, str(exc)
    if isinstance(exc, GeneratorExit):
        return CANCELLED, record.stopped or "the caller went away"
    if isinstance(exc, FsegError):
        # Sent away while draining (UNAVAILABLE) is not the slide's fault.
        return (CANCELLED if exc.status == "UNAVAILABLE" else FAILED), str(exc)
    return FAILED, f"internal error ({type(exc).__name__}: {exc})"


def _say(record: JobRecord, outcome: str, reason: str) -> None:
    extra = {**record.fields, "outcome": outcome}
    if outcome == DONE:
        # A slide's own seconds (its summary's), else the job's from admission.
        timings = (record.summary or {}).get("timings_s", {})
        seconds = timings.get("total", time.monotonic() - record.began)
        log.info("%s done: %s (%.1f s)", record.job_id, record.slide, seconds, extra=extra)
    elif outcome == CANCELLED:
        log.info("%s stopped: %s: %s", record.job_id, record.slide, reason, extra=extra)
    else:
        log.warning("%s failed: %s: %s", record.job_id, record.slide, reason, extra=extra)
