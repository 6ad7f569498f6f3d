"""Mapping predicted clusters to ground-truth classes.

Unsupervised clusters carry arbitrary ids, so before IoU or Dice can be computed each
cluster has to be given a class. Two conventions are offered:

- ``many-to-one``: every cluster takes the class it overlaps most. Over-segmenting is
  not penalised, which suits methods that produce more clusters than there are classes.
- ``hungarian``: a one-to-one assignment maximising total overlap; clusters left over
  count as wrong. It is solved with a shortest-augmenting-path Hungarian algorithm
  (the Jonker-Volgenant formulation), written here so that the client needs no scipy.

A data set is scored with one mapping, fitted on the sum of its images' contingency
tables, and that same mapping is applied to every image.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .metrics import (
    Contingency,
    SegmentationScores,
    contingency,
    merge_contingencies,
    segmentation_scores,
)

MANY_TO_ONE = "many-to-one"
HUNGARIAN = "hungarian"
MAPPING_METHODS = (MANY_TO_ONE, HUNGARIAN)


def linear_sum_assignment(
    cost: np.ndarray, maximize: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Solve the rectangular linear assignment problem.

    Returns ``(rows, cols)``, sorted by row, pairing ``min(n_rows, n_cols)`` rows with
    distinct columns so that ``cost[rows, cols].sum()`` is minimal (maximal with
    ``maximize``). Same contract as ``scipy.optimize.linear_sum_assignment``.
    """
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2:
        raise ValueError(f"cost must be a 2-D matrix, got shape {cost.shape}")
    if not np.all(np.isfinite(cost)):
        raise ValueError("cost matrix contains NaN or infinite entries")
    if maximize:
        cost = -cost
    # The solver assigns every row, so it needs rows <= columns.
    transposed = cost.shape[0] > cost.shape[1]
    if transposed:
        cost = cost.T
    owner = _assign_rows(cost)
    cols = np.flatnonzero(owner >= 0)
    rows = owner[cols]
    if transposed:
        rows, cols = cols, rows
    order = np.argsort(rows)
    return rows[order], cols[order]


def _assign_rows(cost: np.ndarray) -> np.ndarray:
    """Return, for each column, the row assigned to it (-1 if none); needs rows <= cols.

    Rows are added one at a time. For each new row a Dijkstra search over reduced costs
    ``cost[i, j] - u[i] - v[j]`` finds the cheapest alternating path to a free column;
    the dual potentials ``u``, ``v`` are updated so reduced costs stay non-negative and
    every assigned pair keeps a reduced cost of zero, which is what makes it optimal.
    """
    n_rows, n_cols = cost.shape
    root = n_cols  # an extra, virtual column that holds the row being inserted
    u = np.zeros(n_rows)
    v = np.zeros(n_cols + 1)
    owner = np.full(n_cols + 1, -1, dtype=np.int64)
    for row in range(n_rows):
        owner[root] = row
        dist = np.full(n_cols, np.inf)  # shortest reduced path length to each column
        came_from = np.full(n_cols, root, dtype=np.int64)
        done = np.zeros(n_cols + 1, dtype=bool)
        col = root
        while True:
            done[col] = True
            i = owner[col]
            open_ = ~done[:n_cols]
            reduced = cost[i] - u[i] - v[:n_cols]
            shorter = open_ & (reduced < dist)
            dist[shorter] = reduced[shorter]
            came_from[shorter] = col
            candidates = np.where(open_, dist, np.inf)
            nxt = int(np.argmin(candidates))
            delta = candidates[nxt]
            # Shift potentials so the chosen column's edge becomes tight.
            visited = np.flatnonzero(done)
            u[owner[visited]] += delta
            v[visited] -= delta
            dist[open_] -= delta
            col = nxt
            if owner[col] < 0:
                break
        # Walk the path back to the root: each row on it moves one column along, which
        # frees a column for the new row and grows the matching by one pair.
        while col != root:
            prev = came_from[col]
            owner[col] = owner[prev]
            col = prev
    return owner[:n_cols]


