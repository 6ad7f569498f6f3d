"""Peak memory of the server against slide size: a 40,000 x 40,000 px slide and one a
quarter of its area (20,000 x 20,000), both made from the shared real H&E.

Each slide is segmented by a fresh ``fseg-server serve`` process (stain extractor,
bank fitted on the slide); its peak resident set size (VmHWM) is read from /proc.
Target: the large slide's peak at most 1.25x the small one's.

    python bench/bench_memory.py [--sizes 20000,40000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tools"))
from synthetic_slide import pattern_from, write_slide  # noqa: E402

from common import SHARED_DIR, print_table, write_json  # noqa: E402
from fseg_proto import fseg_pb2  # noqa: E402
from servers import start_server  # noqa: E402


def peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc (Linux only)")


def segment_once(slide: Path, workdir: Path) -> dict:
    """Segment ``slide`` in a fresh server; its peak RSS and the job's summary."""
    server = start_server(workdir, "--slide-root", str(slide.parent))
    try:
        started = time.perf_counter()
        request = fseg_pb2.SegmentRequest(slide=fseg_pb2.SlideRef(path=slide.name))
        events = list(server.stub().Segment(request, timeout=7200))
        seconds = time.perf_counter() - started
        peak = peak_rss_bytes(server.process.pid)
    finally:
        server.stop()
    summary = json.loads(events[-1].summary.json)
    return {"seconds": seconds, "peak_rss_mb": peak / 2**20, "summary": summary}


def measure(sizes: list[int], workdir: Path) -> list[dict]:
    pattern, mpp = pattern_from(SHARED_DIR / "slides" / "CMU-1-Small-Region.svs", 2048)
    rows = []
    for size in sizes:
        slide = write_slide(workdir / f"slide-{size}.tiff", pattern, size, mpp)
        run = segment_once(slide, workdir)
        labels = run["summary"]["labels"]
        rows.append({
            "size_px": size,
            "tiles": run["summary"]["tiles"]["processed"],
            "model_mpx": run["summary"]["tiles"]["model_px"] / 1e6,
            "label_grid": f"{labels['width']}x{labels['height']}",
            "seconds": run["seconds"],
            "peak_rss_mb": run["peak_rss_mb"],
        })  # fmt: skip
        slide.unlink()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="20000,40000")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = measure([int(s) for s in args.sizes.split(",")], Path(tmp))
    print_table(rows, "server peak RSS against slide size (stain extractor)")
    ratio = rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    print(f"\npeak RSS ratio, largest / smallest: {ratio:.3f} (target <= 1.25 for 4x the area)")
    write_json("memory", {"rows": rows, "ratio": ratio})


if __name__ == "__main__":
    main()
