"""The batch client against stand-in servers (no fseg_server, no torch).

Covers the batch bank, resume, uploads, tokens, retries, a dead server and
checksum failures in-process; a server killed mid-batch, a client killed
mid-batch and Ctrl-C with subprocesses.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from test_client_fake_server import FakeSegmentation, fake_bank, start

from fseg_client import batch
from fseg_client.cli import main
from fseg_client.retry import RetryPolicy

FAKE = Path(__file__).with_name("test_client_fake_server.py")
OUTPUT_SUFFIXES = ("geojson", "labels.png", "overlay.png")


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Back-offs of tens of milliseconds, so retry tests take no time."""
    monkeypatch.setattr(
        batch, "RetryPolicy", functools.partial(RetryPolicy, base_s=0.02, cap_s=0.1)
    )


@pytest.fixture
def slides(tmp_path: Path) -> Path:
    folder = tmp_path / "slides"
    folder.mkdir()
    for index in range(4):
        (folder / f"s{index}.svs").write_bytes(os.urandom(3000 + index))
    return folder


@pytest.fixture
def server():
    servicer = FakeSegmentation()
    grpc_server, address = start(servicer)
    yield servicer, address
    grpc_server.stop(0)


def segment(*args: str) -> int:
    return main(["segment", *args, "--quiet"])


def csv_rows(out: Path) -> list[dict]:
    with open(out / "batch-summary.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_batch_fits_one_bank_writes_everything_and_resumes(server, slides, tmp_path) -> None:
    servicer, address = server
    out = tmp_path / "out"
    assert segment(str(slides), "--out", str(out), "--server", address) == 0
    assert servicer.fit_calls == 1 and len(servicer.segment_calls) == 4
    assert (out / "fseg-bank.safetensors").is_file()
    for index in range(4):
        summary = json.loads((out / f"s{index}.json").read_text())
        assert len(summary["request_fingerprint"]) == 64
        assert summary["client"]["server"] == address
        assert all((out / f"s{index}.{suffix}").is_file() for suffix in OUTPUT_SUFFIXES)
    rows = csv_rows(out)
    assert [r["status"] for r in rows] == ["done"] * 4
    assert rows[0]["area_um2:Stroma"] == "60.000" and rows[0]["tissue_area_um2"] == "100.000"
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]

    assert segment(str(slides), "--out", str(out), "--server", address) == 0
    assert servicer.fit_calls == 1 and len(servicer.segment_calls) == 4  # nothing redone
    assert [r["status"] for r in csv_rows(out)] == ["skipped"] * 4

    (out / "s2.labels.png").unlink()
    assert segment(str(slides), "--out", str(out), "--server", address) == 0
    assert servicer.segment_calls[4:] == ["s2.svs"]


def test_other_k_than_the_saved_bank_is_refused(server, slides, tmp_path, capsys) -> None:
    _, address = server
    out = tmp_path / "out"
    assert segment(str(slides), "--out", str(out), "--server", address) == 0
    assert segment(str(slides), "--out", str(out), "--server", address, "--k", "5") == 2
    assert "has no k=5" in capsys.readouterr().err


def test_changing_the_bank_redoes_the_slides(server, slides, tmp_path) -> None:
    servicer, address = server
    out = tmp_path / "out"
    bank = tmp_path / "mine.safetensors"
    bank.write_bytes(fake_bank(8, "stain", "mine"))
    assert segment(str(slides), "--out", str(out), "--server", address) == 0
    assert (
        segment(str(slides), "--out", str(out), "--server", address, "--concepts", str(bank)) == 0
    )
    assert len(servicer.segment_calls) == 8 and servicer.fit_calls == 1


