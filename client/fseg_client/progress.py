"""Progress of a batch on stderr, in one of four styles (``--progress``).

* ``bars``: tqdm bars, one for the batch (slides) and a transient one per slide
  in flight (stage and tiles done / total).
* ``log``: one plain line per finished slide (what ``auto`` gives when stderr
  is not a terminal).
* ``lines``: the ``log`` lines, plus a plain line per slide on every stage change
  and at most every :data:`LINE_INTERVAL_S` seconds within a stage, e.g.
  ``fseg: CMU-1 segment 12/40 tiles``; flushed at once, so that a program
  reading stderr (QuPath's script log) can stream them.
* ``none`` (``--quiet``): nothing but failures and warnings.

``auto`` means ``bars`` on a terminal and ``log`` otherwise.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from tqdm import tqdm

from .report import DONE, FAILED, SKIPPED, SlideOutcome

BARS, LOG, LINES, NONE = "bars", "log", "lines", "none"
LINE_INTERVAL_S = 2.0
_DESC_WIDTH = 28
# Units of the stages the server reports; other stages are shown without one.
_UNITS = {
    "segment": "tiles",
    "fit": "slides",
    "upload": "MiB",
    "sample": "tiles",
    "crops": "windows",
}


def _short(name: str, width: int = _DESC_WIDTH) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def resolve_style(choice: str, stream: TextIO | None = None) -> str:
    """The style for a ``--progress`` choice: ``auto`` is bars on a terminal, else log.

    ``choice`` is one argparse has checked; :class:`Progress` refuses any other style.
    """
    if choice != "auto":
        return choice
    stream = stream or sys.stderr
    return BARS if bool(getattr(stream, "isatty", lambda: False)()) else LOG


def stage_line(name: str, stage: str, done: int, total: int) -> str:
    """``fseg: CMU-1 segment 12/40 tiles`` (no total when the server gave none)."""
    unit = _UNITS.get(stage, "")
    count = f"{done}/{total}" if total else f"{done}"
    return f"fseg: {name} {stage} {count}" + (f" {unit}" if unit else "")


class SlideBar:
    """One slide's progress (a bar, or stage lines); every method may be a no-op."""

    def __init__(self, progress: Progress, name: str, bar: tqdm | None, slot: int) -> None:
        self._progress, self._name, self._bar, self._slot = progress, name, bar, slot
        self._last_stage: str | None = None
        self._last_line_at = -float("inf")

    def queued(self, position: int) -> None:
        """The server accepted the job with ``position`` jobs ahead of it."""
        if self._bar is not None:
            self._bar.set_description_str(f"{_short(self._name)} queued ({position} ahead)")
        elif self._progress.style == LINES:
            self._line("queued", f"fseg: {self._name} queued ({position} ahead)")

    def stage(self, stage: str, done: int, total: int, unit: str = "tile") -> None:
        """A Progress event: ``done`` of ``total`` units (tiles) of ``stage``."""
        if self._bar is not None:
            self._bar.set_description_str(f"{_short(self._name)} {stage}", refresh=False)
            self._bar.unit = unit
            self._bar.total = total or None
            self._bar.n = done
            self._bar.refresh()
        elif self._progress.style == LINES:
            self._line(stage, stage_line(self._name, stage, done, total))

    def _line(self, stage: str, text: str) -> None:
        """Print ``text`` on a stage change, else at most every LINE_INTERVAL_S seconds."""
        now = self._progress.clock()
        if stage == self._last_stage and now - self._last_line_at < LINE_INTERVAL_S:
            return
        self._last_stage, self._last_line_at = stage, now
        self._progress.print_line(text)

    def uploading(self, sent: int, total: int) -> None:
        """Upload progress, in bytes; shown in MiB."""
        self.stage("upload", sent >> 20, total >> 20, unit="MiB")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self._progress._release(self._slot)


class Progress:
    """The batch's progress display; safe to use from worker threads.

    Args:
        total: slides in the batch.
        style: ``bars``, ``log``, ``lines`` or ``none`` (see the module docstring).
        stream: where to write (stderr).
        clock: seconds, for the rate of stage lines (``time.monotonic``).
    """

    def __init__(
        self,
        total: int,
        style: str = LOG,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if style not in (BARS, LOG, LINES, NONE):
            raise ValueError(style)
        self.stream = stream or sys.stderr
        self.style, self.total, self.clock = style, total, clock
        self.finished_count = 0
        self._lock = threading.Lock()
        self._free_slots: set[int] = set()
        self._next_slot = 1
        self._batch = (
            tqdm(total=total, desc="slides", unit="slide", file=self.stream, dynamic_ncols=True)
            if self.bars and total
            else None
        )

    @property
    def bars(self) -> bool:
        return self.style == BARS

    def print_line(self, text: str) -> None:
        """One line on the stream, flushed at once, never interleaved with another."""
        with self._lock:
            if self.bars:
                tqdm.write(text, file=self.stream)
            else:
                print(text, file=self.stream, flush=True)

    def note(self, text: str) -> None:
        """Information for the user (not shown with ``none``)."""
        if self.style != NONE:
            self.print_line(text)

    def warn(self, text: str) -> None:
        """A warning: shown in every style."""
        self.print_line(text)

    def slide_bar(self, name: str) -> SlideBar:
        """A transient bar (or stage lines) for a slide, or the bank fit, in flight."""
        if not self.bars:
            return SlideBar(self, name, None, 0)
        with self._lock:
            slot = min(self._free_slots) if self._free_slots else self._next_slot
            self._free_slots.discard(slot)
            self._next_slot = max(self._next_slot, slot + 1)
        bar = tqdm(
            total=None,
            desc=_short(name),
            unit="tile",
            leave=False,
            position=slot,
            file=self.stream,
            dynamic_ncols=True,
            mininterval=0.2,
        )
        return SlideBar(self, name, bar, slot)

    def _release(self, slot: int) -> None:
        with self._lock:
            self._free_slots.add(slot)

    def skipped_upfront(self, count: int) -> None:
        """Slides already complete from an earlier run: counted without a line each."""
        if not count:
            return
        with self._lock:
            self.finished_count += count
        if self._batch is not None:
            self._batch.update(count)
        were = "slide is" if self.total == 1 else "slides are"
        self.note(f"fseg: {count} of {self.total} {were} already done; skipping them")

    def finished(self, outcome: SlideOutcome) -> None:
        """Count a finished slide and say so in one line (failures in every style).

        A batch of one slide says why it failed in the final error instead.
        """
        with self._lock:
            self.finished_count += 1
            index = self.finished_count
        if self._batch is not None:
            self._batch.update(1)
        if outcome.status == FAILED:
            if self.total > 1:
                self.warn(self.line(outcome, index))
        elif self.style in (LOG, LINES):
            self.print_line(self.line(outcome, index))

    def line(self, outcome: SlideOutcome, index: int) -> str:
        """``fseg: [3/120] done A (gpu1:50051, 12.3 s)``."""
        head = f"fseg: [{index}/{self.total}] {outcome.status} {outcome.slide.stem}"
        if outcome.status == FAILED:
            return f"{head}: {outcome.error}"
        if outcome.status == SKIPPED:
            return f"{head} (already done)"
        if outcome.status == DONE:
            return f"{head} ({outcome.server}, {outcome.seconds:.1f} s)"
        return head

    def close(self) -> None:
        if self._batch is not None:
            self._batch.close()
            self._batch = None
