"""Feeding the device: can the pipeline around the model keep a GPU busy?

No GPU is needed. A stand-in device takes the place of the forward pass and
the factorizer: it sleeps for a set time per model pixel (as a GPU leaves
the CPU free while it computes) and returns labels of the right shape.
Everything else is the real ``segment_slide``: planning, the shared reader
threads, staging, batching, stitching, vectorizing and the pictures. In one
run it measures:

* the decode ceiling: the same regions read and resampled (``read_tile``) by
  a plain thread pool on every core, nothing else;
* (a) a free device (no sleep): the pipeline's tiles per second over the
  ceiling's, for the streaming stage and for the whole job;
* (b) a device set to half the ceiling (it needs twice the time the readers
  do): the fraction of the stream's wall time the device is busy;
* (c) two slides in a row as the client sends them (two in flight per
  server, its default) with the device at half the ceiling: the fraction of
  the time from the first slide's start to the second's end that the device
  is busy. For contrast, the same two one after the other.

    python bench/bench_feed.py [--slide PATH] [--extractor timm:resnet50 --mpp 0.5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import fseg_server  # noqa: F401  (sets torch's allocator options before torch loads)

# isort: split
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tools"))
from common import SHARED_DIR, print_table, write_json  # noqa: E402
from fseg_server.concepts.bank import ConceptBank  # noqa: E402
from fseg_server.extract import create_extractor  # noqa: E402
from fseg_server.pipeline.device_worker import DeviceWorker  # noqa: E402
from fseg_server.pipeline.options import SegmentOptions  # noqa: E402
from fseg_server.pipeline.plan import plan_slide  # noqa: E402
from fseg_server.pipeline.readers import available_cores  # noqa: E402
from fseg_server.pipeline.recipes import LabelRecipe  # noqa: E402
from fseg_server.pipeline.segment import segment_slide  # noqa: E402
from fseg_server.pipeline.stream import read_tile  # noqa: E402
from fseg_server.slide.reader import open_slide  # noqa: E402


class StandInDevice(DeviceWorker):
    """A device that sleeps ``seconds_per_px`` per model pixel and uses no CPU."""

    def __init__(self, seconds_per_px: float = 0.0) -> None:
        super().__init__(torch.device("cpu"))
        self.seconds_per_px = seconds_per_px
        self.first_at = self.last_at = 0.0  # when the first batch began and the last ended

    def _compute(self, recipe: LabelRecipe, tiles: torch.Tensor) -> list:
        batch, height, width = tiles.shape[:3]
        self.first_at = self.first_at or time.perf_counter()
        time.sleep(self.seconds_per_px * batch * height * width)
        self.last_at = time.perf_counter()
        left, top, right, bottom = recipe.margin_cells
        stride, u = recipe.extractor.spec.stride, recipe.upsample
        rows = (height // stride - top - bottom) * u
        cols = (width // stride - left - right) * u
        return [(np.zeros((rows, cols), np.uint8), None) for _ in range(batch)]


def decode_ceiling(slide, plan, rounds: int = 3) -> tuple[float, float]:
    """(tiles per second, model px per second) reading the plan's regions on every core."""
    cores = available_cores()
    rates = []
    for _ in range(rounds):
        started = time.perf_counter()
        with ThreadPoolExecutor(cores) as pool:
            list(pool.map(lambda tile: read_tile(slide, plan.grid, tile), plan.tiles))
        rates.append(len(plan.tiles) / (time.perf_counter() - started))
    tiles_per_s = statistics.median(rates)
    return tiles_per_s, tiles_per_s * plan.model_px / len(plan.tiles)


def segment(slide, extractor, bank, options, device) -> dict:
    """One job; its stream and total seconds, and the device's busy seconds in it."""
    busy = device.busy_s
    timings = segment_slide(slide, extractor, bank, options, device).summary["timings_s"]
    return {"stream": timings["stream"], "total": timings["total"], "busy": device.busy_s - busy}


