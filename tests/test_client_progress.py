"""``--progress``: which style each choice gives, and the plain stage lines QuPath streams.

Pure client logic: the stream is a StringIO and the clock is a counter the test
sets, so no time passes. The same lines from a real server are checked in
test_client_batch.py.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from fseg_client.cli import build_parser
from fseg_client.inputs import SlideInput
from fseg_client.progress import LINE_INTERVAL_S, Progress, resolve_style
from fseg_client.report import DONE, FAILED, SlideOutcome


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def progress_args(*extra: str):
    return build_parser().parse_args(["segment", "a.svs", "--out", "o", *extra]).progress


def test_auto_is_bars_on_a_terminal_and_a_log_elsewhere() -> None:
    assert resolve_style("auto", Terminal()) == "bars"
    assert resolve_style("auto", io.StringIO()) == "log"
    assert resolve_style("lines", Terminal()) == "lines"
    assert resolve_style("bars", io.StringIO()) == "bars"


def test_quiet_is_progress_none() -> None:
    assert progress_args() == "auto"
    assert progress_args("--quiet") == "none"
    assert progress_args("--progress", "lines") == "lines"
    with pytest.raises(SystemExit):
        progress_args("--progress", "loud")


def test_lines_on_every_stage_change_and_at_most_every_interval() -> None:
    stream, clock = io.StringIO(), Clock()
    bar = Progress(40, "lines", stream, clock).slide_bar("CMU-1")
    bar.queued(2)
    bar.stage("plan", 1, 1)
    bar.stage("segment", 1, 40)
    clock.now += LINE_INTERVAL_S / 2
    bar.stage("segment", 5, 40)  # too soon after the last line of this stage
    clock.now += LINE_INTERVAL_S / 2
    bar.stage("segment", 12, 40)
    bar.stage("vectorize", 0, 1)  # a new stage: at once
    bar.uploading(3 << 20, 0)
    assert stream.getvalue().splitlines() == [
        "fseg: CMU-1 queued (2 ahead)",
        "fseg: CMU-1 plan 1/1",
        "fseg: CMU-1 segment 1/40 tiles",
        "fseg: CMU-1 segment 12/40 tiles",
        "fseg: CMU-1 vectorize 0/1",
        "fseg: CMU-1 upload 3 MiB",
    ]


def outcome(status: str, error: str = "") -> SlideOutcome:
    slide = SlideInput(Path("/s/CMU-1.svs"), "CMU-1")
    return SlideOutcome(slide, status, server="h:1", seconds=1.5, error=error)


@pytest.mark.parametrize(
    ("style", "expected"),
    [
        ("log", ["fseg: [1/2] done CMU-1 (h:1, 1.5 s)", "fseg: [2/2] failed CMU-1: no."]),
        ("lines", ["fseg: [1/2] done CMU-1 (h:1, 1.5 s)", "fseg: [2/2] failed CMU-1: no."]),
        ("none", ["fseg: [2/2] failed CMU-1: no."]),
    ],
)
def test_finished_slides_per_style(style: str, expected: list[str]) -> None:
    stream = io.StringIO()
    progress = Progress(2, style, stream)
    progress.note("fseg: fitting a concept bank")
    progress.slide_bar("CMU-1").stage("segment", 1, 2)
    progress.finished(outcome(DONE))
    progress.finished(outcome(FAILED, "no."))
    lines = stream.getvalue().splitlines()
    assert [line for line in lines if line.startswith("fseg: [")] == expected
    assert ("fseg: CMU-1 segment 1/2 tiles" in lines) == (style == "lines")
    assert ("fseg: fitting a concept bank" in lines) == (style != "none")


def test_warnings_show_even_with_none() -> None:
    stream = io.StringIO()
    Progress(1, "none", stream).warn("fseg: cannot write batch-summary.csv")
    assert stream.getvalue() == "fseg: cannot write batch-summary.csv\n"
