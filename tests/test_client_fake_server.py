"""The client against a stand-in server that misbehaves on purpose.

A real fseg server never sends a result that fails its checksum, never stalls
a job on purpose and never cuts an upload on cue, so these flows use an
in-process stand-in that speaks just enough of fseg.v1 (Segment, StatSlide,
UploadSlide, health). Every other flow of the client is tested against real
servers (test_client_batch*.py, test_e2e_*.py).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from test_e2e_support import csv_rows

from fseg_client import batch
from fseg_client.cli import main
from fseg_client.retry import RetryPolicy
from fseg_proto import fseg_pb2, fseg_pb2_grpc

pytestmark = pytest.mark.usefixtures("fast_retries")

GEOJSON = json.dumps({"type": "FeatureCollection", "features": []}).encode()


class StandIn(fseg_pb2_grpc.SegmentationServicer):
    """Segments nothing: sends an empty GeoJSON after ``delay_s`` seconds.

    ``corrupt_sha`` announces a wrong SHA-256 for the file; ``segment_calls``
    records the slide names it was asked for.
    """

    def __init__(self, delay_s: float = 0.0, corrupt_sha: bool = False) -> None:
        self.delay_s, self.corrupt_sha = delay_s, corrupt_sha
        self.segment_calls: list[str] = []
        self.lock = threading.Lock()

    def Segment(self, request, context):
        with self.lock:
            self.segment_calls.append(request.slide.name)
        yield fseg_pb2.SegmentEvent(accepted=fseg_pb2.Accepted(job_id="j1"))
        deadline = time.monotonic() + self.delay_s
        while time.monotonic() < deadline:  # stuck, until the client's deadline
            if not context.is_active():
                return
            time.sleep(0.02)
        yield fseg_pb2.SegmentEvent(progress=fseg_pb2.Progress(stage="segment", done=1, total=1))
        digest = "0" * 64 if self.corrupt_sha else hashlib.sha256(GEOJSON).hexdigest()
        chunk = fseg_pb2.ResultChunk(
            file="geojson", data=GEOJSON, last=True, total_bytes=len(GEOJSON), sha256=digest
        )
        yield fseg_pb2.SegmentEvent(chunk=chunk)
        summary = json.dumps({"slide": request.slide.name, "classes": []})
        yield fseg_pb2.SegmentEvent(summary=fseg_pb2.Summary(json=summary))

    def StatSlide(self, request, context):
        readable = os.path.isfile(request.path)
        size = os.path.getsize(request.path) if readable else 0
        return fseg_pb2.SlideStatus(readable=readable, size_bytes=size)


def start(servicer: StandIn) -> tuple[grpc.Server, str]:
    """Serve ``servicer`` on a free loopback port; returns the server and its address."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    fseg_pb2_grpc.add_SegmentationServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture
def slides(tmp_path: Path) -> Path:
    """Stand-in slides: the stand-in never opens them."""
    folder = tmp_path / "slides"
    folder.mkdir()
    for index in range(4):
        (folder / f"s{index}.svs").write_bytes(os.urandom(3000 + index))
    return folder


def segment(*args: str) -> int:
    return main(["segment", *args, "--concepts", "demo", "--outputs", "geojson", "--quiet"])


def test_checksum_failure_leaves_no_output(slides: Path, tmp_path: Path) -> None:
    """Stand-in: a server that sends a result whose SHA-256 does not match."""
    server, address = start(StandIn(corrupt_sha=True))
    try:
        out = tmp_path / "out"
        args = ["--out", str(out), "--server", address, "--retries", "1"]
        assert segment(str(slides / "s0.svs"), *args) == 1
    finally:
        server.stop(0)
    assert "SHA-256" in csv_rows(out)[0]["error"]
    assert sorted(p.name for p in out.iterdir()) == ["batch-summary.csv"]


def test_slide_timeout_moves_slides_to_a_faster_server(slides: Path, tmp_path: Path) -> None:
    """Stand-in: a server stuck on every job (3 s) beside a prompt one."""
    slow, fast = StandIn(delay_s=3.0), StandIn()
    (slow_server, slow_address), (fast_server, fast_address) = start(slow), start(fast)
    try:
        out = tmp_path / "out"
        args = ["--out", str(out), "--server", f"{slow_address},{fast_address}"]
        assert segment(str(slides), *args, "--slide-timeout", "0.5") == 0
    finally:
        slow_server.stop(0)
        fast_server.stop(0)
    assert {r["server"] for r in csv_rows(out)} == {fast_address}
    assert slow.segment_calls  # it was tried, and the deadline moved its slides


class SlowUploads(StandIn):
    """Reads no path, so every slide is uploaded; each upload takes ``upload_s``
    seconds and the first one is cut as a proxy would cut it."""

    def __init__(self, upload_s: float) -> None:
        super().__init__()
        self.upload_s, self.uploads = upload_s, 0

    def StatSlide(self, request, context):
        return fseg_pb2.SlideStatus(readable=False, reason="not on this server")

    def UploadSlide(self, request_iterator, context):
        header = next(request_iterator).header
        for _ in request_iterator:
            pass
        time.sleep(self.upload_s)
        with self.lock:
            self.uploads += 1
            first = self.uploads == 1
        if first:
            context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset by a proxy")
        return fseg_pb2.UploadResult(sha256=header.sha256, size_bytes=header.size_bytes)


def test_one_cut_upload_after_a_long_silence_does_not_fail_the_batch(
    slides: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stand-in: uploads (1.5 s) longer than the whole retry budget (0.4 + 0.8 s),
    the first one cut. The outage starts at the cut, not at the server's last
    answer, so the slide is retried instead of the batch given up."""
    policy = functools.partial(RetryPolicy, base_s=0.4, cap_s=1.0)
    monkeypatch.setattr(batch, "RetryPolicy", policy)
    server, address = start(SlowUploads(upload_s=1.5))
    try:
        out = tmp_path / "out"
        args = ["--out", str(out), "--server", address, "--retries", "2", "--concurrency", "1"]
        assert segment(str(slides / "s0.svs"), str(slides / "s1.svs"), *args) == 0
    finally:
        server.stop(0)
    assert [r["status"] for r in csv_rows(out)] == ["done"] * 2
