"""SIGTERM on a busy server: the running job finishes, a queued one goes elsewhere at once.

A real server process on loopback with one job slot and a long grace period.
"""

from __future__ import annotations

import shutil
import signal
import threading
import time

import grpc

from conftest import shared
from fseg_proto import fseg_pb2
from servers import start_server


def test_a_draining_server_finishes_the_running_job_and_sends_the_queued_one_away(tmp_path):
    root = tmp_path / "slides"
    root.mkdir()
    shutil.copy(shared("slides/CMU-1-Small-Region.svs"), root / "cmu.svs")
    server = start_server(
        tmp_path, "--slide-root", str(root), "--max-running-jobs", "1", "--grace-seconds", "120"
    )
    request = fseg_pb2.SegmentRequest(slide=fseg_pb2.SlideRef(path="cmu.svs"))
    outcomes: dict[str, object] = {}
    accepted = {name: threading.Event() for name in ("first", "second")}

    def run(name: str) -> None:
        try:
            for event in server.stub().Segment(request, timeout=300):
                if event.HasField("accepted"):
                    accepted[name].set()
                if event.HasField("summary"):
                    outcomes[name] = ("done", time.monotonic())
        except grpc.RpcError as error:
            outcomes[name] = (error.code(), time.monotonic())

    try:
        first = threading.Thread(target=run, args=("first",))
        first.start()
        assert accepted["first"].wait(60)
        time.sleep(1.0)  # the first job holds the only slot
        second = threading.Thread(target=run, args=("second",))
        second.start()
        assert accepted["second"].wait(60)
        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        first.join(300)
        second.join(300)
    finally:
        server.stop()
    assert outcomes["first"][0] == "done"
    code, when = outcomes["second"]
    assert code == grpc.StatusCode.UNAVAILABLE
    assert when - signalled < 10  # told at once, not at the end of the grace period
