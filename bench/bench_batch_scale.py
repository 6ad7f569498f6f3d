"""Batch scale: does a slide cost the same in a batch of a thousand as of a million?

Each case writes a manifest of N server-side paths that the embedded server
refuses (they lie outside its slide roots), so a slide costs the client's and
the server's bookkeeping alone, and runs the real ``fseg segment --manifest``
with a concept bank for ``--window`` seconds after its first slide finished;
then it sends SIGTERM, as a scheduler ending a job would. Per case: the set-up
time (start to the first finished slide: reading and checking the manifest,
planning which slides are done, starting the server), slides finished per
second in the window, the seconds from SIGTERM to exit, and whether the batch
CSV then lists every slide. The ratio of the largest batch's slide rate to the
smallest's says whether per-slide cost grows with the batch (1.0: it does not).

    python bench/bench_batch_scale.py [--sizes 1000,100000,1000000] [--window 30]
"""

from __future__ import annotations

import argparse
import csv
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED_DIR, print_table, write_json

BIN = Path(sys.executable).parent
DONE_LINE = re.compile(r"^fseg: \[(\d+)/\d+\] ")


def write_manifest(path: Path, count: int) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "name"])
        writer.writerows([f"/elsewhere/s{i:07d}.svs", f"s{i:07d}"] for i in range(count))


def fit_bank(work: Path) -> Path:
    bank = work / "stain.safetensors"
    slide = SHARED_DIR / "slides" / "CMU-1-Small-Region.svs"
    subprocess.run(
        [str(BIN / "fseg-server"), "fit-concepts", str(slide), "--k", "8", "--out", str(bank)],
        check=True, capture_output=True,
    )  # fmt: skip
    return bank


class Finished:
    """Counts the client's "[n/N] failed ..." lines as they arrive, with their times."""

    def __init__(self, stream) -> None:
        self.first: float | None = None
        self.count_at: list[tuple[float, int]] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            match = DONE_LINE.match(line)
            if match:
                now = time.perf_counter()
                self.first = self.first or now
                self.count_at.append((now, int(match.group(1))))

    def rate(self, skip_s: float) -> float:
        """Slides per second, leaving out the first ``skip_s`` seconds after the first
        slide (connections warming up) when the batch lasted longer than that."""
        assert self.first is not None
        window = [(t, n) for t, n in self.count_at if t >= self.first + skip_s]
        if len(window) < 2:
            window = self.count_at
        if len(window) < 2:
            return 0.0
        (t0, n0), (t1, n1) = window[0], window[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


def run_case(work: Path, bank: Path, count: int, window_s: float) -> dict:
    manifest = work / f"manifest-{count}.csv"
    write_manifest(manifest, count)
    out = work / f"out-{count}"
    started = time.perf_counter()
    client = subprocess.Popen(
        [str(BIN / "fseg"), "segment", "--manifest", str(manifest), "--upload", "never",
         "--concepts", str(bank), "--out", str(out), "--progress", "lines"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    finished = Finished(client.stderr)
    while finished.first is None and client.poll() is None:
        time.sleep(0.1)
    if finished.first is None:
        raise SystemExit(f"the client exited ({client.returncode}) before its first slide")
    setup_s = finished.first - started
    time.sleep(window_s)
    sent = time.perf_counter()
    client.send_signal(signal.SIGTERM)
    client.wait(timeout=600)
    exit_s = time.perf_counter() - sent
    with open(out / "batch-summary.csv", newline="") as handle:
        rows = sum(1 for _ in csv.DictReader(handle))
    return {
        "slides": count,
        "setup_s": round(setup_s, 2),
        "slides_per_s": round(finished.rate(skip_s=2.0), 1),
        "sigterm_to_exit_s": round(exit_s, 2),
        "exit_code": client.returncode,
        "csv_rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,100000,1000000")
    parser.add_argument("--window", type=float, default=30.0, help="seconds counted per case")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="fseg-batch-scale-") as tmp:
        work = Path(tmp)
        bank = fit_bank(work)
        rows = [run_case(work, bank, count, args.window) for count in sizes]
    base = rows[0]["slides_per_s"] or float("nan")
    for row in rows:
        row["rate_vs_smallest"] = round(row["slides_per_s"] / base, 2)
    print_table(rows, "batch scale: slides refused by the server, per-slide bookkeeping only")
    write_json("batch_scale", {"window_s": args.window, "rows": rows})


if __name__ == "__main__":
    main()
