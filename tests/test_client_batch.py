"""The batch client against a real fseg server on loopback: the bank, resume, failover.

The server segments small real H&E images (WSSS4LUAD patches, copied to a
temporary slide root) with the ``stain`` extractor; the client runs in this
process. Uploads, tokens and admission limits are in test_client_batch_limits.py.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
from pathlib import Path

import pytest
from test_e2e_support import (
    client_env,
    copy_cmu,
    copy_images,
    csv_rows,
    dead_address,
    finished_jobs,
    real_server,
    spawn_client,
    temp_files,
    wait_until,
)

from fseg_client.cli import main

OUTPUTS = ("geojson", "labels.png", "overlay.png", "json")
BANK = "fseg-bank.safetensors"
pytestmark = pytest.mark.usefixtures("fast_retries")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's slide root: images/ (4 small PNGs) and cmu/ (3 copies of CMU-1)."""
    base = tmp_path_factory.mktemp("slides")
    copy_images(base / "images")
    copy_cmu(base / "cmu", 3)
    return base


@pytest.fixture(scope="module")
def server(root: Path, tmp_path_factory: pytest.TempPathFactory):
    with real_server(tmp_path_factory.mktemp("server"), "--slide-root", str(root)) as process:
        yield process


@pytest.fixture(scope="module")
def fitted(server, root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished batch of the four images: its own bank, every output."""
    out = tmp_path_factory.mktemp("fitted")
    assert segment(str(root / "images"), "--out", str(out), "--server", server.address) == 0
    return out


def segment(*args: str, progress: str = "none") -> int:
    return main(["segment", *args, "--progress", progress])


def copy_of(out: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(out, tmp_path / "out"))


def test_batch_fits_one_bank_writes_everything_and_resumes(server, root, tmp_path, capsys):
    out = tmp_path / "out"
    args = [str(root / "images"), "--out", str(out), "--server", server.address]
    jobs = len(finished_jobs(server))
    assert segment(*args, progress="auto") == 0  # captured stderr is no terminal: a plain log
    assert capsys.readouterr().err.count("fitting a concept bank") == 1
    bank = (out / BANK).read_bytes()
    for stem in ("00", "01", "10", "21"):
        summary = json.loads((out / f"{stem}.json").read_text())
        assert len(summary["request_fingerprint"]) == 64
        assert summary["client"]["server"] == server.address
        assert summary["bank_sha256"] == hashlib.sha256(bank).hexdigest()
        assert all((out / f"{stem}.{suffix}").is_file() for suffix in OUTPUTS)
        assert json.loads((out / f"{stem}.geojson").read_text())["type"] == "FeatureCollection"
    rows = csv_rows(out)
    assert [r["status"] for r in rows] == ["done"] * 4
    assert all(float(r["tissue_area_px2"]) > 0 for r in rows)
    assert not temp_files(out)
    assert sorted(finished_jobs(server)[jobs:]) == ["00.png", "01.png", "10.png", "21.png"]

    bank_mtime = (out / BANK).stat().st_mtime_ns
    assert segment(*args, progress="auto") == 0
    err = capsys.readouterr().err
    assert "fitting" not in err  # the bank is reused, not fitted again, and the user is told
    assert f"using the concept bank an earlier run fitted, {out / BANK}" in err
    assert (out / BANK).stat().st_mtime_ns == bank_mtime
    assert [r["status"] for r in csv_rows(out)] == ["skipped"] * 4
    assert len(finished_jobs(server)) == jobs + 4  # nothing was sent again

    (out / "10.labels.png").unlink()
    assert segment(*args) == 0
    assert finished_jobs(server)[jobs + 4 :] == ["10.png"]
    assert [r["status"] for r in csv_rows(out)] == ["skipped", "skipped", "done", "skipped"]


def test_other_k_than_the_saved_bank_is_refused(fitted, server, root, tmp_path, capsys):
    out = copy_of(fitted, tmp_path)
    args = ["--out", str(out), "--server", server.address, "--k", "5"]
    assert segment(str(root / "images"), *args) == 2
    assert "has no k=5" in capsys.readouterr().err


def test_changing_the_bank_redoes_the_slides(fitted, server, root, tmp_path) -> None:
    other = tmp_path / "other"  # a bank fitted on one image only: other centres
    one = str(root / "images" / "00.png")
    assert segment(one, "--out", str(other), "--server", server.address) == 0
    out = copy_of(fitted, tmp_path)
    jobs = len(finished_jobs(server))
    args = [str(root / "images"), "--out", str(out), "--server", server.address]
    assert segment(*args, "--concepts", str(other / BANK)) == 0
    assert len(finished_jobs(server)) == jobs + 4
    digest = hashlib.sha256((other / BANK).read_bytes()).hexdigest()
    for stem in ("00", "01", "10", "21"):
        assert json.loads((out / f"{stem}.json").read_text())["bank_sha256"] == digest


def test_dead_server_is_avoided(fitted, server, root, tmp_path) -> None:
    out = tmp_path / "out"
    servers = f"{dead_address()},{server.address}"
    args = ["--out", str(out), "--server", servers, "--concepts", str(fitted / BANK)]
    assert segment(str(root / "images"), *args) == 0
    assert {r["server"] for r in csv_rows(out)} == {server.address}
    assert [r["status"] for r in csv_rows(out)] == ["done"] * 4


def test_every_server_down_fails_the_batch_with_a_reason(root, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    args = ["--out", str(out), "--server", dead_address(), "--concepts", "demo", "--retries", "2"]
    assert segment(str(root / "images"), *args) == 1
    rows = csv_rows(out)
    assert all(r["status"] == "failed" and "no server answered" in r["error"] for r in rows)
    err = capsys.readouterr().err
    assert "fseg: error: 4 of 4 slides failed" in err and "Traceback" not in err


def test_ctrl_c_cancels_the_server_job_and_exits_130(fitted, server, root, tmp_path) -> None:
    out = tmp_path / "out"
    args = [str(root / "cmu"), "--out", str(out), "--server", server.address]
    client = spawn_client(*args, "--concepts", str(fitted / BANK), "--concurrency", "1",
                          "--progress", "lines", env=client_env())  # fmt: skip
    assert client.stderr is not None
    wait_until(lambda: " segment " in client.stderr.readline(), "a slide in flight", client)
    client.send_signal(signal.SIGINT)
    _, err = client.communicate(timeout=60)
    assert client.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    # A stopped slide is not a failed one: a cohort's count of failures stays true.
    statuses = [r["status"] for r in csv_rows(out)]
    assert "interrupted" in statuses and set(statuses) <= {"done", "interrupted"}
    # The CSV says which slides were left; the console says it once, not per slide.
    left = [r for r in csv_rows(out) if r["status"] == "interrupted"]
    assert all("interrupted before it finished" in r["error"] for r in left)
    assert "interrupted before it finished" not in err
    assert not temp_files(out)
    wait_until(server.idle, "the server to drop the cancelled job", limit=30)


def test_progress_lines_stream_each_stage(fitted, server, root, tmp_path) -> None:
    out = tmp_path / "out"
    slide = root / "images" / "01.png"
    client = spawn_client(str(slide), "--out", str(out), "--server", server.address,
                          "--concepts", str(fitted / BANK), "--progress", "lines")  # fmt: skip
    _, err = client.communicate(timeout=120)
    assert client.returncode == 0, err
    lines = err.splitlines()
    queued = next(i for i, line in enumerate(lines) if line.startswith("fseg: 01 queued ("))
    segmenting = lines.index("fseg: 01 segment 1/1 tiles")
    assert lines[-1].startswith("fseg: [1/1] done 01 (")
    assert queued < segmenting < len(lines) - 1


def test_a_batch_summary_that_cannot_be_written_is_not_claimed(
    fitted, server, root, tmp_path, capsys
) -> None:
    out = tmp_path / "out"
    (out / "batch-summary.csv").mkdir(parents=True)  # e.g. a file held open elsewhere
    args = ["--out", str(out), "--server", server.address, "--concepts", str(fitted / BANK)]
    assert segment(str(root / "images"), *args) == 1
    err = capsys.readouterr().err
    assert "batch summary" in err and "could not be written" in err
    assert len(list(out.glob("*.geojson"))) == 4  # the results themselves are all there
