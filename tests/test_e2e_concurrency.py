"""Eight clients, five Segment requests each, against one real server with a queue of four.

Each client is a thread with its own channel and connection, as a process would have.
Every request either succeeds with whole results or is refused with
RESOURCE_EXHAUSTED because the queue is full; nothing else. The server's
memory after the storm is within 10% of its memory after the first request.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest
from test_e2e_support import SMALL_IMAGES, copy_images, real_server

from fseg_proto import fseg_pb2, fseg_pb2_grpc

CLIENTS, REQUESTS, QUEUE = 8, 5, 4
BACK_OFF_S = 0.1  # a refused client waits a little before its next request, as clients do


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return copy_images(tmp_path_factory.mktemp("images"), SMALL_IMAGES[:REQUESTS])


@pytest.fixture(scope="module")
def server(images: list[Path], tmp_path_factory: pytest.TempPathFactory):
    args = ["--slide-root", str(images[0].parent), "--max-queued-jobs", str(QUEUE)]
    with real_server(tmp_path_factory.mktemp("server"), *args) as process:
        yield process


def fit_bank(server, images: list[Path]) -> bytes:
    request = fseg_pb2.FitRequest(slides=[fseg_pb2.SlideRef(path=str(p)) for p in images], k=[8])
    with grpc.insecure_channel(server.address) as channel:
        events = list(fseg_pb2_grpc.SegmentationStub(channel).FitConcepts(request, timeout=300))
    return events[-1].bank.safetensors


def segment_once(stub, path: Path, bank: bytes) -> str:
    """One Segment call read to its end: "ok" with whole, verified files, or the status name."""
    slide = fseg_pb2.SlideRef(path=str(path))
    request = fseg_pb2.SegmentRequest(slide=slide, bank_safetensors=bank)
    files: dict[str, bytearray] = {}
    try:
        for event in stub.Segment(request, timeout=300):
            if event.WhichOneof("event") == "chunk":
                chunk = event.chunk
                files.setdefault(chunk.file, bytearray()).extend(chunk.data)
                if chunk.last and hashlib.sha256(files[chunk.file]).hexdigest() != chunk.sha256:
                    return "corrupt " + chunk.file
            elif event.WhichOneof("event") == "summary":
                return "ok" if set(files) == {"geojson", "labels.png", "overlay.png"} else "short"
    except grpc.RpcError as exc:  # only a refusal for the queue limit counts as expected
        queue_full = f"the limit is {QUEUE}" in (exc.details() or "")
        return exc.code().name if queue_full else f"{exc.code().name}: {exc.details()}"
    return "no summary"


def client(address: str, images: list[Path], bank: bytes, results: list[str]) -> None:
    # Its own connection too: channels in one process otherwise share their subchannels.
    with grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        stub = fseg_pb2_grpc.SegmentationStub(channel)
        for path in images:
            results.append(outcome := segment_once(stub, path, bank))
            if outcome == "RESOURCE_EXHAUSTED":
                time.sleep(BACK_OFF_S)


def rss(server) -> int:
    psutil = pytest.importorskip("psutil")
    return psutil.Process(server.process.pid).memory_info().rss


@pytest.mark.slow
def test_eight_clients_five_requests_each(server, images) -> None:
    bank = fit_bank(server, images)
    with grpc.insecure_channel(server.address) as channel:
        assert segment_once(fseg_pb2_grpc.SegmentationStub(channel), images[0], bank) == "ok"
    after_first = rss(server)

    results: list[str] = []
    threads = [
        threading.Thread(target=client, args=(server.address, images, bank, results))
        for _ in range(CLIENTS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    tally = Counter(results)
    print(f"outcomes {dict(tally)}; RSS after the first request {after_first / 2**20:.1f} MiB")
    assert sum(tally.values()) == CLIENTS * REQUESTS
    assert set(tally) <= {"ok", "RESOURCE_EXHAUSTED"}, tally
    assert tally["ok"] >= QUEUE and tally["RESOURCE_EXHAUSTED"] > 0  # the limit was reached

    after_all = rss(server)
    print(f"RSS after all {CLIENTS * REQUESTS} requests {after_all / 2**20:.1f} MiB")
    assert abs(after_all - after_first) <= 0.10 * after_first
    assert server.serving()
