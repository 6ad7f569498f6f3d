"""The server's allocator policy: a CPU server running a network reuses the memory
its batches free; a GPU server hands it back; a CPU server of ``stain`` alone
leaves glibc's own policy.

Each case runs in a fresh interpreter, since the policy must be set before
any thread starts. The measure is page faults (``ru_minflt``), not time: a
block served again from the heap faults nothing in, a block mapped afresh
faults in every page.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="glibc's allocator (Linux) only"
)

#: A 200 MB buffer allocated, touched and freed in a worker thread, as the
#: device thread does with activations; prints the page faults of the second round.
PROBE = textwrap.dedent(
    """
    import resource, sys, threading
    import numpy as np
    from fseg_server.memory import tune_for_server

    tuned = tune_for_server(sys.argv[1], sys.argv[2] == 'networks')

    def rounds(out):
        for _ in range(2):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            block = np.ones(200 * 2**20, np.uint8)
            del block
            out.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

    faults = []
    thread = threading.Thread(target=rounds, args=(faults,))
    thread.start()
    thread.join()
    print(tuned, faults[1])
    """
)


def second_round_faults(device_type: str, extractors: str = "networks") -> tuple[bool, int]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, device_type, extractors],
        capture_output=True,
        text=True,
        check=True,
    )
    tuned, faults = done.stdout.split()
    return tuned == "True", int(faults)


def test_a_cpu_server_of_networks_reuses_freed_activation_memory():
    tuned, faults = second_round_faults("cpu")
    assert tuned
    # 200 MB is 51,200 pages of 4 KiB: reused, it faults almost none of them in.
    assert faults < 1_000


def test_a_gpu_server_returns_large_blocks_to_the_system():
    tuned, faults = second_round_faults("cuda")
    assert tuned
    # Mapped afresh each round: 51,200 faults of 4 KiB, or 100 of 2 MiB where
    # numpy asks for transparent huge pages.
    assert faults >= 50


def test_a_cpu_server_of_stain_alone_keeps_glibcs_own_policy():
    # Its arrays are cheap to fault in; a steady peak is worth more (memory.py).
    tuned, faults = second_round_faults("cpu", "stain")
    assert not tuned
    assert faults >= 50  # glibc maps a 200 MB block afresh


def test_keeping_memory_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("FSEG_KEEP_HOST_MEMORY", "0")
    tuned, faults = second_round_faults("cpu")
    assert not tuned
    assert faults >= 50
