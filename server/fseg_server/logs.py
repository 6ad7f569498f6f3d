"""The server's log: plain text for a person, or one JSON object per line for a fleet.

A job's fields (job id, slide name, stage, outcome) ride on a context variable,
so every line logged while a job runs carries them, from whichever module logs
it, without each call site passing them along. Threads start with an empty
context: a job's own thread sets them again (see :func:`job_fields`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from datetime import datetime, timezone
from types import MappingProxyType

#: The fields a line may carry beyond time, level, logger and message.
JOB_FIELDS = ("job_id", "slide", "stage", "outcome")
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"

# Never mutated: each change sets a new mapping (contexts share the old one).
_fields: ContextVar[Mapping[str, str]] = ContextVar("fseg_log_fields", default=MappingProxyType({}))


@contextlib.contextmanager
def job_fields(**fields: str) -> Iterator[None]:
    """Lines logged in this thread inside the block carry ``fields`` (see JOB_FIELDS)."""
    token = _fields.set({**_fields.get(), **fields})
    try:
        yield
    finally:
        _fields.reset(token)


def set_stage(stage: str) -> None:
    """The stage the current job has reached; lines from now on carry it (until the
    enclosing :func:`job_fields` block ends)."""
    current = _fields.get()
    if current.get("stage") != stage:
        _fields.set({**current, "stage": stage})


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message and
    the job's fields where they apply; a traceback goes into ``error``, still on
    the one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_fields.get(),
        }
        for name in JOB_FIELDS:  # given with extra= on the call: they win
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure(level: str, log_format: str) -> None:
    """Send the process's log to stderr in ``log_format`` (one of FORMATS)."""
    handler = logging.StreamHandler(sys.stderr)
    formatter = JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
