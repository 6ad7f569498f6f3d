"""SIGTERM on a busy server: the running job finishes, a queued one goes elsewhere at once.

A real server process on loopback with one job slot and a long grace period.
"""

from __future__ import annotations

import shutil
import signal
import threading
import time

import grpc
from test_e2e_support import real_server

from conftest import shared
from fseg_proto import fseg_pb2


def test_a_draining_server_finishes_the_running_job_and_sends_the_queued_one_away(tmp_path):
    root = tmp_path / "slides"
    root.mkdir()
    shutil.copy(shared("slides/CMU-1-Small-Region.svs"), root / "cmu.svs")
    server = real_server(
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
        first.join(300)
        second.join(300)
    finally:
        server.stop()
    (first_outcome, first_when), (second_outcome, second_when) = (
        outcomes["first"],
        outcomes["second"],
    )
    assert first_outcome == "done"
    assert second_outcome == grpc.StatusCode.UNAVAILABLE
    # Told while the running job was still at work, not when the grace period ended.
    assert second_when < first_when
