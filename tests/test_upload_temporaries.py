"""Upload temporaries of a killed server go at the next start, and no live upload does
(issue 16: after kill -9 mid-upload a 4 MiB temporary file survived the restart).

Real servers on loopback sharing one upload folder, as every pod of a deployment shares
its ReadWriteMany volume: one is killed with SIGKILL in the middle of an upload (a single
file, and a slide set), and the server started next on that folder finds nothing of it;
a server that starts while another one receives an upload leaves that upload alone, and
it completes. Only the server's own temporaries are removed.
"""

from __future__ import annotations

import hashlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from test_e2e_support import real_server

from fseg_proto import fseg_pb2

MIB = 1 << 20
SENT = 4 * MIB  # sent before the stream pauses: what the issue found left behind
DATA = np.random.default_rng(16).bytes(8 * MIB)


def serve(tmp_path: Path):
    return real_server(tmp_path / "work", "--upload-dir", str(tmp_path / "uploads"))


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    """Poll ``condition`` (a test deadline, not a timing assertion)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout_s:.0f} s for {what}")
        time.sleep(0.05)


def temporaries(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "uploads" / "tmp").iterdir())


def owner_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "uploads" / "owners").iterdir())


def bytes_in(path: Path) -> int:
    files = path.rglob("*") if path.is_dir() else [path]
    return sum(p.stat().st_size for p in files if p.is_file())


def holds_what_was_sent(tmp_path: Path) -> bool:
    """Whether one temporary (a file, or a set's staging folder) holds SENT bytes."""
    return any(bytes_in(p) >= SENT for p in temporaries(tmp_path))


def paused(first, wrap: Callable[[bytes], object], go: threading.Event) -> Iterator:
    """``first``, then DATA in 1 MiB messages made by ``wrap``, waiting for ``go`` after
    SENT bytes (or until the stream is cut off)."""
    yield first
    for start in range(0, len(DATA), MIB):
        if start == SENT:
            go.wait(60)
        yield wrap(DATA[start : start + MIB])


def upload_paused(server, go: threading.Event) -> grpc.Future:
    header = fseg_pb2.UploadHeader(
        name="slide.svs", sha256=hashlib.sha256(DATA).hexdigest(), size_bytes=len(DATA)
    )
    messages = paused(
        fseg_pb2.UploadChunk(header=header), lambda b: fseg_pb2.UploadChunk(data=b), go
    )
    return server.stub().UploadSlide.future(messages, timeout=120)


def upload_set_paused(server, go: threading.Event) -> grpc.Future:
    """A slide of two files (a main file and a companion), DATA and 100 bytes."""
    files = {"slide.mrxs": DATA, "slide/Slidedat.ini": b"[GENERAL]\n" * 10}
    manifest = fseg_pb2.SlideSet(
        main="slide.mrxs",
        files=[
            fseg_pb2.SlideFile(path=p, sha256=hashlib.sha256(d).hexdigest(), size_bytes=len(d))
            for p, d in files.items()
        ],
    )
    header = fseg_pb2.SlideSetHeader(set=manifest, sending=list(files))
    messages = paused(
        fseg_pb2.SlideSetChunk(header=header), lambda b: fseg_pb2.SlideSetChunk(data=b), go
    )
    return server.stub().UploadSlideSet.future(messages, timeout=120)


@pytest.mark.parametrize("start_upload", [upload_paused, upload_set_paused], ids=["file", "set"])
def test_what_a_server_killed_mid_upload_left_is_gone_once_one_starts_again(tmp_path, start_upload):
    foreign = tmp_path / "uploads" / "tmp" / "notes.txt"  # not the server's: never touched
    go = threading.Event()
    with serve(tmp_path) as first:
        foreign.write_text("an operator's file")
        call = start_upload(first, go)
        wait_for(lambda: holds_what_was_sent(tmp_path), "the upload's first 4 MiB on disk")
        first.stop(signal.SIGKILL)
    go.set()
    with pytest.raises(grpc.RpcError):
        call.result()
    left = [p for p in temporaries(tmp_path) if p != foreign]
    assert len(left) == 1 and bytes_in(left[0]) >= SENT  # what the issue found

    with serve(tmp_path) as second:
        assert temporaries(tmp_path) == [foreign]
        assert len(owner_files(tmp_path)) == 1  # the dead server's lock file went too
        assert second.serving()


def test_a_server_that_starts_leaves_alone_an_upload_another_one_is_receiving(tmp_path):
    go = threading.Event()
    with serve(tmp_path) as receiving:
        call = upload_paused(receiving, go)
        try:
            wait_for(lambda: holds_what_was_sent(tmp_path), "the upload's first 4 MiB on disk")
            (in_progress,) = temporaries(tmp_path)
            with serve(tmp_path) as starting:
                assert temporaries(tmp_path) == [in_progress]
                assert len(owner_files(tmp_path)) == 2
                assert starting.serving()
            go.set()
            result = call.result()
        finally:
            go.set()
        assert result.size_bytes == len(DATA) and not result.already_present
        assert temporaries(tmp_path) == []
        stored = tmp_path / "uploads" / "objects" / result.sha256[:2] / f"{result.sha256}.svs"
        assert stored.read_bytes() == DATA
