"""A batch over three real servers, one of them killed (SIGKILL) while it holds a slide.

The batch (four copies of the real CMU-1 slide and four small real H&E images)
must finish with every output present and byte-identical to a run of the same
command against a single server: the results may not depend on which server
did which slide, nor on a slide having been moved.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from test_e2e_support import (
    copy_cmu,
    copy_images,
    csv_rows,
    output_digests,
    real_server,
    spawn_client,
    temp_files,
    wait_until,
)

# Summary fields that say where and how fast, not what: they may differ between runs.
VOLATILE = ("client", "server", "timings_s")


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cohort")
    copy_cmu(root, 4)
    copy_images(root)
    return root


@pytest.fixture(scope="module")
def servers(batch: Path, tmp_path_factory: pytest.TempPathFactory):
    started = []
    try:
        for name in ("a", "b", "c"):
            work = tmp_path_factory.mktemp(f"server-{name}")
            started.append(real_server(work, "--slide-root", str(batch)))
        yield started
    finally:
        for server in started:
            server.stop(signal.SIGKILL)


def finished_on(out: Path, address: str) -> list[str]:
    """Slides whose summary says ``address`` segmented them."""
    done = []
    for path in out.glob("*.json"):
        try:
            if json.loads(path.read_text())["client"]["server"] == address:
                done.append(path.stem)
        except (ValueError, KeyError):  # the summary is renamed into place whole, but be safe
            continue
    return done


def stable_summary(path: Path) -> dict:
    summary = json.loads(path.read_text())
    return {k: v for k, v in summary.items() if k not in VOLATILE}


@pytest.mark.slow
def test_a_server_killed_mid_batch_changes_nothing(batch, servers, tmp_path) -> None:
    victim = servers[2]
    out = tmp_path / "three"
    addresses = ",".join(s.address for s in servers)
    started = time.monotonic()
    # One slide at a time per server, so that C still has slides to take after its
    # first: with two in flight, a fast server can finish its share before the kill.
    client = spawn_client(str(batch), "--out", str(out), "--server", addresses,
                          "--concurrency", "1")  # fmt: skip
    wait_until(lambda: finished_on(out, victim.address) and not victim.idle(), "work on C", client)
    victim.stop(signal.SIGKILL)
    _, err = client.communicate(timeout=600)
    assert client.returncode == 0, err
    print(f"three servers, one killed: {time.monotonic() - started:.1f} s")

    rows = csv_rows(out)
    assert [r["status"] for r in rows] == ["done"] * 8
    assert any(r["server"] == victim.address for r in rows)  # it did finish some
    moved = [r["slide"] for r in rows if int(r["attempts"]) > 1]
    assert moved, "the slide the killed server held should have been retried elsewhere"
    assert all(r["server"] != victim.address for r in rows if r["slide"] in moved)

    single = tmp_path / "one"
    started = time.monotonic()
    reference = spawn_client(str(batch), "--out", str(single), "--server", servers[0].address)
    _, err = reference.communicate(timeout=600)
    assert reference.returncode == 0, err
    print(f"one server: {time.monotonic() - started:.1f} s; moved {moved}")

    mine, theirs = output_digests(out), output_digests(single)
    assert len(mine) == 8 * 4 + 1  # geojson, labels, overlay, summary per slide, and the bank
    different = {name for name in mine if mine[name] != theirs.get(name)}
    summaries = {n for n in different if n.endswith(".json")}
    assert different == summaries, f"files that differ from the single-server run: {different}"
    for name in summaries:  # where and how fast may differ, nothing else
        assert stable_summary(out / name) == stable_summary(single / name), name
    assert not temp_files(out) and not temp_files(single)