def test_upload_when_the_server_cannot_read_the_path(server, slides, tmp_path) -> None:
    servicer, address = server
    servicer.readable_roots = ["/nowhere"]
    out = tmp_path / "out"
    assert segment(str(slides), "--out", str(out), "--server", address, "--concepts", "demo") == 0
    assert len(servicer.uploads) == 4
    assert json.loads((out / "s0.json").read_text())["client"]["reference"] == "sha256"
    never = tmp_path / "never"
    args = ["--out", str(never), "--server", address, "--concepts", "demo", "--upload", "never"]
    assert segment(str(slides), *args) == 1
    assert "does not exist" in csv_rows(never)[0]["error"]


def test_token_is_sent_and_its_absence_reported(slides, tmp_path, capsys) -> None:
    servicer = FakeSegmentation(token="s3cret")
    grpc_server, address = start(servicer)
    try:
        args = [str(slides), "--server", address, "--concepts", "demo"]
        assert segment(*args, "--out", str(tmp_path / "a")) == 1
        assert "refused the credentials" in csv_rows(tmp_path / "a")[0]["error"]
        assert "--token-file" in csv_rows(tmp_path / "a")[0]["error"]
        token = tmp_path / "token"
        token.write_text("s3cret\n")
        assert segment(*args, "--out", str(tmp_path / "b"), "--token-file", str(token)) == 0
        assert "fseg: error: 4 of 4 slides failed" in capsys.readouterr().err
    finally:
        grpc_server.stop(0)


