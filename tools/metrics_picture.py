"""Make docs/metrics-prometheus.png: Prometheus' own graph of a real fseg server's metrics.

Starts a real server (``--metrics-port``, stain extractor, two jobs at once),
a real Prometheus scraping it every second (Debian's ``prometheus``), segments
the shared CMU slide several times at three resolutions with four calls at a
time (so that jobs queue), then screenshots Prometheus' graph page of jobs
running and queued with headless Chromium.

    python tools/metrics_picture.py [--out docs/metrics-prometheus.png]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from prometheus import start_prometheus  # noqa: E402

from fseg_proto import fseg_pb2  # noqa: E402
from servers import ServerProcess, start_server  # noqa: E402

SLIDES = ROOT.parent / "shared" / "data" / "slides"
QUERIES = ("fseg_jobs_running", "fseg_jobs_queued", "rate(fseg_tiles_processed_total[10s])")
WORK_MPP = (0.25, 0.5, 1.0)  # µm/px: a job of many tiles, one of some, one of few
ROUNDS = 3


def segment(server: ServerProcess, target_mpp: float) -> None:
    request = fseg_pb2.SegmentRequest(
        slide=fseg_pb2.SlideRef(path="CMU-1-Small-Region.svs"),
        extractor="stain", k=4, target_mpp=target_mpp,
    )  # fmt: skip
    for _ in server.stub().Segment(request, timeout=600):
        pass


def graph_url(base: str, minutes: int) -> str:
    """The graph page of every query over the last ``minutes``, ending now."""
    params = {}
    for index, query in enumerate(QUERIES):
        params.update({
            f"g{index}.expr": query, f"g{index}.tab": "0", f"g{index}.stacked": "0",
            f"g{index}.range_input": f"{minutes}m",
        })  # fmt: skip
    return f"{base}/graph?{urllib.parse.urlencode(params)}"


def screenshot(url: str, out: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("metrics_picture: headless Chromium (chromium) is not installed")
    tmp = out.with_name(f".{out.name}.tmp.png")
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         # The page draws after its queries answer: give its scripts time to run
         # (virtual time starts at the real clock, so the graphs end now).
         "--window-size=1400,2250", "--virtual-time-budget=15000",
         f"--screenshot={tmp}", url],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    tmp.replace(out)  # never a half-written picture under the final name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "metrics-prometheus.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fseg-metrics-") as tmp:
        work = Path(tmp)
        port_file = work / "metrics-port"
        server = start_server(
            work, "--slide-root", str(SLIDES), "--extractor", "stain", "--max-running-jobs", "2",
            "--metrics-port", "0", "--metrics-port-file", str(port_file),
            env={"OMP_NUM_THREADS": "1"},
        )  # fmt: skip
        with (
            server,
            start_prometheus(
                work / "prometheus", [f"127.0.0.1:{port_file.read_text().strip()}"]
            ) as prom,
        ):
            with ThreadPoolExecutor(4) as pool:
                jobs = [m for _ in range(ROUNDS) for m in WORK_MPP]
                list(pool.map(lambda mpp: segment(server, mpp), jobs))
            time.sleep(5)  # a few idle scrapes after the run
            screenshot(graph_url(prom.url, minutes=2), args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
