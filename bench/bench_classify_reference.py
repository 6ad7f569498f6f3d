"""Classify mode against the F-SEG authors' algorithm, on identical features.

The reference (``tests/fseg_reference.py``) is scikit-learn's NMF per image
with the authors' settings, components matched to the bank's centres by
cosine, maps upsampled bilinearly before the argmax. fseg's classify mode
(``fseg_server.factorize.concept_scores``) gets the very same features: each
shared WSSS4LUAD patch through the extractor whole. Banks are fitted as in
``bench_wsss.py``, on one half of the patches (window samples, k-means), and
both methods label the other half, both ways, for ``--seeds`` splits. The
table gives the share of feature cells on which the two agree and the
many-to-one mIoU of each (labels upsampled bilinearly, without fseg's
colour-guided upsampling, as the reference does), mean and standard deviation
over the folds.

    python bench/bench_classify_reference.py [--extractor stain] [--k 8] [--components 8]
        [--seeds 3]

Results: bench/results/classify-reference-n<components>.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, write_json
from fseg_reference import reference_classes, reference_components, reference_labels
from fseg_server.factorize import Mode, concept_scores, labels_from_scores
from fseg_server.pipeline.options import SegmentOptions
from fseg_server.pipeline.recipes import extract_features
from wsss_protocol import FsegMethod, halves, patches, score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--extractor", default="stain")
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--components", type=int, default=8, help="NMF rank per patch")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    images = patches()
    method = FsegMethod(args.extractor, "classify", SegmentOptions())
    features = {image: _features(method, image) for image in images}
    # The reference's NMF does not depend on the bank: one per patch serves every fold.
    reference = {
        image: reference_components(f[0].numpy(), args.components) for image, f in features.items()
    }
    folds = []
    for seed in range(args.seeds):
        for fit_on, score_on in _both_ways(halves(images, seed)):
            centres = torch.from_numpy(method.fit(fit_on, args.k, seed).concepts(args.k))
            fold = _compare(score_on, features, reference, centres, method, args.components)
            print(f"seed {seed}: {fold}")
            folds.append(fold)
    method.close()
    table = [_summary(folds, args)]
    print_table(table, f"classify mode vs the reference, {len(folds)} folds")
    record = {"settings": vars(args), "folds": folds, "table": table}
    write_json(f"classify-reference-n{args.components}", record)


def _features(method: FsegMethod, image: Path) -> torch.Tensor:
    pixels = np.asarray(Image.open(image).convert("RGB"))
    with torch.no_grad():
        return extract_features(method.extractor, torch.from_numpy(pixels.copy())[None])


def _both_ways(split: tuple[list[Path], list[Path]]) -> list[tuple[list[Path], list[Path]]]:
    first, second = split
    return [(first, second), (second, first)]


def _compare(images, features, reference, centres, method, components) -> dict:
    stride = method.extractor.spec.stride
    equal = cells = 0
    fseg_labels, reference_labels_ = {}, {}
    for image in images:
        f = features[image]
        scores, index = concept_scores(f, centres, Mode.CLASSIFY, components=components)
        maps, concepts = reference[image]
        classes = reference_classes(concepts, centres.numpy())
        grid = f.shape[-2:]
        ours = labels_from_scores(scores, index, 1)[0].numpy()
        equal += int((ours == reference_labels(maps, classes, grid)).sum())
        cells += ours.size
        h, w = np.asarray(Image.open(image)).shape[:2]
        fseg_labels[image] = labels_from_scores(scores, index, stride)[0].numpy()[:h, :w]
        size = (grid[0] * stride, grid[1] * stride)
        reference_labels_[image] = reference_labels(maps, classes, size)[:h, :w]
    return {
        "cells_equal": equal / cells,
        "fseg_miou": score(fseg_labels).miou,
        "reference_miou": score(reference_labels_).miou,
    }


def _summary(folds: list[dict], args: argparse.Namespace) -> dict:
    def stat(key: str) -> tuple[float, float]:
        values = np.array([f[key] for f in folds])
        return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0

    row = {"extractor": args.extractor, "k": args.k, "components": args.components}
    for key in ("cells_equal", "fseg_miou", "reference_miou"):
        row[key], row[f"{key}_sd"] = stat(key)
    row["miou_gap_max"] = float(max(abs(f["fseg_miou"] - f["reference_miou"]) for f in folds))
    return row


if __name__ == "__main__":
    main()
