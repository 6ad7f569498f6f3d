"""SIGTERM on a busy server: the running job finishes, a queued one goes elsewhere at once.

A real server process on loopback with one job slot and a long grace period.
"""

from __future__ import annotations

import ctypes
import os
import platform
import signal
import threading

import grpc
import pytest
from test_e2e_support import copy_cmu, real_server, wait_until

from fseg_proto import fseg_pb2


def test_a_draining_server_finishes_the_running_job_and_sends_the_queued_one_away(tmp_path):
    root = tmp_path / "slides"
    (slide,) = copy_cmu(root, 1)
    request = fseg_pb2.SegmentRequest(slide=fseg_pb2.SlideRef(path=slide.name))
    outcomes: dict[str, object] = {}
    finished: list[str] = []  # in the order the calls ended
    second_accepted = threading.Event()

    def run(server, name: str) -> None:
        try:
            for event in server.stub().Segment(request, timeout=300):
                if event.HasField("accepted") and name == "second":
                    second_accepted.set()
                if event.HasField("summary"):
                    outcomes[name] = "done"
        except grpc.RpcError as error:
            outcomes[name] = error.code()
        finished.append(name)

    args = ("--slide-root", str(root), "--max-running-jobs", "1", "--grace-seconds", "120")
    with real_server(tmp_path, *args) as server:
        first = threading.Thread(target=run, args=(server, "first"))
        first.start()
        wait_until(lambda: server.info().running_jobs == 1, "the first job to hold the only slot")
        second = threading.Thread(target=run, args=(server, "second"))
        second.start()
        assert second_accepted.wait(60)
        server.process.send_signal(signal.SIGTERM)
        first.join(300)
        second.join(300)
    assert outcomes == {"first": "done", "second": grpc.StatusCode.UNAVAILABLE}
    # Told while the running job was still at work, not when the grace period ended.
    assert finished == ["second", "first"]


# tgkill(2), which sends a signal to one chosen thread, has no Python wrapper.
TGKILL = {"x86_64": 234, "aarch64": 131}


def test_sigterm_that_the_kernel_hands_to_another_thread_still_drains_the_server(tmp_path):
    """The kernel may deliver a process's SIGTERM to any of its threads, and Python
    runs handlers only in the main thread; the server must still notice."""
    number = TGKILL.get(platform.machine())
    if number is None or not os.path.isdir("/proc/self/task"):
        pytest.skip(f"tgkill's syscall number is not known here ({platform.machine()})")
    libc = ctypes.CDLL(None, use_errno=True)
    with real_server(tmp_path) as server:
        pid = server.process.pid
        others = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid)
        assert others, "a serving server runs gRPC threads beside its main thread"
        assert libc.syscall(number, pid, others[-1], signal.SIGTERM) == 0
        wait_until(
            lambda: "draining" in server.log_text(), "the server to start draining", limit=60
        )
        assert server.process.wait(60) == 0