def two_slides(path: Path, extractor, bank, options, device, in_flight: int) -> dict:
    """Two slides with ``in_flight`` jobs at once: device busy over the whole span."""
    busy = device.busy_s
    started = time.perf_counter()
    device.first_at = 0.0

    def job(_: int) -> None:
        with open_slide(path) as slide:
            segment_slide(slide, extractor, bank, options, device)

    with ThreadPoolExecutor(in_flight) as pool:
        list(pool.map(job, range(2)))
    span = time.perf_counter() - started
    window = device.last_at - device.first_at  # first batch to last: between the slides
    return {"span": span, "device_window": window, "busy": device.busy_s - busy}


def _row(measure: str, value: float, unit: str, target: str = "") -> dict:
    return {"measure": measure, "value": value, "unit": unit, "target": target}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slide", type=Path)
    parser.add_argument("--extractor", default="timm:resnet50")
    parser.add_argument("--mpp", type=float, default=0.5, help="working resolution, µm/px")
    parser.add_argument("--size", type=int, default=8000, help="edge of the generated slide")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    extractor = create_extractor(args.extractor, None if args.extractor == "stain" else "random")
    spec = extractor.spec
    rng = np.random.default_rng(0)
    bank = ConceptBank(spec.name, spec.feature_dim, {8: rng.random((8, spec.feature_dim))},
                       mpp=args.mpp)  # fmt: skip
    options = SegmentOptions()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.slide
        if path is None:
            from synthetic_slide import pattern_from, write_slide

            pattern, mpp = pattern_from(SHARED_DIR / "slides" / "CMU-1-Small-Region.svs", 2048)
            path = write_slide(Path(tmp) / "feed.tiff", pattern, args.size, mpp)
        with open_slide(path) as slide:
            plan = plan_slide(slide, spec, bank.mpp, options)
            tiles = len(plan.tiles)
            with StandInDevice() as free:
                segment(slide, extractor, bank, options, free)  # warm-up
                ceiling_tiles, ceiling_px = decode_ceiling(slide, plan)
                runs = [segment(slide, extractor, bank, options, free) for _ in range(args.repeats)]
            stream_rate = tiles / statistics.median(r["stream"] for r in runs)
            job_rate = tiles / statistics.median(r["total"] for r in runs)
            half = 2.0 / ceiling_px  # the device needs twice what reading does
            with StandInDevice(half) as slow:
                loaded = [
                    segment(slide, extractor, bank, options, slow) for _ in range(args.repeats)
                ]
                pair = two_slides(path, extractor, bank, options, slow, in_flight=2)
                in_turn = two_slides(path, extractor, bank, options, slow, in_flight=1)
    busy = statistics.median(r["busy"] / r["stream"] for r in loaded)
    rows = [
        _row("decode ceiling (plain pool, every core)", ceiling_tiles, "tiles/s"),
        _row("(a) free device: stream tiles/s / ceiling", stream_rate / ceiling_tiles, "ratio",
             ">= 0.8"),
        _row("(a) free device: whole job tiles/s / ceiling", job_rate / ceiling_tiles, "ratio"),
        _row("(b) device at half the ceiling: busy / stream", busy, "fraction", ">= 0.95"),
        _row("(c) two slides, 2 in flight: busy from first batch to last",
             pair["busy"] / pair["device_window"], "fraction", ">= 0.95"),
        _row("(c) two slides, 2 in flight: busy / whole span", pair["busy"] / pair["span"],
             "fraction"),
        _row("(c') one after the other: busy from first batch to last",
             in_turn["busy"] / in_turn["device_window"], "fraction"),
        _row("(c') one after the other: busy / whole span", in_turn["busy"] / in_turn["span"],
             "fraction"),
    ]  # fmt: skip
    print_table(rows, f"feeding the device: {path.name}, {spec.name} at {args.mpp} µm/px, "
                      f"{tiles} regions, {available_cores()} cores")  # fmt: skip
    write_json("feed", {
        "slide": str(path), "extractor": spec.name, "mpp": args.mpp, "regions": tiles,
        "model_px": plan.model_px, "cores": available_cores(), "rows": rows,
        "free_runs": runs, "loaded_runs": loaded, "two_in_flight": pair, "two_in_turn": in_turn,
        "device_seconds_per_mpx_at_half": half * 1e6,
    })  # fmt: skip


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
