"""Tiling seams: label disagreement along region borders against the interior.

The shared CMU-1-Small-Region.svs (real H&E) is segmented in tissue regions
of at most 256 px with several context margins and compared with a single
region holding the whole slide with the full margin on every side (see
fseg_server.pipeline.seams). Without seams, disagreement near borders that
cut through tissue (within 6 label pixels) equals that inside (farther than
12): a ratio near 1, and no pixel at all where tiling changes nothing. With
no margin, borders disagree more. Region sides that face only glass get one
block of context; the labels there are counted apart ("glass edge").

    python bench/bench_seams.py [--tile 256] [--margins 0,16,48,64]
        [--extractor stain | timm:resnet50 --target-mpp 0.5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED_DIR, print_table, write_json
from fseg_server.device import place
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
    parser.add_argument("--extractor", default="stain", help="random weights unless stain")
    parser.add_argument("--target-mpp", type=float, help="working resolution, µm/px")
    args = parser.parse_args()
    weights = None if args.extractor == "stain" else "random"
    torch.manual_seed(0)
    # Placed as the server places it (batch norms folded): the seams it would show.
    extractor = place(create_extractor(args.extractor, weights), torch.device("cpu"))
    options = SegmentOptions(min_area_um2=0, target_mpp=args.target_mpp)
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
                "border_differs_px": round(report.border_disagreement * report.border_pixels),
                "interior_differs_px": round(
                    report.interior_disagreement * report.interior_pixels
                ),
                "glass_edge_differs_px": round(
                    report.glass_edge_disagreement * report.glass_edge_pixels
                ),
                "border_px": report.border_pixels,
                "interior_px": report.interior_pixels,
                "glass_edge_px": report.glass_edge_pixels,
            })  # fmt: skip
    name = args.extractor
    print_table(rows, f"seams: regions of at most {args.tile} px against one whole-slide "
                      f"region ({name}, k=8)")  # fmt: skip
    suffix = "" if name == "stain" else "-" + name.replace(":", "-")
    write_json(f"seams{suffix}", {"tile": args.tile, "extractor": name, "rows": rows})


if __name__ == "__main__":
    main()