def test_busy_server_is_retried_and_bad_request_fails_at_once(server, slides, tmp_path) -> None:
    servicer, address = server
    servicer.fail_codes = [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2
    out = tmp_path / "out"
    args = ["--out", str(out), "--server", address, "--concepts", "demo", "--concurrency", "1"]
    assert segment(str(slides / "s0.svs"), *args) == 0
    assert csv_rows(out)[0]["attempts"] == "3"
    servicer.fail_codes = [grpc.StatusCode.INVALID_ARGUMENT]
    assert segment(str(slides / "s1.svs"), *args) == 1
    row = csv_rows(out)[0]
    assert row["attempts"] == "1" and "rejected the request: injected" in row["error"]


def test_checksum_failure_leaves_no_output(server, slides, tmp_path) -> None:
    servicer, address = server
    servicer.corrupt_sha = True
    out = tmp_path / "out"
    args = ["--out", str(out), "--server", address, "--concepts", "demo", "--retries", "1"]
    assert segment(str(slides / "s0.svs"), *args) == 1
    assert "SHA-256" in csv_rows(out)[0]["error"]
    assert sorted(p.name for p in out.iterdir()) == ["batch-summary.csv"]


def test_dead_server_is_avoided(server, slides, tmp_path) -> None:
    _, address = server
    dead = f"127.0.0.1:{free_port()}"
    out = tmp_path / "out"
    assert segment(str(slides), "--out", str(out), "--server", f"{dead},{address}") == 0
    assert {r["server"] for r in csv_rows(out)} == {address}


def test_every_server_down_fails_the_batch_with_a_reason(slides, tmp_path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    out = tmp_path / "out"
    args = ["--out", str(out), "--server", dead, "--concepts", "demo", "--retries", "2"]
    started = time.monotonic()
    assert segment(str(slides), *args) == 1
    assert time.monotonic() - started < 20
    rows = csv_rows(out)
    assert all(r["status"] == "failed" and "no server answered" in r["error"] for r in rows)


def test_slide_timeout_moves_slides_to_a_faster_server(slides, tmp_path) -> None:
    slow, fast = FakeSegmentation(delay_s=3.0), FakeSegmentation()
    (slow_server, slow_address), (fast_server, fast_address) = start(slow), start(fast)
    try:
        out = tmp_path / "out"
        servers = f"{slow_address},{fast_address}"
        args = ["--out", str(out), "--server", servers, "--concepts", "demo"]
        assert segment(str(slides), *args, "--slide-timeout", "0.5") == 0
        assert {r["server"] for r in csv_rows(out)} == {fast_address}
        assert slow.segment_calls  # it was tried, and the deadline moved its slides
    finally:
        slow_server.stop(0)
        fast_server.stop(0)


# -- subprocesses: servers and clients that get killed --------------------------------


def spawn_server(tmp_path: Path, name: str, delay: float) -> tuple[subprocess.Popen, str]:
    port_file = tmp_path / f"{name}.port"
    command = [sys.executable, str(FAKE), "serve", "--port-file", str(port_file)]
    process = subprocess.Popen([*command, "--delay", str(delay)])
    deadline = time.monotonic() + 30
    while not port_file.exists():
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)
    return process, f"127.0.0.1:{port_file.read_text()}"


def spawn_client(*args: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "fseg_client.cli", "segment", *args, "--quiet"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)


def wait_for(condition, client: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """Poll ``condition`` while the client runs; fail the test rather than hang."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert client.poll() is None, client.communicate()[1]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def output_digests(out: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.iterdir())
        if p.name.endswith(OUTPUT_SUFFIXES)
    }


@pytest.fixture
def many_slides(tmp_path: Path) -> Path:
    folder = tmp_path / "many"
    folder.mkdir()
    for index in range(12):
        (folder / f"m{index:02d}.svs").write_bytes(os.urandom(2000))
    return folder


def test_server_killed_mid_batch(many_slides, tmp_path) -> None:
    servers = [spawn_server(tmp_path, f"s{i}", delay=0.6) for i in range(3)]
    try:
        out = tmp_path / "out"
        addresses = ",".join(address for _, address in servers)
        client = spawn_client(str(many_slides), "--out", str(out), "--server", addresses)
        wait_for(lambda: list(out.glob("*.json")), client)
        servers[0][0].kill()
        _, err = client.communicate(timeout=120)
        assert client.returncode == 0, err
        assert [r["status"] for r in csv_rows(out)] == ["done"] * 12
        single = tmp_path / "single"
        bank = ["--concepts", str(out / "fseg-bank.safetensors")]
        assert (
            segment(str(many_slides), "--out", str(single), "--server", servers[1][1], *bank) == 0
        )
        assert output_digests(out) == output_digests(single)
        assert len(output_digests(out)) == 36
    finally:
        for process, _ in servers:
            process.kill()


def test_client_killed_mid_batch_resumes_without_truncated_files(many_slides, tmp_path) -> None:
    process, address = spawn_server(tmp_path, "s", delay=0.3)
    try:
        out = tmp_path / "out"
        args = [str(many_slides), "--out", str(out), "--server", address, "--concepts", "demo"]
        client = spawn_client(*args, "--concurrency", "4")
        wait_for(lambda: len(list(out.glob("*.json"))) >= 3, client)
        client.kill()
        client.wait()
        first = {p.stem for p in out.glob("m*.json")}
        reference = tmp_path / "reference"
        assert segment(*args[:1], "--out", str(reference), "--server", address, *args[5:]) == 0
        expected = output_digests(reference)
        for name, digest in output_digests(out).items():  # whatever is there is whole
            assert expected[name] == digest, name
        again = spawn_client(*args)
        _, err = again.communicate(timeout=120)
        assert again.returncode == 0, err
        rows = {r["slide"]: r["status"] for r in csv_rows(out)}
        assert all(rows[stem] == "skipped" for stem in first)
        assert output_digests(out) == expected
        assert not list(out.glob(".*.tmp"))
    finally:
        process.kill()


def test_ctrl_c_cancels_and_exits_130(many_slides, tmp_path) -> None:
    process, address = spawn_server(tmp_path, "s", delay=2.0)
    try:
        out = tmp_path / "out"
        client = spawn_client(str(many_slides), "--out", str(out), "--server", address)
        deadline = time.monotonic() + 30
        while not (out / "fseg-bank.safetensors").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        client.send_signal(signal.SIGINT)
        _, err = client.communicate(timeout=30)
        assert client.returncode == 130, err
        assert "interrupted" in err and "Traceback" not in err
        assert {r["status"] for r in csv_rows(out)} == {"failed"}
        assert not list(out.glob(".*.tmp"))
    finally:
        process.kill()
