"""Segmentation metrics computed from contingency tables, in pure numpy.

Every metric here works on a contingency table (pixel counts of ground-truth class
versus predicted cluster) rather than on pixel arrays. Tables are tiny, so pooling a
whole data set is a sum of tables and never needs all images in memory at once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

NO_LABEL = 255
"""Prediction value meaning "no label"; such pixels are left out of every metric."""


@dataclass(frozen=True)
class Contingency:
    """Pixel counts of ground-truth class (rows) against predicted cluster (columns).

    Only labels that occur in at least one counted pixel get a row or column.
    """

    table: np.ndarray
    gt_ids: np.ndarray
    pred_ids: np.ndarray

    @property
    def total(self) -> int:
        """Number of pixels counted."""
        return int(self.table.sum())


def contingency(
    gt: np.ndarray,
    pred: np.ndarray,
    *,
    ignore_gt: Iterable[int] = (),
    ignore_pred: Iterable[int] = (NO_LABEL,),
) -> Contingency:
    """Count (ground truth, prediction) label pairs over the pixels that are not ignored.

    A pixel is ignored when its ground truth is in ``ignore_gt`` or its prediction is in
    ``ignore_pred``. ``gt`` and ``pred`` must have the same shape.
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"shapes differ: ground truth {gt.shape}, prediction {pred.shape}")
    keep = ~np.isin(gt, list(ignore_gt)) & ~np.isin(pred, list(ignore_pred))
    gt_ids, gt_idx = np.unique(gt[keep], return_inverse=True)
    pred_ids, pred_idx = np.unique(pred[keep], return_inverse=True)
    flat = gt_idx.astype(np.int64) * len(pred_ids) + pred_idx
    counts = np.bincount(flat, minlength=len(gt_ids) * len(pred_ids))
    table = counts.reshape(len(gt_ids), len(pred_ids)).astype(np.int64)
    return Contingency(table, gt_ids.astype(np.int64), pred_ids.astype(np.int64))


def merge_contingencies(items: Iterable[Contingency]) -> Contingency:
    """Sum contingency tables whose label sets may differ (pooling over images)."""
    items = list(items)
    gt_ids = np.unique(np.concatenate([c.gt_ids for c in items] or [np.zeros(0, np.int64)]))
    pred_ids = np.unique(np.concatenate([c.pred_ids for c in items] or [np.zeros(0, np.int64)]))
    table = np.zeros((len(gt_ids), len(pred_ids)), dtype=np.int64)
    for c in items:
        rows = np.searchsorted(gt_ids, c.gt_ids)
        cols = np.searchsorted(pred_ids, c.pred_ids)
        table[np.ix_(rows, cols)] += c.table
    return Contingency(table, gt_ids, pred_ids)


def _nonempty(table: np.ndarray) -> np.ndarray:
    """Drop all-zero rows and columns: labels that never occur must not count."""
    table = np.asarray(table, dtype=np.int64)
    return table[table.sum(axis=1) > 0][:, table.sum(axis=0) > 0]


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def mutual_information(table: np.ndarray) -> float:
    """Mutual information (natural log) between the row and column labellings."""
    table = _nonempty(table)
    n = table.sum()
    if n == 0:
        return 0.0
    rows, cols = np.nonzero(table)
    nij = table[rows, cols].astype(np.float64)
    outer = table.sum(axis=1)[rows].astype(np.float64) * table.sum(axis=0)[cols]
    mi = float((nij / n * (np.log(nij) + math.log(n) - np.log(outer))).sum())
    return max(mi, 0.0)  # rounding can push an exact zero slightly negative


def nmi(table: np.ndarray) -> float:
    """Normalised mutual information with the arithmetic mean of the two entropies.

    Same definition and limit cases as scikit-learn's default: two single-label
    labellings agree perfectly (1.0); otherwise zero mutual information gives 0.0.
    """
    table = _nonempty(table)
    if table.shape[0] == table.shape[1] and table.shape[0] <= 1:
        return 1.0
    mi = mutual_information(table)
    if mi == 0.0:
        return 0.0
    mean_entropy = (_entropy(table.sum(axis=1)) + _entropy(table.sum(axis=0))) / 2
    return min(mi / mean_entropy, 1.0)  # rounding can overshoot a perfect match


