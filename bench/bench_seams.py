"""Tiling seams: label disagreement along tile borders against the interior.

The shared CMU-1-Small-Region.svs (real H&E) is segmented in 256-px tiles with
several context margins and compared with a single tile holding the whole
slide (see fseg_server.pipeline.seams). Without seams, disagreement near
tile borders (within 6 label pixels) equals that inside (farther than 12): a
ratio near 1. With no margin, borders disagree more.

    python bench/bench_seams.py [--tile 256] [--margins 0,16,48,64]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED_DIR, print_table, write_json
from fseg_server.extract import create_extractor
from fseg_server.pipeline.device_worker import DeviceWorker
from fseg_server.pipeline.options import SegmentOptions
from fseg_server.pipeline.seams import measure_seams
from fseg_server.pipeline.segment import fit_on_slide
from fseg_server.slide.reader import open_slide


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tile", type=int, default=256, help="tile core, target px")
    parser.add_argument("--margins", default="0,16,48,64", help="context margins, target px")
    args = parser.parse_args()
    extractor = create_extractor("stain")
    options = SegmentOptions(min_area_um2=0)
    rows = []
    path = SHARED_DIR / "slides" / "CMU-1-Small-Region.svs"
    with DeviceWorker(torch.device("cpu")) as worker, open_slide(path) as slide:
        bank = fit_on_slide(slide, extractor, options, worker, lambda *a: None, lambda: False)
        for margin in (int(m) for m in args.margins.split(",")):
            report = measure_seams(
                slide, extractor, bank, options, worker, tile_size=args.tile, margin=margin
            )
            rows.append({
                "margin_px": margin,
                "border_disagreement": report.border_disagreement,
                "interior_disagreement": report.interior_disagreement,
                "ratio": report.ratio,
                "border_px": report.border_pixels,
                "interior_px": report.interior_pixels,
            })  # fmt: skip
    print_table(rows, f"seams: {args.tile}-px tiles against one whole-slide tile (stain, k=8)")
    write_json("seams", {"tile": args.tile, "rows": rows})


if __name__ == "__main__":
    main()
