"""The client killed (SIGKILL) mid-batch, then run again with the same command.

Whatever the kill left under a final name must be whole (identical to an
uninterrupted run), and the second run must finish the batch without sending
the finished slides to the server again.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from PIL import Image
from test_e2e_support import (
    copy_cmu,
    copy_images,
    csv_rows,
    finished_jobs,
    output_digests,
    real_server,
    spawn_client,
    temp_files,
    wait_until,
)


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cohort")
    copy_cmu(root, 3)
    copy_images(root, ("00", "01", "10", "21", "25"))
    return root


@pytest.fixture(scope="module")
def server(batch: Path, tmp_path_factory: pytest.TempPathFactory):
    with real_server(tmp_path_factory.mktemp("server"), "--slide-root", str(batch)) as process:
        yield process


def finished(out: Path) -> set[str]:
    return {p.stem for p in out.glob("*.json")}


def readable(path: Path) -> bool:
    """Whether a final-name file parses as what its name says."""
    if path.name.endswith(".png"):
        with Image.open(path) as image:
            image.load()
    elif path.suffix in (".json", ".geojson"):
        json.loads(path.read_text())
    return True


@pytest.mark.slow
def test_killed_client_resumes_without_redoing_or_truncating(batch, server, tmp_path) -> None:
    out = tmp_path / "out"
    args = [str(batch), "--out", str(out), "--server", server.address, "--progress", "none"]
    client = spawn_client(*args)
    wait_until(lambda: len(finished(out)) >= 2, "two finished slides", client)
    client.send_signal(signal.SIGKILL)
    client.wait()
    first = finished(out)
    assert len(first) < 8, "the batch should still have been running"
    survivors = output_digests(out)
    assert all(readable(out / name) for name in survivors)
    mtimes = {name: (out / name).stat().st_mtime_ns for name in survivors}

    jobs = len(finished_jobs(server))
    again = spawn_client(*args)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    rows = {r["slide"]: r["status"] for r in csv_rows(out)}
    assert len(rows) == 8 and all(rows[s] == "skipped" for s in first)
    assert all(rows[s] == "done" for s in rows.keys() - first)
    redone = {name.rsplit(".", 1)[0] for name in finished_jobs(server)[jobs:]}
    assert redone == rows.keys() - first  # nothing finished was sent again
    kept = {n: t for n, t in mtimes.items() if n.split(".", 1)[0] in first | {"fseg-bank"}}
    assert all((out / n).stat().st_mtime_ns == t for n, t in kept.items())  # not rewritten
    assert not temp_files(out)  # the second run removed what the killed one left

    reference = tmp_path / "reference"
    whole = spawn_client(str(batch), "--out", str(reference), "--server", server.address)
    _, err = whole.communicate(timeout=600)
    assert whole.returncode == 0, err
    expected = output_digests(reference)
    for name, digest in survivors.items():  # what the kill left was whole
        if not name.endswith(".json"):  # summaries hold timings
            assert expected[name] == digest, name
    final = output_digests(out)
    assert {n: d for n, d in final.items() if not n.endswith(".json")} == {
        n: d for n, d in expected.items() if not n.endswith(".json")
    }


def test_a_terminated_client_stops_like_ctrl_c_and_says_so_in_its_csv(
    batch, server, tmp_path
) -> None:
    """SIGTERM (QuPath's cancel button, `kill`) is not SIGKILL: the client takes
    Ctrl-C's way out (exit 130) and finishes the batch CSV, marking what it left."""
    out = tmp_path / "out"
    args = [str(batch), "--out", str(out), "--server", server.address, "--progress", "none"]
    client = spawn_client(*args)
    wait_until(lambda: len(finished(out)) >= 1, "a finished slide", client)
    client.send_signal(signal.SIGTERM)
    _, err = client.communicate(timeout=120)
    assert client.returncode == 130, err
    assert "interrupted" in err
    rows = csv_rows(out)
    assert any(r["status"] == "done" for r in rows)
    unfinished = [r for r in rows if r["status"] != "done"]
    assert unfinished and all("interrupted" in r["error"] for r in unfinished)
    assert not temp_files(out)
