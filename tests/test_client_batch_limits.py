"""The batch client against real servers that limit it: uploads only, a token, a queue of one.

Small real H&E images (WSSS4LUAD patches) are the slides; each server is a real
``fseg-server serve`` on loopback, started once for the module.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from test_e2e_support import (
    copy_images,
    csv_rows,
    finished_jobs,
    real_server,
)

from fseg_client.cli import main

TOKEN = "s3cret-token"
BANK = "fseg-bank.safetensors"
pytestmark = pytest.mark.usefixtures("fast_retries")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    copy_images(folder)
    return folder


@pytest.fixture(scope="module")
def upload_server(tmp_path_factory: pytest.TempPathFactory):
    """Takes uploads, reads no path (no --slide-root), wants a bearer token."""
    work = tmp_path_factory.mktemp("upload-server")
    with real_server(work, "--upload-dir", str(work / "uploads"), token=TOKEN) as process:
        yield process


@pytest.fixture(scope="module")
def busy_server(images: Path, tmp_path_factory: pytest.TempPathFactory):
    """Admits one job at a time: a second one gets RESOURCE_EXHAUSTED at once."""
    work = tmp_path_factory.mktemp("busy-server")
    args = ["--slide-root", str(images), "--max-queued-jobs", "1", "--max-running-jobs", "1"]
    with real_server(work, *args) as process:
        yield process


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("token") / "token"
    path.write_text(TOKEN + "\n")
    return path


@pytest.fixture(scope="module")
def bank(busy_server, images: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bank fitted by the real server on the images."""
    out = tmp_path_factory.mktemp("bank")
    assert segment(str(images / "00.png"), "--out", str(out), "--server", busy_server.address) == 0
    return out / BANK


def segment(*args: str) -> int:
    return main(["segment", *args, "--quiet"])


def test_upload_when_the_server_cannot_read_the_path(upload_server, images, token_file, tmp_path):
    out = tmp_path / "out"
    args = ["--out", str(out), "--server", upload_server.address, "--token-file", str(token_file)]
    assert segment(str(images), *args) == 0  # the bank is fitted on uploads too
    digests = {hashlib.sha256(p.read_bytes()).hexdigest() for p in images.glob("*.png")}
    stored = upload_server.log.parent / "uploads" / "objects"
    assert {p.name.split(".")[0] for p in stored.rglob("*.png")} == digests  # each sent once
    assert [r["status"] for r in csv_rows(out)] == ["done"] * 4
    client = json.loads((out / "00.json").read_text())["client"]
    assert client["reference"] == "sha256" and client["bank"] == str(out / BANK)
    # Stored under their hashes, the uploads are still logged by the names users know.
    names = {p.name for p in images.glob("*.png")}
    assert names <= set(finished_jobs(upload_server))

    never = tmp_path / "never"
    assert segment(str(images), *args[2:], "--out", str(never), "--upload", "never") == 1
    error = csv_rows(never)[0]["error"]
    assert "refused access" in error and "started without --slide-root" in error


def test_an_uploaded_slide_keeps_its_name(upload_server, images, token_file, tmp_path) -> None:
    out = tmp_path / "out"
    args = ["--out", str(out), "--server", upload_server.address, "--token-file", str(token_file)]
    assert segment(str(images / "01.png"), *args) == 0
    assert json.loads((out / "01.geojson").read_text())["fseg"]["slide"] == "01.png"


def test_missing_token_is_reported_per_slide(upload_server, images, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    args = ["--out", str(out), "--server", upload_server.address, "--concepts", "demo"]
    assert segment(str(images), *args) == 1
    rows = csv_rows(out)
    assert all("refused the credentials" in r["error"] for r in rows)
    assert all("--token-file" in r["error"] and "bearer token" in r["error"] for r in rows)
    assert "fseg: error: 4 of 4 slides failed" in capsys.readouterr().err


def test_busy_server_is_retried_until_every_slide_is_done(busy_server, bank, images, tmp_path):
    out = tmp_path / "out"
    jobs = len(finished_jobs(busy_server))
    args = ["--out", str(out), "--server", busy_server.address, "--concepts", str(bank)]
    assert segment(str(images), *args, "--concurrency", "4") == 0
    rows = csv_rows(out)
    assert [r["status"] for r in rows] == ["done"] * 4
    assert sum(int(r["attempts"]) for r in rows) > 4  # refused with RESOURCE_EXHAUSTED first
    assert sorted(finished_jobs(busy_server)[jobs:]) == sorted(p.name for p in images.glob("*.png"))


def test_invalid_argument_fails_at_once(busy_server, bank, images, tmp_path) -> None:
    bad = images / "bad" / "random.svs"  # in the slide root: the server reads and refuses it
    bad.parent.mkdir(exist_ok=True)
    bad.write_bytes(np.random.default_rng(0).bytes(50_000))
    out = tmp_path / "out"
    args = ["--out", str(out), "--server", busy_server.address, "--concepts", str(bank)]
    assert segment(str(bad), *args) == 1
    row = csv_rows(out)[0]
    assert row["attempts"] == "1" and "rejected the request" in row["error"]
    assert "not a slide OpenSlide can read" in row["error"]
    assert sorted(p.name for p in out.iterdir()) == ["batch-summary.csv"]