def _pairs(counts: np.ndarray) -> int:
    # Python integers: pair counts of millions of pixels overflow int64 products.
    return sum(c * (c - 1) // 2 for c in np.asarray(counts).ravel().tolist() if c > 1)


def ari(table: np.ndarray) -> float:
    """Adjusted Rand index (Hubert and Arabie) of the row and column labellings."""
    table = np.asarray(table, dtype=np.int64)
    both = _pairs(table)
    same_gt = _pairs(table.sum(axis=1))
    same_pred = _pairs(table.sum(axis=0))
    if both == same_gt == same_pred:
        return 1.0  # identical partitions, including the degenerate ones
    all_pairs = _pairs(np.array([table.sum()]))
    expected = same_gt * same_pred / all_pairs
    best = (same_gt + same_pred) / 2
    return float((both - expected) / (best - expected))


@dataclass(frozen=True)
class ClassScore:
    """Overlap of one ground-truth class with the clusters mapped to it."""

    iou: float
    dice: float
    gt_pixels: int
    pred_pixels: int
    overlap_pixels: int


@dataclass(frozen=True)
class SegmentationScores:
    """Metrics of one image or of a pooled data set."""

    miou: float
    mean_dice: float
    pixel_accuracy: float
    nmi: float
    ari: float
    pixels: int
    per_class: dict[int, ClassScore] = field(default_factory=dict)

    def table_lines(self) -> list[str]:
        """Per-class IoU and Dice rows, then a summary line, for printing."""
        lines = [f"{'class':>5}  {'IoU':>6}  {'Dice':>6}  {'GT pixels':>12}  {'pred pixels':>12}"]
        for cls, s in self.per_class.items():
            lines.append(
                f"{cls:>5}  {s.iou:6.3f}  {s.dice:6.3f}  {s.gt_pixels:>12,}  {s.pred_pixels:>12,}"
            )
        lines.append(
            f"mIoU {self.miou:.3f} | mean Dice {self.mean_dice:.3f} | pixel accuracy "
            f"{self.pixel_accuracy:.3f} | NMI {self.nmi:.3f} | ARI {self.ari:.3f} | "
            f"{self.pixels:,} pixels"
        )
        return lines

    def to_dict(self) -> dict:
        """Plain JSON-ready dictionary; NaN (undefined) becomes None."""
        return {
            "miou": _finite(self.miou),
            "mean_dice": _finite(self.mean_dice),
            "pixel_accuracy": _finite(self.pixel_accuracy),
            "nmi": _finite(self.nmi),
            "ari": _finite(self.ari),
            "pixels": self.pixels,
            "per_class": {
                str(k): {
                    "iou": _finite(s.iou),
                    "dice": _finite(s.dice),
                    "gt_pixels": s.gt_pixels,
                    "pred_pixels": s.pred_pixels,
                    "overlap_pixels": s.overlap_pixels,
                }
                for k, s in self.per_class.items()
            },
        }


def _finite(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def class_scores(cont: Contingency, mapping: Mapping[int, int]) -> dict[int, ClassScore]:
    """Per-class IoU and Dice after relabelling clusters through ``mapping``.

    Clusters absent from ``mapping`` count as wrong everywhere. Only classes present in
    the ground truth or in the mapped prediction are scored.
    """
    gt_count = dict(zip(cont.gt_ids.tolist(), cont.table.sum(axis=1).tolist(), strict=True))
    row_of = {g: i for i, g in enumerate(cont.gt_ids.tolist())}
    tp: dict[int, int] = {}
    pred_count: dict[int, int] = {}
    for j, cluster in enumerate(cont.pred_ids.tolist()):
        cls = mapping.get(cluster)
        if cls is None:
            continue
        pred_count[cls] = pred_count.get(cls, 0) + int(cont.table[:, j].sum())
        if cls in row_of:
            tp[cls] = tp.get(cls, 0) + int(cont.table[row_of[cls], j])
    scores = {}
    for cls in sorted(set(gt_count) | {c for c, n in pred_count.items() if n > 0}):
        t, g, p = tp.get(cls, 0), gt_count.get(cls, 0), pred_count.get(cls, 0)
        scores[cls] = ClassScore(t / (g + p - t), 2 * t / (g + p), g, p, t)
    return scores


def segmentation_scores(cont: Contingency, mapping: Mapping[int, int]) -> SegmentationScores:
    """All metrics of one contingency table: mapped (IoU, Dice, accuracy) and mapping-free."""
    per_class = class_scores(cont, mapping)
    total = cont.total
    correct = sum(s.overlap_pixels for s in per_class.values())
    nan = float("nan")
    return SegmentationScores(
        miou=float(np.mean([s.iou for s in per_class.values()])) if per_class else nan,
        mean_dice=float(np.mean([s.dice for s in per_class.values()])) if per_class else nan,
        pixel_accuracy=correct / total if total else nan,
        nmi=nmi(cont.table) if total else nan,
        ari=ari(cont.table) if total else nan,
        pixels=total,
        per_class=per_class,
    )
