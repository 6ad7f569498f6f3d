"""Cancellation: how long a cancelled job keeps its slot and the device after the call ends.

A real server (``fseg-server serve``, one job slot) segments the shared
CMU-1-Small-Region.svs at a fine working resolution, so the job has many
tiles queued on the device; the call is cancelled once it is streaming (and,
in a second case, while it waits for its slot behind another job). Measured
from the cancel: seconds until the server reports no running job and until a
small job sent right after it finishes, against that small job's time on an
idle server in the same run.

    python bench/bench_cancel.py [--extractor stain] [--target-mpp 0.125]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
from common import SHARED_DIR, print_table, write_json  # noqa: E402
from fseg_proto import fseg_pb2  # noqa: E402
from servers import ServerProcess, start_server  # noqa: E402

SLIDES = SHARED_DIR / "slides"
SMALL = SHARED_DIR / "wsss4luad-val" / "images" / "00.png"


def request(path: Path, extractor: str, target_mpp: float = 0.0) -> fseg_pb2.SegmentRequest:
    return fseg_pb2.SegmentRequest(
        slide=fseg_pb2.SlideRef(path=str(path)), extractor=extractor, k=4, target_mpp=target_mpp
    )


def small_job_s(server: ServerProcess, extractor: str) -> float:
    started = time.perf_counter()
    for _ in server.stub().Segment(request(SMALL, extractor), timeout=600):
        pass
    return time.perf_counter() - started


def cancel_while_streaming(server: ServerProcess, extractor: str, target_mpp: float) -> dict:
    call = server.stub().Segment(request(SLIDES / "CMU-1-Small-Region.svs", extractor, target_mpp))
    tiles_seen = 0
    for event in call:
        if event.WhichOneof("event") == "progress" and event.progress.stage == "segment":
            tiles_seen = event.progress.done
            if tiles_seen >= 3:
                break
    cancelled = time.perf_counter()
    call.cancel()
    while server.info().running_jobs:
        time.sleep(0.01)
    freed = time.perf_counter() - cancelled
    small = small_job_s(server, extractor)
    return {"case": "cancel while streaming", "tiles_before_cancel": tiles_seen,
            "slot_freed_s": round(freed, 3), "next_small_job_s": round(small, 3)}  # fmt: skip


def cancel_while_planning(server: ServerProcess, extractor: str, target_mpp: float) -> dict:
    """The job is cancelled as soon as it is accepted: it is planning (or waiting)."""
    call = server.stub().Segment(request(SLIDES / "CMU-1-Small-Region.svs", extractor, target_mpp))
    first = next(iter(call))
    assert first.WhichOneof("event") == "accepted"
    cancelled = time.perf_counter()
    call.cancel()
    while server.info().running_jobs or server.info().queued_jobs:
        time.sleep(0.01)
    freed = time.perf_counter() - cancelled
    small = small_job_s(server, extractor)
    return {"case": "cancel once accepted", "tiles_before_cancel": 0,
            "slot_freed_s": round(freed, 3), "next_small_job_s": round(small, 3)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extractor", default="stain")
    parser.add_argument("--target-mpp", type=float, default=0.125)
    parser.add_argument("--weights", default="", help="NAME=PATH, or NAME=random for a network")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fseg-cancel-") as tmp:
        roots = ["--slide-root", str(SLIDES), "--slide-root", str(SMALL.parent)]
        weights = ["--weights", args.weights] if args.weights else []
        with start_server(Path(tmp), *roots, "--extractor", args.extractor, *weights,
                          "--max-running-jobs", "1") as server:  # fmt: skip
            small_job_s(server, args.extractor)  # warm: the first job loads what it needs
            idle = small_job_s(server, args.extractor)
            rows = [
                cancel_while_streaming(server, args.extractor, args.target_mpp),
                cancel_while_planning(server, args.extractor, args.target_mpp),
            ]
    for row in rows:
        row["small_job_idle_s"] = round(idle, 3)
    print_table(rows, f"cancellation ({args.extractor} at {args.target_mpp} µm/px)")
    write_json("cancel", {"extractor": args.extractor, "target_mpp": args.target_mpp,
                          "rows": rows})  # fmt: skip


if __name__ == "__main__":
    try:
        main()
    except grpc.RpcError as exc:
        raise SystemExit(f"bench_cancel: {exc.code().name}: {exc.details()}") from None
