"""Segmentation quality on real annotated H&E: the WSSS4LUAD validation patches.

The F-SEG paper evaluates on WSSS4LUAD. By default every figure here is
cross-validated (``wsss_protocol.py``): for each of ``--seeds`` seeds the 31
shared patches are split in two halves, a concept bank is fitted on one half
and many-to-one mIoU is scored on the other, both ways. The table gives the
mean over the folds with its standard deviation and range, the mean
per-class IoU, and, only beside them, the single-set figure (bank fitted and
scored on all 31 patches, k-means seed 0), which flatters whatever was chosen
on it. A plain baseline, k-means on RGB pixels, goes through the same protocol.
``vs_first`` is each row's mIoU minus the first row's on the same folds (mean,
standard deviation, and in how many folds it rose): a variant is kept only if
it rises by more than that spread.

    python bench/bench_wsss.py [--extractor stain] [--modes project,cluster,classify]
        [--k 8,16,32] [--seeds 5] [--starts 1] [--mpp 1.0 --target-mpp 2.0] [--stage-stride 8]
        [--concept-window 64] [--no-baseline]

``--starts N`` scores each fold by the mean of N fits from different k-means
starts, so that a comparison does not hinge on where k-means started.
``--mpp`` declares the patches' µm per pixel, so that ``--target-mpp`` sets the
working resolution (without them the patches are read at their own pixels).
Results: bench/results/wsss[-NAME].json (``--name``).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, write_json
from fseg_server.extract import create_extractor
from fseg_server.pipeline.options import SegmentOptions
from wsss_protocol import (
    FsegMethod,
    Method,
    RgbKmeans,
    cross_validate,
    fit_and_score,
    paired_difference,
    patches,
    summarise,
    timm_stage,
)


def main() -> None:
    args = _parser().parse_args()
    images = patches()
    options = SegmentOptions(slide_mpp=args.mpp, target_mpp=args.target_mpp)
    if args.stage_stride:
        extractor = timm_stage(args.extractor, args.stage_stride)
    else:
        extractor = create_extractor(args.extractor)
    if args.concept_window:
        extractor.spec = replace(extractor.spec, concept_window=args.concept_window)
    methods: list[Method] = [FsegMethod(extractor, mode, options) for mode in args.modes]
    for method in methods:
        method.name += _variant(args)
    if args.baseline:
        methods.append(RgbKmeans())
    rows, table = [], []
    for method in methods:
        for k in args.k:
            started = time.perf_counter()
            folds = cross_validate(method, images, k, args.seeds, starts=args.starts)
            single = fit_and_score(method, images, images, k, seed=0)
            summary = summarise(folds)
            rows.append({
                "method": method.name, "k": k, "cross_validated": summary,
                "folds": [vars(f) for f in folds], "single_set": vars(single),
                "seconds": time.perf_counter() - started,
            })  # fmt: skip
            table.append(_table_row(method.name, k, summary, single.miou))
            table[-1] |= paired_difference(folds, rows[0]["folds"])
            print_table(table[-1:], "")
        if isinstance(method, FsegMethod):
            method.close()
    title = (
        f"WSSS4LUAD, {len(images)} patches: bank fitted on one half, scored on the other, "
        f"both ways, {args.seeds} seeds (many-to-one mIoU)"
    )
    print_table(table, title)
    settings = {k: v for k, v in vars(args).items() if k != "name"}
    write_json(f"wsss-{args.name}" if args.name else "wsss", {
        "protocol": "two-fold cross-validation, both ways, per seed", "settings": settings,
        "images": len(images), "rows": rows, "table": table,
    })  # fmt: skip


def _variant(args: argparse.Namespace) -> str:
    """What sets a run apart from the defaults, for its rows' names."""
    parts = [f"stride {args.stage_stride}"] if args.stage_stride else []
    if args.concept_window:
        parts.append(f"{args.concept_window} px windows")
    if args.target_mpp:
        parts.append(f"{args.target_mpp} µm/px (patches at {args.mpp})")
    return f" ({', '.join(parts)})" if parts else ""


def _table_row(name: str, k: int, summary: dict, single_miou: float) -> dict:
    per_class = summary["per_class_iou_mean"]
    return {
        "method": name,
        "k": k,
        "cv_mIoU": summary["miou_mean"],
        "sd": summary["miou_sd"],
        "min": summary["miou_min"],
        "max": summary["miou_max"],
        **{name: per_class[name] for name in ("tumour", "stroma", "normal", "background")},
        "hungarian": summary["hungarian_miou_mean"],
        "single_set": single_miou,
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--extractor", default="stain")
    parser.add_argument("--modes", type=_words, default=["project", "cluster", "classify"])
    parser.add_argument("--k", type=_numbers, default=[8], help="comma-separated k values")
    parser.add_argument("--seeds", type=int, default=5, help="splits (two folds each)")
    parser.add_argument("--starts", type=int, default=1,
                        help="k-means starts per fold, its score their mean")  # fmt: skip
    parser.add_argument("--mpp", type=float, help="µm per pixel of the patches")
    parser.add_argument("--target-mpp", type=float, help="working resolution, µm per pixel")
    parser.add_argument("--stage-stride", type=int,
                        help="a timm CNN's stage of this stride instead of 16")  # fmt: skip
    parser.add_argument("--concept-window", type=int,
                        help="px (working resolution) of the windows averaged into the "
                        "bank's samples, instead of the extractor's")  # fmt: skip
    parser.add_argument("--no-baseline", dest="baseline", action="store_false",
                        help="leave out k-means on RGB pixels")  # fmt: skip
    parser.add_argument("--name", default="", help="results go to wsss-NAME.json")
    return parser


def _words(text: str) -> list[str]:
    return [w for w in text.split(",") if w]


def _numbers(text: str) -> list[int]:
    return [int(w) for w in text.split(",") if w]


if __name__ == "__main__":
    main()
