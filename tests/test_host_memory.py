"""The server's allocator policy: a CPU server reuses the memory its batches free,
a GPU server hands it back.

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
    from fseg_server.memory import tune_for_device

    tuned = tune_for_device(sys.argv[1])

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


def second_round_faults(device_type: str) -> tuple[bool, int]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, device_type], capture_output=True, text=True, check=True
    )
    tuned, faults = done.stdout.split()
    return tuned == "True", int(faults)


def test_a_cpu_server_reuses_freed_activation_memory():
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


def test_keeping_memory_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("FSEG_KEEP_HOST_MEMORY", "0")
    tuned, faults = second_round_faults("cpu")
    assert not tuned
    assert faults >= 50
