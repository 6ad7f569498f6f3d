"""The honest protocol for segmentation quality on the shared WSSS4LUAD patches.

Every choice about an extractor, a mode or a k is scored by two-fold
cross-validation: the patches are split in two halves at random, a concept
bank is fitted on one half and many-to-one mIoU is scored on the other, then
the other way round; repeated for several seeds (each seed draws its own
split and seeds k-means). The figure is the mean over the 2 x seeds folds,
with their standard deviation. A bank fitted on the very patches it is scored
on (the "single-set" figure) flatters every variant that was chosen by it, so
it is only ever printed beside the cross-validated one.

Many-to-one maps each cluster to the class it overlaps most, pooled over the
scored half (the usual protocol for unsupervised segmentation); Hungarian
matching is one-to-one.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from common import SHARED_DIR
from fseg_client.evaluate import evaluate_arrays
from fseg_server.concepts import ConceptBank, Reservoir, kmeans
from fseg_server.extract import Extractor, create_extractor
from fseg_server.pipeline.device_worker import DeviceWorker
from fseg_server.pipeline.feature_cache import FeatureCache
from fseg_server.pipeline.fit import fit_bank, sample_slide
from fseg_server.pipeline.labelling import label_tiles
from fseg_server.pipeline.options import SegmentOptions
from fseg_server.pipeline.plan import plan_slide
from fseg_server.slide.reader import open_slide

WSSS = SHARED_DIR / "wsss4luad-val"
CLASSES = {0: "tumour", 1: "stroma", 2: "normal", 3: "background"}
RESERVOIR_SIZE = 200_000
START_STRIDE = 10_000  # fit seeds of a fold's further k-means starts: seed + 10000 * start
GIB = 1 << 30


def timm_stage(name: str, stride: int) -> Extractor:
    """``timm:<architecture>`` cut at its stage of ``stride`` px rather than the
    built-in choice (16), as a candidate to score; the weights are the built-in's."""
    from fseg_server.extract.timm_any import TimmStage, _cnn_spec

    base = create_extractor(name)
    assert isinstance(base, TimmStage), f"{name} is not a timm CNN"
    info = base.net.feature_info
    stage = [i["reduction"] for i in info].index(stride)
    spec = _cnn_spec(name.split(":", 1)[1], base.net, stride, info[stage]["num_chs"])
    return TimmStage(spec, base.net, stage, base.weights_state)


def patches() -> list[Path]:
    """The shared annotated patches (images; masks share their names)."""
    return sorted((WSSS / "images").glob("*.png"))


def mask_of(image: Path) -> np.ndarray:
    return np.asarray(Image.open(WSSS / "masks" / image.name))


def halves(images: Sequence[Path], seed: int) -> tuple[list[Path], list[Path]]:
    """A random split of ``images`` into two halves (the first is the smaller)."""
    order = np.random.default_rng(seed).permutation(len(images))
    cut = len(images) // 2
    return [images[i] for i in sorted(order[:cut])], [images[i] for i in sorted(order[cut:])]


class Method:
    """A way to label patches: fitted on some, applied to others."""

    name: str

    def fit(self, images: Sequence[Path], k: int, seed: int) -> object:
        raise NotImplementedError

    def labels(self, image: Path, fitted: object) -> np.ndarray:
        """(H, W) cluster labels of ``image``, the shape of its mask."""
        raise NotImplementedError


class FsegMethod(Method):
    """fseg's pipeline: window samples for the bank, then labels in one mode.

    Each patch is sampled and extracted once; later labellings read its
    features from a feature cache, so a fold costs only the factorization.
    """

    def __init__(self, extractor: Extractor | str, mode: str, options: SegmentOptions) -> None:
        self.extractor = create_extractor(extractor) if isinstance(extractor, str) else extractor
        self.extractor.eval()
        self.options = replace(options, mode=mode)
        self.name = f"fseg {self.extractor.spec.name} {mode}"
        self.worker = DeviceWorker(torch.device("cpu"))
        self._folder = tempfile.TemporaryDirectory(prefix="fseg-wsss-")
        self.cache = FeatureCache(Path(self._folder.name), 4 * GIB)
        self._samples: dict[Path, np.ndarray] = {}

    def close(self) -> None:
        self.worker.close()
        self._folder.cleanup()

    def samples(self, image: Path) -> np.ndarray:
        """The window-averaged feature vectors a bank is fitted on, of one patch."""
        if image not in self._samples:
            reservoir = Reservoir(RESERVOIR_SIZE, self.extractor.spec.feature_dim)
            with open_slide(image) as slide:
                sample_slide(slide, self.extractor, self.worker, reservoir, self.options)
            self._samples[image] = reservoir.sample.copy()
        return self._samples[image]

    def pooled(self, images: Sequence[Path], seed: int) -> Reservoir:
        """The samples of ``images`` pooled into one reservoir, as a fit sees them."""
        reservoir = Reservoir(RESERVOIR_SIZE, self.extractor.spec.feature_dim, seed=seed)
        for image in images:
            reservoir.add(self.samples(image))
        return reservoir

    def fit(self, images: Sequence[Path], k: int, seed: int) -> ConceptBank:
        reservoir = self.pooled(images, seed)
        mpp = self.options.target_mpp or self.extractor.spec.mpp
        return fit_bank(reservoir, [k], self.extractor, mpp, "WSSS4LUAD half", seed=seed)

    def labels(self, image: Path, fitted: object) -> np.ndarray:
        assert isinstance(fitted, ConceptBank)
        options = replace(self.options, k=fitted.ks[0])  # a fold's bank holds one k
        with open_slide(image) as slide:
            plan = plan_slide(slide, self.extractor.spec, fitted.mpp, options)
            canvas, _ = label_tiles(
                slide, self.extractor, fitted, options, plan, self.worker,
                cache=self.cache, progress=lambda *_: None, should_stop=lambda: False,
            )  # fmt: skip
        return to_mask_shape(np.asarray(canvas.labels), mask_of(image).shape)


