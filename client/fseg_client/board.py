"""The batch's scoreboard: every slide's outcome, and ``batch-summary.csv`` kept current.

While a batch runs, each slide that finishes adds one line to the CSV, in the
order slides finish: a slide costs the same in a batch of ten as in a batch of
a million (rewriting the whole file per slide took 4 s at a million rows).
Lines are appended whole, each with one write, so a client killed at any
moment leaves a CSV whose lines are all complete. When the batch ends the CSV
is rewritten once, atomically, in input order, with a row for every slide,
those never run included.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from .atomic import write_bytes_atomic
from .inputs import SlideInput
from .progress import Progress
from .report import (
    CSV_NAME,
    FAILED,
    INTERRUPTED,
    PENDING,
    SlideOutcome,
    csv_columns,
    csv_header,
    csv_lines,
    write_batch_csv,
)

#: Statuses that get no line while the batch runs: the final rewrite gives them theirs
#: (a Ctrl-C on a batch of a million leaves a million slides unfinished at once).
_NOT_APPENDED = frozenset({PENDING, INTERRUPTED})


class Board:
    """Every slide's outcome so far; the batch CSV grows by a line as each one finishes."""

    def __init__(self, out_dir: Path, slides: Sequence[SlideInput], progress: Progress) -> None:
        self.out_dir, self.progress = out_dir, progress
        self._slides = slides
        self._outcomes: dict[str, SlideOutcome] = {}  # by stem, once recorded
        self._finished: list[SlideOutcome] = []  # in the order they finished
        self._columns: list[str] = []
        self._csv: TextIO | None = None
        self._lock = threading.Lock()
        self._csv_warned = False
        #: Why the last CSV write failed ("" when it succeeded).
        self.csv_error = ""

    def record(self, outcome: SlideOutcome, announce: bool = True) -> None:
        """Note one slide's outcome (and say so on the console when ``announce``)."""
        self.record_many([outcome])
        if announce:
            self.progress.finished(outcome)

    def record_many(self, outcomes: Sequence[SlideOutcome]) -> None:
        """Note several outcomes at once, in one write (slides a re-run skips)."""
        with self._lock:
            finished = []
            for outcome in outcomes:
                self._outcomes[outcome.slide.stem] = outcome
                if outcome.status not in _NOT_APPENDED:
                    finished.append(outcome)
            if finished:
                self._finished.extend(finished)
                self._guarded(lambda: self._append(finished))

    def close(self, reason: str, status: str = FAILED) -> list[SlideOutcome]:
        """Give slides still pending ``status`` and ``reason``; write the final CSV."""
        with self._lock:
            self._close_file()
            outcomes = [self._final(slide, status, reason) for slide in self._slides]
            self._guarded(lambda: write_batch_csv(self.out_dir, outcomes))
            return outcomes

    def _final(self, slide: SlideInput, status: str, reason: str) -> SlideOutcome:
        outcome = self._outcomes.get(slide.stem)
        if outcome is None or outcome.status == PENDING:
            return SlideOutcome(slide, status, error=reason)
        return outcome

    def warn_if_unwritten(self) -> None:
        """On a run that stopped early (no final report), say the CSV was not written."""
        if self.csv_error:
            self.progress.warn(f"fseg: the final {CSV_NAME} was not written ({self.csv_error})")

    def _append(self, outcomes: Sequence[SlideOutcome]) -> None:
        """Add the lines of ``outcomes``; a slide that brings a new area column (the
        first slide with areas, a first uncalibrated one) rewrites the file under the
        wider header, which happens a few times per batch at most."""
        columns = csv_columns(outcomes)
        if self._csv is None or not set(columns) <= set(self._columns):
            self._rewrite()
            return
        self._csv.write(csv_lines(self._columns, outcomes))
        self._csv.flush()  # one write of whole lines

    def _rewrite(self) -> None:
        """The finished slides so far, atomically, then kept open for appending."""
        self._close_file()
        self._columns = csv_columns(self._finished)
        text = csv_header(self._columns) + csv_lines(self._columns, self._finished)
        path = self.out_dir / CSV_NAME
        write_bytes_atomic(path, text.encode("utf-8"))
        # Buffered far beyond one line, so each flush is one write(2) of whole lines.
        self._csv = open(path, "a", encoding="utf-8", newline="", buffering=1 << 20)  # noqa: SIM115

    def _close_file(self) -> None:
        if self._csv is not None:
            handle, self._csv = self._csv, None
            with contextlib.suppress(OSError):
                handle.close()

    def _guarded(self, write) -> None:
        """Run one CSV write; a failure is said once and the batch goes on, since the
        results matter more than their index."""
        try:
            write()
            self.csv_error = ""
        except OSError as exc:
            self._close_file()
            self.csv_error = exc.strerror or str(exc)
            if not self._csv_warned:
                self._csv_warned = True
                self.progress.warn(f"fseg: cannot write {CSV_NAME} ({self.csv_error})")