def many_to_one_mapping(cont: Contingency) -> dict[int, int]:
    """Map each cluster to the ground-truth class it overlaps most (lowest id on ties)."""
    if cont.table.size == 0:
        return {}
    best = np.argmax(cont.table, axis=0)
    return {int(c): int(cont.gt_ids[r]) for c, r in zip(cont.pred_ids, best, strict=True)}


def hungarian_mapping(cont: Contingency) -> dict[int, int]:
    """One-to-one cluster-to-class assignment with the largest total overlap.

    Clusters beyond the number of classes stay out of the mapping (counted as wrong).
    """
    if cont.table.size == 0:
        return {}
    rows, cols = linear_sum_assignment(cont.table, maximize=True)
    return {int(cont.pred_ids[c]): int(cont.gt_ids[r]) for r, c in zip(rows, cols, strict=True)}


def cluster_mapping(cont: Contingency, method: str) -> dict[int, int]:
    """Cluster-to-class mapping by ``method`` (one of ``MAPPING_METHODS``)."""
    if method == MANY_TO_ONE:
        return many_to_one_mapping(cont)
    if method == HUNGARIAN:
        return hungarian_mapping(cont)
    raise ValueError(f"unknown mapping {method!r}; expected one of {', '.join(MAPPING_METHODS)}")


@dataclass(frozen=True)
class EvaluationReport:
    """Everything ``fseg evaluate`` reports: mapping, pooled and per-image scores."""

    method: str
    mapping: dict[int, int]
    clusters: list[int]
    pooled: SegmentationScores
    images: list[dict]
    ignore: list[int]
    missing: list[str]
    notes: list[str]

    @property
    def pixels_total(self) -> int:
        """Pixels of every ground-truth mask, scored or not."""
        return sum(image["pixels_total"] for image in self.images)

    def to_dict(self) -> dict:
        """JSON-ready dictionary (class and cluster ids become string keys)."""
        return {
            "mapping": {
                "method": self.method,
                "clusters": {str(k): v for k, v in sorted(self.mapping.items())},
                "unmatched_clusters": [c for c in self.clusters if c not in self.mapping],
            },
            "ignore": self.ignore,
            "pooled": self.pooled.to_dict(),
            "images": self.images,
            "counts": {
                "images": len(self.images),
                "missing_predictions": len(self.missing),
                "pixels_total": self.pixels_total,
                "pixels_evaluated": self.pooled.pixels,
                "clusters": len(self.clusters),
                "classes": len(self.pooled.per_class),
            },
            "missing": self.missing,
            "notes": self.notes,
        }


def summarise(
    images: Sequence[tuple[dict, Contingency]],
    method: str,
    ignore: Iterable[int] = (),
    missing: Sequence[str] = (),
    notes: Sequence[str] = (),
) -> EvaluationReport:
    """Fit the mapping on the pooled table and score the pool and every image with it.

    ``images`` holds, per image, a dictionary of details (at least ``name`` and
    ``pixels_total``) and its contingency table; ``missing`` and ``notes`` are passed
    through to the report. Scores are NaN where no pixel is left to score.
    """
    pooled = merge_contingencies(c for _, c in images)
    mapping = cluster_mapping(pooled, method)
    per_image = [{**info, **segmentation_scores(c, mapping).to_dict()} for info, c in images]
    return EvaluationReport(
        method=method,
        mapping=mapping,
        clusters=pooled.pred_ids.tolist(),
        pooled=segmentation_scores(pooled, mapping),
        images=per_image,
        ignore=sorted(set(ignore)),
        missing=list(missing),
        notes=list(notes),
    )


def evaluate_arrays(
    items: Iterable[tuple[str, np.ndarray, np.ndarray]],
    *,
    ignore: Iterable[int] = (),
    method: str = MANY_TO_ONE,
) -> EvaluationReport:
    """Evaluate in-memory ``(name, ground truth, prediction)`` label maps of equal shape."""
    ignore = list(ignore)
    images = [
        ({"name": name, "pixels_total": int(np.size(gt))}, contingency(gt, pred, ignore_gt=ignore))
        for name, gt, pred in items
    ]
    return summarise(images, method, ignore)
