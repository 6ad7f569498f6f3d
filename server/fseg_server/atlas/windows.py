"""Which windows typify each concept: scoring candidate windows and choosing among them.

Pure NumPy, no slides: the sampling pass (``sampling.py``) hands in each
tile's per-cell shares and its candidate windows; this module keeps the
candidates a choice could need and makes the choice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: A window is a candidate when at least this fraction of its cells is tissue.
MIN_TISSUE_IN_WINDOW = 0.5
#: Round robin over the inputs takes only windows at least this share of the
#: concept's best window: an input where the concept is faint does not get a
#: place ahead of a much more typical window of another input.
RELATIVE_FLOOR = 0.5


def window_shares(
    shares: np.ndarray, tissue: np.ndarray, cells: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean share of every concept over the tissue cells of each window.

    Args:
        shares: (k, rows, cols) per-cell shares of a tile's core.
        tissue: (rows, cols) bool, the cells that are tissue inside the slide.
        cells: (n, 4) int windows as cell ranges (row0, col0, row1, col1), end exclusive.

    Returns:
        (n, k) float32 mean shares, and (n,) bool: whether the window is
        a candidate (mostly tissue).
    """
    k = shares.shape[0]
    if len(cells) == 0:
        return np.zeros((0, k), np.float32), np.zeros(0, bool)
    masked = np.where(tissue[None], shares, 0.0)
    share_sums = _box_sums(np.moveaxis(masked, 0, -1), cells)  # (n, k)
    tissue_cells = _box_sums(tissue[..., None].astype(np.float64), cells)[:, 0]
    area = (cells[:, 2] - cells[:, 0]) * (cells[:, 3] - cells[:, 1])
    useful = (area > 0) & (tissue_cells >= MIN_TISSUE_IN_WINDOW * np.maximum(area, 1))
    means = share_sums / np.maximum(tissue_cells, 1)[:, None]
    return means.astype(np.float32), useful


def _box_sums(values: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Sums of (rows, cols, c) ``values`` over each (row0, col0, row1, col1) box, (n, c)."""
    integral = np.zeros((values.shape[0] + 1, values.shape[1] + 1, values.shape[2]))
    integral[1:, 1:] = values.cumsum(0).cumsum(1)
    r0, c0, r1, c1 = (cells[:, i] for i in range(4))
    return integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]


@dataclass
class Candidates:
    """Candidate windows: their input, level-0 box (slide's own frame) and mean shares."""

    inputs: np.ndarray  # (n,) int
    boxes: np.ndarray  # (n, 4) int: x, y, width, height
    shares: np.ndarray  # (n, k) float32

    @staticmethod
    def empty(k: int) -> Candidates:
        return Candidates(np.zeros(0, np.int64), np.zeros((0, 4), np.int64), np.zeros((0, k)))

    def __len__(self) -> int:
        return len(self.inputs)

    def subset(self, rows: np.ndarray) -> Candidates:
        return Candidates(self.inputs[rows], self.boxes[rows], self.shares[rows])


class CandidatePool:
    """Candidates of every input, pruned to what :func:`choose_windows` could pick.

    A choice takes at most ``count`` windows of one input for one concept, so
    each input's ``count`` best windows per concept are all that must be kept;
    pruning happens whenever the pool passes ``limit`` rows, so memory does not
    grow with the number of slides' tiles.
    """

    def __init__(self, k: int, count: int, limit: int = 50_000) -> None:
        self.k, self.count, self.limit = k, count, limit
        self._parts: list[Candidates] = []
        self._rows = 0

    def add(self, input_index: int, boxes: np.ndarray, shares: np.ndarray) -> None:
        inputs = np.full(len(boxes), input_index, np.int64)
        self._parts.append(Candidates(inputs, np.asarray(boxes, np.int64), shares))
        self._rows += len(boxes)
        if self._rows > self.limit:
            self._parts = [self._pruned(self.candidates())]
            self._rows = len(self._parts[0])

    def candidates(self) -> Candidates:
        if not self._parts:
            return Candidates.empty(self.k)
        return Candidates(
            np.concatenate([p.inputs for p in self._parts]),
            np.concatenate([p.boxes for p in self._parts]),
            np.concatenate([p.shares for p in self._parts]),
        )

    def _pruned(self, pool: Candidates) -> Candidates:
        keep = np.zeros(len(pool), bool)
        for input_index in np.unique(pool.inputs):
            rows = np.flatnonzero(pool.inputs == input_index)
            best = np.argsort(-pool.shares[rows], axis=0, kind="stable")[: self.count]
            keep[rows[best.ravel()]] = True
        return pool.subset(np.flatnonzero(keep))


def choose_windows(pool: Candidates, concept: int, count: int, seed: int) -> list[int]:
    """Rows of ``pool`` that most typify ``concept``, best first, spread over the inputs.

    Windows are ranked by their share of the concept (ties in a seeded order).
    Inputs then take turns, each giving its best remaining window, as long as
    that window is at least RELATIVE_FLOOR of the best share; the rest of the
    places go to the best windows left, whatever their input.
    """
    share = pool.shares[:, concept] if len(pool) else np.zeros(0)
    shuffled = np.random.default_rng(seed + concept).permutation(len(pool))
    ranked = shuffled[np.argsort(-share[shuffled], kind="stable")]
    ranked = ranked[share[ranked] > 0]
    if not len(ranked):
        return []
    floor = RELATIVE_FLOOR * share[ranked[0]]
    queues: dict[int, list[int]] = {}
    for row in ranked:
        if share[row] >= floor:
            queues.setdefault(int(pool.inputs[row]), []).append(int(row))
    chosen: list[int] = []
    while len(chosen) < count and any(queues.values()):
        heads = sorted((q[0] for q in queues.values() if q), key=lambda r: -share[r])
        for row in heads[: count - len(chosen)]:
            chosen.append(row)
            queues[int(pool.inputs[row])].pop(0)
    taken = set(chosen)
    chosen += [int(r) for r in ranked if int(r) not in taken][: count - len(chosen)]
    return chosen
