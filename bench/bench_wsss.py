"""Segmentation quality on real annotated H&E: WSSS4LUAD validation patches.

The F-SEG paper evaluates on WSSS4LUAD. Here: fit a `stain` concept bank
(k = 8) on the 31 shared validation images themselves, segment each image in
project mode, and score on the four annotated classes (tumour epithelium,
stroma, normal, background) with many-to-one mapping (each cluster -> the
class it overlaps most, pooled over all images) and with one-to-one Hungarian
matching. Beside it, a plain baseline: k-means on RGB pixels with the same k.
Both are run with ``--seeds`` k-means seeds (the images are sampled once);
the table gives the mean, min and max mIoU over them, and NMI and accuracy.

    python bench/bench_wsss.py [--k 8] [--mode project] [--seeds 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED_DIR, print_table, write_json
from fseg_client.evaluate import evaluate_arrays
from fseg_server.concepts import Reservoir, kmeans
from fseg_server.extract import create_extractor
from fseg_server.pipeline.device_worker import DeviceWorker
from fseg_server.pipeline.fit import fit_bank, sample_slide
from fseg_server.pipeline.options import SegmentOptions
from fseg_server.pipeline.segment import segment_slide
from fseg_server.slide.reader import open_slide

WSSS = SHARED_DIR / "wsss4luad-val"


def fseg_predictions(
    images: list[Path], k: int, mode: str, extractor_name: str, seed: int = 0
) -> dict[str, np.ndarray]:
    """Labels of every image, with a bank fitted on the images' own tissue."""
    return FsegRun(images, mode, extractor_name).predictions(k, seed)


class FsegRun:
    """The images sampled once; then, per k-means seed, a bank and every image's labels.

    Sampling does not depend on the seed, so several seeds share it.
    """

    def __init__(self, images: list[Path], mode: str, extractor_name: str) -> None:
        self.images, self.mode = images, mode
        self.extractor = create_extractor(extractor_name)
        self.reservoir = Reservoir(200_000, self.extractor.spec.feature_dim)
        with DeviceWorker(torch.device("cpu")) as worker:
            for path in images:
                with open_slide(path) as slide:
                    sample_slide(slide, self.extractor, worker, self.reservoir, SegmentOptions())

    def predictions(self, k: int, seed: int) -> dict[str, np.ndarray]:
        options = SegmentOptions(k=k, mode=self.mode)
        source = "WSSS4LUAD validation"
        bank = fit_bank(self.reservoir, [k], self.extractor, None, source, seed=seed)
        predictions = {}
        with DeviceWorker(torch.device("cpu")) as worker:
            for path in self.images:
                with open_slide(path) as slide:
                    result = segment_slide(slide, self.extractor, bank, options, worker)
                predictions[path.stem] = np.asarray(result.labels)
        return predictions


def rgb_kmeans_predictions(images: list[Path], k: int, seed: int = 0) -> dict[str, np.ndarray]:
    pixels = {p.stem: np.asarray(Image.open(p).convert("RGB")) for p in images}
    reservoir = Reservoir(200_000, 3)
    for array in pixels.values():
        reservoir.add(array.reshape(-1, 3).astype(np.float32))
    centres = kmeans(torch.from_numpy(reservoir.sample), k, seed=seed)
    out = {}
    for stem, array in pixels.items():
        flat = torch.from_numpy(array.reshape(-1, 3).astype(np.float32))
        out[stem] = (
            torch.cdist(flat, centres).argmin(1).numpy().astype(np.uint8).reshape(array.shape[:2])
        )
    return out


def score(predictions: dict[str, np.ndarray], method: str) -> dict:
    items = [
        (stem, np.asarray(Image.open(WSSS / "masks" / f"{stem}.png")), pred)
        for stem, pred in predictions.items()
    ]
    return evaluate_arrays(items, method=method).to_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--mode", default="project")
    parser.add_argument("--extractor", default="stain")
    parser.add_argument("--seeds", type=int, default=5, help="k-means seeds to average over")
    args = parser.parse_args()
    images = sorted((WSSS / "images").glob("*.png"))
    fseg_run = FsegRun(images, args.mode, args.extractor)
    methods = {
        f"fseg {args.extractor} {args.mode}": lambda seed: fseg_run.predictions(args.k, seed),
        "k-means on RGB pixels": lambda seed: rgb_kmeans_predictions(images, args.k, seed),
    }
    rows = []
    for name, make in methods.items():
        for method in ("many-to-one", "hungarian"):
            rows.append({"method": name, "mapping": method, "k": args.k, "runs": []})
        for seed in range(args.seeds):
            predictions = make(seed)
            for row in rows[-2:]:
                pooled = score(predictions, row["mapping"])["pooled"]
                keep = {"miou": "miou", "nmi": "nmi", "ari": "ari", "acc": "pixel_accuracy"}
                row["runs"].append({"seed": seed} | {k: pooled[v] for k, v in keep.items()})
    table = [_summarise(row) for row in rows]
    print_table(
        table, f"WSSS4LUAD validation ({len(images)} images, 4 classes), {args.seeds} seeds"
    )
    write_json("wsss", {"rows": rows, "table": table, "images": len(images)})


def _summarise(row: dict) -> dict:
    mious = np.array([r["miou"] for r in row["runs"]])
    return {
        "method": row["method"],
        "mapping": row["mapping"],
        "k": row["k"],
        "mIoU_mean": float(mious.mean()),
        "mIoU_min": float(mious.min()),
        "mIoU_max": float(mious.max()),
        "NMI_mean": float(np.mean([r["nmi"] for r in row["runs"]])),
        "acc_mean": float(np.mean([r["acc"] for r in row["runs"]])),
    }


if __name__ == "__main__":
    main()
