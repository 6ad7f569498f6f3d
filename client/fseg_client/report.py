"""What happened to each slide, and the batch summary CSV.

One row per slide: status, server, attempts, error, seconds, tissue area and one
column per class area, taken from the slide's summary JSON (``classes`` entries
carry ``area_um2``, or ``area_px2`` for uncalibrated images).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .atomic import write_bytes_atomic
from .inputs import SlideInput

DONE, SKIPPED, FAILED, PENDING = "done", "skipped", "failed", "pending"
#: A slide the user's Ctrl-C (or SIGTERM) stopped: not a failure, and the next run resumes it.
INTERRUPTED = "interrupted"
INTERRUPTED_REASON = "interrupted before it finished (run the same command again to resume)"
CSV_NAME = "batch-summary.csv"
#: ``job_id`` is the server's id of the slide's last attempt: search the server's log for it.
BASE_COLUMNS = ["slide", "path", "status", "server", "job_id", "attempts", "error", "seconds"]
_UNITS = ("um2", "px2")


@dataclass
class SlideOutcome:
    """The fate of one slide in this run.

    Attributes:
        seconds: wall time from the slide's first attempt to its last, in s.
        summary: the slide's summary JSON (done and skipped slides).
        job_id: the server's id of the last attempt ("" if no server accepted one).
    """

    slide: SlideInput
    status: str = PENDING
    server: str = ""
    attempts: int = 0
    error: str = ""
    seconds: float = 0.0
    summary: dict | None = None
    job_id: str = ""


def _job_id(outcome: SlideOutcome) -> str:
    """The attempt's job id, or for a slide skipped as done, the one its summary records."""
    if outcome.job_id or not outcome.summary:
        return outcome.job_id
    client = outcome.summary.get("client")
    return str(client.get("job_id", "")) if isinstance(client, dict) else ""


def _areas(summary: dict | None) -> dict[str, float]:
    """``{"tissue_area_um2": ..., "area_um2:Stroma": ...}`` from a summary."""
    if not summary:
        return {}
    areas: dict[str, float] = {}
    tissue = summary.get("tissue")
    if isinstance(tissue, dict):
        for unit in _UNITS:
            if isinstance(tissue.get(f"area_{unit}"), int | float):
                areas[f"tissue_area_{unit}"] = float(tissue[f"area_{unit}"])
    classes = summary.get("classes")
    for entry in classes if isinstance(classes, list) else []:
        if not isinstance(entry, dict):
            continue
        name = str(entry.get("name", entry.get("index", "?")))
        for unit in _UNITS:
            if isinstance(entry.get(f"area_{unit}"), int | float):
                areas[f"area_{unit}:{name}"] = float(entry[f"area_{unit}"])
    return areas


def csv_columns(outcomes: Iterable[SlideOutcome]) -> list[str]:
    """The batch summary's columns: the base ones, then tissue, then classes in the
    order they first appear, so a bank's class order is kept."""
    seen: dict[str, None] = {}
    for outcome in outcomes:
        for column in _areas(outcome.summary):
            seen.setdefault(column, None)
    tissue = [c for c in seen if c.startswith("tissue_")]
    classes = [c for c in seen if not c.startswith("tissue_")]
    return BASE_COLUMNS + tissue + classes


def csv_lines(columns: Sequence[str], outcomes: Iterable[SlideOutcome]) -> str:
    """CSV lines (no header) of ``outcomes`` under ``columns`` (the base columns, then
    area columns); cells of area columns a slide lacks are empty."""
    area_columns = columns[len(BASE_COLUMNS) :]
    no_areas = [""] * len(area_columns)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for outcome in outcomes:
        cells = [
            outcome.slide.stem,
            str(outcome.slide.path),
            outcome.status,
            outcome.server,
            _job_id(outcome),
            str(outcome.attempts),
            outcome.error,
            f"{outcome.seconds:.2f}",
        ]
        areas = _areas(outcome.summary) if outcome.summary else {}
        # Most rows of a large batch have no areas (failed, or never run): no lookups.
        cells += (
            [f"{areas[c]:.3f}" if c in areas else "" for c in area_columns] if areas else no_areas
        )
        writer.writerow(cells)
    return buffer.getvalue()


def csv_text(outcomes: Sequence[SlideOutcome]) -> str:
    """The batch summary as CSV text, header first."""
    columns = csv_columns(outcomes)
    return csv_header(columns) + csv_lines(columns, outcomes)


def csv_header(columns: Sequence[str]) -> str:
    """The header line of a CSV with ``columns``."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(columns)
    return buffer.getvalue()


def write_batch_csv(out_dir: Path, outcomes: Sequence[SlideOutcome]) -> Path:
    """Write ``<out_dir>/batch-summary.csv`` atomically; returns its path."""
    path = out_dir / CSV_NAME
    write_bytes_atomic(path, csv_text(outcomes).encode("utf-8"))
    return path


def counts(outcomes: Sequence[SlideOutcome]) -> dict[str, int]:
    """Slides per status."""
    tally = {DONE: 0, SKIPPED: 0, FAILED: 0, PENDING: 0, INTERRUPTED: 0}
    for outcome in outcomes:
        tally[outcome.status] = tally.get(outcome.status, 0) + 1
    return tally
