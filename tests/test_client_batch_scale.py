"""Batches of any size: a slide costs the same in a batch of ten as in a batch of a
million, and SIGTERM ends a large batch as it ends a small one.

The batch CSV grows by a line as each slide finishes instead of being rewritten
whole (at a million rows one rewrite took 4 s, after every slide), and the
client's set-up does per-slide work without per-slide threads.
"""

from __future__ import annotations

import csv
import io
import signal
from pathlib import Path

import pytest
from test_e2e_support import (
    client_env,
    copy_images,
    csv_rows,
    real_server,
    spawn_client,
    temp_files,
    wait_until,
)

from fseg_client.board import Board
from fseg_client.inputs import SlideInput
from fseg_client.progress import Progress
from fseg_client.report import CSV_NAME, DONE, FAILED, INTERRUPTED, SlideOutcome
from servers import run_server_cli

SUMMARY = {
    "tissue": {"area_um2": 10.0},
    "classes": [{"name": "Stroma", "area_um2": 6.0}, {"name": "Tumour", "area_um2": 4.0}],
}


def slides(count: int) -> list[SlideInput]:
    return [SlideInput(Path(f"/srv/s{i:05d}.svs"), f"s{i:05d}", local=False) for i in range(count)]


def board_of(tmp_path: Path, count: int) -> tuple[Board, list[SlideInput]]:
    batch = slides(count)
    return Board(tmp_path, batch, Progress(count, "none")), batch


def lines(tmp_path: Path) -> list[str]:
    return (tmp_path / CSV_NAME).read_text().splitlines()


def test_each_finished_slide_appends_its_line_at_once_without_rewriting(tmp_path: Path) -> None:
    board, batch = board_of(tmp_path, 10_000)
    board.record(SlideOutcome(batch[0], DONE, summary=SUMMARY), announce=False)
    inode = (tmp_path / CSV_NAME).stat().st_ino
    for n, slide in enumerate(batch[1:200], start=2):
        board.record(SlideOutcome(slide, DONE, summary=SUMMARY), announce=False)
        assert len(lines(tmp_path)) == 1 + n  # the header, then one line per finished slide
    # Appended in place: the file was never replaced by a rewrite of the whole batch.
    assert (tmp_path / CSV_NAME).stat().st_ino == inode
    rows = list(csv.DictReader(io.StringIO((tmp_path / CSV_NAME).read_text())))
    assert [r["slide"] for r in rows] == [s.stem for s in batch[:200]]
    assert rows[-1]["area_um2:Tumour"] == "4.000"


def test_a_slide_with_new_area_columns_widens_the_header(tmp_path: Path) -> None:
    board, batch = board_of(tmp_path, 5)
    board.record(SlideOutcome(batch[0], FAILED, error="unreadable"), announce=False)
    board.record(SlideOutcome(batch[1], DONE, summary=SUMMARY), announce=False)
    rows = list(csv.DictReader(io.StringIO((tmp_path / CSV_NAME).read_text())))
    assert rows[0]["status"] == FAILED and rows[0]["area_um2:Stroma"] == ""
    assert rows[1]["tissue_area_um2"] == "10.000"


def test_the_final_summary_lists_every_slide_in_input_order(tmp_path: Path) -> None:
    board, batch = board_of(tmp_path, 6)
    board.record(SlideOutcome(batch[4], DONE, summary=SUMMARY), announce=False)
    board.record(SlideOutcome(batch[1], FAILED, error="unreadable"), announce=False)
    board.close("interrupted", INTERRUPTED)
    rows = list(csv.DictReader(io.StringIO((tmp_path / CSV_NAME).read_text())))
    assert [r["slide"] for r in rows] == [s.stem for s in batch]
    assert [r["status"] for r in rows] == [
        INTERRUPTED,
        FAILED,
        *[INTERRUPTED] * 2,
        DONE,
        "interrupted",
    ]
    assert not temp_files(tmp_path)


def test_interrupted_slides_get_their_lines_only_from_the_final_rewrite(tmp_path: Path) -> None:
    """Ctrl-C on a batch of a million leaves a million slides at once: noting them
    must not write a million lines one by one."""
    board, batch = board_of(tmp_path, 4)
    board.record(SlideOutcome(batch[0], DONE, summary=SUMMARY), announce=False)
    board.record_many([SlideOutcome(s, INTERRUPTED) for s in batch[1:]])
    assert len(lines(tmp_path)) == 2


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bank")
    images = copy_images(folder / "images", ("00",))
    path = folder / "stain.safetensors"
    fitted = run_server_cli("fit-concepts", str(images[0]), "--k", "8", "--out", str(path))
    assert fitted.returncode == 0, fitted.stderr
    return path


@pytest.mark.slow
def test_sigterm_ends_a_batch_of_fifty_thousand_slides_and_keeps_its_summary(
    bank: Path, tmp_path: Path
) -> None:
    """Fifty thousand server-side paths the server refuses (none lies under its slide
    root): the client works through them one by one until SIGTERM stops it."""
    root = tmp_path / "root"
    root.mkdir()
    manifest = tmp_path / "manifest.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "name"])
        writer.writerows([f"/elsewhere/s{i:05d}.svs", f"s{i:05d}"] for i in range(50_000))
    out = tmp_path / "out"
    with real_server(tmp_path / "server", "--slide-root", str(root)) as server:
        client = spawn_client("--manifest", str(manifest), "--upload", "never",
                              "--concepts", str(bank), "--server", server.address,
                              "--out", str(out), "--progress", "lines",
                              env=client_env())  # fmt: skip
        assert client.stderr is not None
        wait_until(lambda: "[20/50000]" in client.stderr.readline(), "20 slides", client)
        client.send_signal(signal.SIGTERM)
        _, err = client.communicate(timeout=120)  # a hang guard, not a speed limit
    assert client.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    rows = csv_rows(out)
    assert len(rows) == 50_000
    statuses = {r["status"] for r in rows}
    assert statuses == {FAILED, INTERRUPTED}
    assert [r["slide"] for r in rows[:3]] == ["s00000", "s00001", "s00002"]
    assert not temp_files(out)
