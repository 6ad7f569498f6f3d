"""Progress: tqdm bars on a terminal, one plain line per finished slide otherwise.

The batch bar counts slides; each slide in flight gets its own transient bar
(stage and tiles done / total). When stderr is not a terminal, or with
``--quiet``, no bars are drawn: each finished slide is one log line on stderr.
"""

from __future__ import annotations

import sys
import threading
from typing import TextIO

from tqdm import tqdm

from .report import DONE, FAILED, SKIPPED, SlideOutcome

_DESC_WIDTH = 28


def _short(name: str, width: int = _DESC_WIDTH) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


class SlideBar:
    """One slide's bar; every method is a no-op when bars are off."""

    def __init__(self, progress: Progress, name: str, bar: tqdm | None, slot: int) -> None:
        self._progress, self._name, self._bar, self._slot = progress, name, bar, slot

    def queued(self, position: int) -> None:
        """The server accepted the job with ``position`` jobs ahead of it."""
        if self._bar is not None:
            self._bar.set_description_str(f"{_short(self._name)} queued ({position} ahead)")

    def stage(self, stage: str, done: int, total: int, unit: str = "tile") -> None:
        """A Progress event: ``done`` of ``total`` units (tiles) of ``stage``."""
        if self._bar is None:
            return
        self._bar.set_description_str(f"{_short(self._name)} {stage}", refresh=False)
        self._bar.unit = unit
        self._bar.total = total or None
        self._bar.n = done
        self._bar.refresh()

    def uploading(self, sent: int, total: int) -> None:
        """Upload progress, in bytes; shown in MiB."""
        self.stage("upload", sent >> 20, total >> 20, unit="MiB")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self._progress._release(self._slot)


class Progress:
    """The batch's progress display; safe to use from worker threads."""

    def __init__(self, total: int, bars: bool, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.bars = bars
        self.total = total
        self.finished_count = 0
        self._lock = threading.Lock()
        self._free_slots: set[int] = set()
        self._next_slot = 1
        self._batch = (
            tqdm(total=total, desc="slides", unit="slide", file=self.stream, dynamic_ncols=True)
            if bars and total
            else None
        )

    @staticmethod
    def wanted(quiet: bool, stream: TextIO | None = None) -> bool:
        """Whether to draw bars: not asked to be quiet, and stderr is a terminal."""
        stream = stream or sys.stderr
        return not quiet and bool(getattr(stream, "isatty", lambda: False)())

    def note(self, text: str) -> None:
        """A line of text for the user, printed above the bars."""
        if self.bars:
            tqdm.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def slide_bar(self, name: str) -> SlideBar:
        """A transient bar for a slide (or the bank fit) in flight."""
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
        self.note(f"fseg: {count} of {self.total} slides are already done; skipping them")

    def finished(self, outcome: SlideOutcome) -> None:
        """Count a finished slide and, without bars or on failure, say so in one line."""
        with self._lock:
            self.finished_count += 1
            index = self.finished_count
        if self._batch is not None:
            self._batch.update(1)
        if outcome.status == FAILED or not self.bars:
            self.note(self.line(outcome, index))

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
