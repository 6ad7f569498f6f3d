"""Upload streams that send nothing cannot hold a server (issue 16, item 3).

Against a real server on loopback: twenty UploadSlide streams that never send
their header. At most the server's upload slots (8) are held, the others are
refused at once, health and server info answer throughout, and a stream idle
for ``--upload-idle-seconds`` is cancelled, freeing its slot for a real upload.
"""

from __future__ import annotations

import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
from test_e2e_support import real_server

from fseg_proto import fseg_pb2
from fseg_server.serve.uploads import UPLOADS_AT_ONCE

STREAMS = 20
IDLE_S = 2.0


def wait_for(condition, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def silent(stop: threading.Event):
    """A request stream that sends nothing until ``stop``."""
    stop.wait(60)
    yield from ()


def test_streams_without_a_header_neither_starve_the_server_nor_keep_their_slots(tmp_path):
    with real_server(
        tmp_path, "--upload-dir", str(tmp_path / "uploads"),
        "--upload-idle-seconds", str(IDLE_S),
    ) as server:  # fmt: skip
        stop = threading.Event()
        stub = server.stub()

        def open_stream(_: int) -> grpc.StatusCode:
            try:
                stub.UploadSlide(silent(stop), timeout=30)
            except grpc.RpcError as error:
                return error.code()
            return grpc.StatusCode.OK

        try:
            with ThreadPoolExecutor(STREAMS) as pool:
                futures = [pool.submit(open_stream, i) for i in range(STREAMS)]
                refusals = STREAMS - UPLOADS_AT_ONCE
                assert wait_for(lambda: sum(f.done() for f in futures) >= refusals)
                held = [f for f in futures if not f.done()]
                # While the held ones hang, the server answers a load balancer and a client.
                assert server.serving()
                assert server.info().version
                assert not all(f.done() for f in held)
                codes = [f.result() for f in futures]
        finally:
            stop.set()
        exhausted = codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
        cancelled = codes.count(grpc.StatusCode.CANCELLED)
        assert exhausted == STREAMS - UPLOADS_AT_ONCE
        assert cancelled == UPLOADS_AT_ONCE  # idle for IDLE_S: cancelled, slot freed

        data = b"a real slide's bytes"
        header = fseg_pb2.UploadHeader(
            name="a.svs", sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data)
        )
        result = stub.UploadSlide(
            iter([fseg_pb2.UploadChunk(header=header), fseg_pb2.UploadChunk(data=data)]),
            timeout=30,
        )
        assert result.size_bytes == len(data) and not result.already_present
        assert "internal error" not in server.log_text()
        assert list((tmp_path / "uploads" / "tmp").iterdir()) == []