class RgbKmeans(Method):
    """The plain baseline: k-means on RGB pixels, nearest centre per pixel."""

    name = "k-means on RGB pixels"

    def fit(self, images: Sequence[Path], k: int, seed: int) -> torch.Tensor:
        reservoir = Reservoir(RESERVOIR_SIZE, 3, seed=seed)
        for image in images:
            reservoir.add(_rgb(image).reshape(-1, 3))
        return kmeans(torch.from_numpy(reservoir.sample), k, seed=seed)

    def labels(self, image: Path, fitted: object) -> np.ndarray:
        assert isinstance(fitted, torch.Tensor)
        pixels = _rgb(image)
        flat = torch.from_numpy(pixels.reshape(-1, 3))
        nearest = torch.cdist(flat, fitted).argmin(1).numpy().astype(np.uint8)
        return nearest.reshape(pixels.shape[:2])


def _rgb(image: Path) -> np.ndarray:
    return np.asarray(Image.open(image).convert("RGB"), np.float32)


def to_mask_shape(labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Labels enlarged (nearest) or cropped to the mask's (H, W): a working resolution
    coarser than the patch's pixels gives a smaller grid."""
    if labels.shape[:2] != tuple(shape[:2]):
        picture = Image.fromarray(labels.astype(np.uint8))
        labels = np.asarray(picture.resize((shape[1], shape[0]), Image.Resampling.NEAREST))
    return labels


@dataclass
class FoldScore:
    """Scores of one labelling of a set of patches."""

    miou: float
    hungarian_miou: float
    per_class_iou: dict[str, float | None]
    pixel_accuracy: float


def score(predictions: dict[Path, np.ndarray]) -> FoldScore:
    items = [(image.stem, mask_of(image), labels) for image, labels in predictions.items()]
    many = evaluate_arrays(items, method="many-to-one").to_dict()["pooled"]
    one = evaluate_arrays(items, method="hungarian").to_dict()["pooled"]
    per_class = {name: many["per_class"].get(str(c), {}).get("iou") for c, name in CLASSES.items()}
    return FoldScore(many["miou"], one["miou"], per_class, many["pixel_accuracy"])


def fit_and_score(
    method: Method, fit_on: Sequence[Path], score_on: Sequence[Path], k: int, seed: int
) -> FoldScore:
    fitted = method.fit(fit_on, k, seed)
    return score({image: method.labels(image, fitted) for image in score_on})


def cross_validate(
    method: Method,
    images: Sequence[Path],
    k: int,
    seeds: int,
    on_fold: Callable[[int, FoldScore], None] = lambda seed, fold: None,
    starts: int = 1,
) -> list[FoldScore]:
    """Two folds per seed: fit on one half, score on the other, both ways.

    With ``starts`` > 1 each fold is fitted that many times from different
    k-means starts and scored by the mean of those fits: a user's bank is one
    fit, but a comparison of two extractors should not hinge on where k-means
    happened to start in each.
    """
    folds = []
    for seed in range(seeds):
        first, second = halves(images, seed)
        for fit_on, score_on in ((first, second), (second, first)):
            fits = [
                fit_and_score(method, fit_on, score_on, k, seed + START_STRIDE * start)
                for start in range(starts)
            ]
            fold = mean_score(fits)
            on_fold(seed, fold)
            folds.append(fold)
    return folds


def mean_score(scores: Sequence[FoldScore]) -> FoldScore:
    """Figures averaged over fits of one fold (a class absent from all stays None)."""
    per_class = {
        name: _mean([s.per_class_iou[name] for s in scores]) for name in scores[0].per_class_iou
    }
    return FoldScore(
        float(np.mean([s.miou for s in scores])),
        float(np.mean([s.hungarian_miou for s in scores])),
        per_class,
        float(np.mean([s.pixel_accuracy for s in scores])),
    )


def summarise(folds: Sequence[FoldScore]) -> dict:
    """Mean, standard deviation (n - 1) and range of the folds' figures."""
    mious = np.array([f.miou for f in folds])
    per_class = {name: _mean([f.per_class_iou[name] for f in folds]) for name in CLASSES.values()}
    return {
        "miou_mean": float(mious.mean()),
        "miou_sd": float(mious.std(ddof=1)) if len(mious) > 1 else 0.0,
        "miou_min": float(mious.min()),
        "miou_max": float(mious.max()),
        "hungarian_miou_mean": float(np.mean([f.hungarian_miou for f in folds])),
        "per_class_iou_mean": per_class,
        "folds": len(folds),
    }


def paired_difference(folds: Sequence[FoldScore], baseline: Sequence[dict]) -> dict:
    """mIoU minus the baseline's on the same folds (same splits and seeds): mean,
    standard deviation and how many folds rose. Folds differ far more from each
    other than two variants differ on one fold, so this is the comparison that
    decides whether a variant is kept (it must rise by more than the spread)."""
    diff = np.array([f.miou for f in folds]) - np.array([b["miou"] for b in baseline])
    spread = float(diff.std(ddof=1)) if len(diff) > 1 else 0.0
    return {"vs_first": float(diff.mean()), "vs_first_sd": spread, "rose": int((diff > 0).sum())}


def _mean(values: Sequence[float | None]) -> float | None:
    finite = [v for v in values if v is not None]
    return float(np.mean(finite)) if finite else None
