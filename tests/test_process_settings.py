"""Settings the server process makes before torch loads.

torch reads some options once, when its libraries load: the OpenMP wait
policy and whether its CPU allocator asks for transparent huge pages. Importing
``fseg_server`` sets them, so it must not load torch itself, and a value the
user chose wins.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def python(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.endswith("THP_MEM_ALLOC_ENABLE")}
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def test_importing_the_server_package_sets_torch_options_before_torch_loads():
    out = python(
        "import os, sys, fseg_server; "
        "print('torch' in sys.modules, os.environ['THP_MEM_ALLOC_ENABLE'], "
        "os.environ['OMP_WAIT_POLICY'])"
    )
    assert out == "False 1 PASSIVE"


def test_a_users_own_choice_is_kept():
    out = python(
        "import os, fseg_server; print(os.environ['THP_MEM_ALLOC_ENABLE'], "
        "os.environ['C10_THP_MEM_ALLOC_ENABLE'])",
        THP_MEM_ALLOC_ENABLE="0",
    )
    assert out == "0 0"


PAGE_FAULTS = """
import resource
import fseg_server, torch
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    buffer = torch.ones(1 << 24)  # 64 MiB, freed at once as a forward's activations are
    del buffer
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_large_cpu_buffers_fault_in_huge_pages_not_4_kib_ones():
    # Only where huge pages are granted on request: with THP "always" every
    # large mapping gets them anyway, and with "never" none can.
    if not THP_SETTING.exists() or "[madvise]" not in THP_SETTING.read_text():
        pytest.skip(f"transparent huge pages are not in madvise mode here ({THP_SETTING})")
    with_huge_pages = int(python(PAGE_FAULTS))
    without = int(python(PAGE_FAULTS, THP_MEM_ALLOC_ENABLE="0"))
    # 10 x 64 MiB is 163,840 small pages; as huge pages it is 320 faults.
    assert without > 100_000
    assert with_huge_pages * 5 < without
