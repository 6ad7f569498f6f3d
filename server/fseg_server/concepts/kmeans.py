"""k-means for concept banks: a bounded reservoir of samples and Lloyd's algorithm on torch.

Fitting several k happens in one pass over the data: vectors stream into a
:class:`Reservoir` (a uniform sample of bounded size, so memory does not grow
with the number of inputs), and every k is then fitted on that sample, on the
GPU when there is one. :func:`fit_concepts` is what a bank's fit calls: k-means,
with one concept kept for glass when the features measure it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

DISTANCE_CHUNK = 1 << 14  # rows per distance block, bounds memory at 16k x k floats
MOSTLY_GLASS = 0.5  # a sample whose glass share is above this is a sample of glass


class Reservoir:
    """A uniform random sample of at most ``capacity`` vectors from a stream.

    Vitter's algorithm R, applied to whole batches: after n vectors have been
    seen, each of them is in the sample with probability capacity / n.
    """

    def __init__(self, capacity: int, dim: int, seed: int = 0, tag_columns: int = 0) -> None:
        self.capacity = capacity
        self.seen = 0
        self._data = np.empty((capacity, dim), np.float32)
        # Integers that travel with each vector (where it came from: provenance.py).
        self._tags = np.zeros((capacity, tag_columns), np.int64)
        self._rng = np.random.default_rng(seed)

    def add(self, vectors: np.ndarray, tags: np.ndarray | None = None) -> None:
        """Offer a (n, dim) batch to the sample, with (n, tag_columns) ``tags`` if kept."""
        if tags is None:
            tags = np.zeros((len(vectors), self._tags.shape[1]), np.int64)
        parts = max(1, len(vectors) // 4096)
        for vector_block, tag_block in zip(
            np.array_split(vectors, parts), np.array_split(tags, parts), strict=True
        ):
            self._add_block(np.asarray(vector_block, np.float32), np.asarray(tag_block, np.int64))

    def _add_block(self, block: np.ndarray, tags: np.ndarray) -> None:
        free = min(max(self.capacity - self.seen, 0), len(block))
        self._data[self.seen : self.seen + free] = block[:free]
        self._tags[self.seen : self.seen + free] = tags[:free]
        rest = block[free:]
        positions = self.seen + free + np.arange(len(rest))
        slots = (self._rng.random(len(rest)) * (positions + 1)).astype(np.int64)
        keep = slots < self.capacity
        # Later vectors win when two land in one slot, as a sequential pass would.
        self._data[slots[keep]] = rest[keep]
        self._tags[slots[keep]] = tags[free:][keep]
        self.seen += len(block)

    @property
    def sample(self) -> np.ndarray:
        return self._data[: min(self.seen, self.capacity)]

    @property
    def tag_columns(self) -> int:
        return self._tags.shape[1]

    @property
    def tags(self) -> np.ndarray:
        """The (n, tag_columns) tags of :attr:`sample`'s rows."""
        return self._tags[: min(self.seen, self.capacity)]


class Concepts(NamedTuple):
    """A bank's concepts for one k: centres (k, C), and whether the last is glass."""

    centres: torch.Tensor
    glass_last: bool


def fit_concepts(
    x: torch.Tensor, k: int, *, glass_channel: int | None = None, seed: int = 0
) -> Concepts:
    """The k concepts of a bank fitted on samples ``x`` (n, C).

    Plain k-means, unless channel ``glass_channel`` of the features is a glass
    share: then the samples that are mostly glass become one concept, their
    mean (the last row), and k-means fits the other k - 1 on the rest. Left to
    itself, k-means spends several concepts on shades of glass and on the glass
    at tissue edges (two to four of eight on lung H&E), and the tissue types
    then share the few left; glass needs one concept, as it is one thing.
    With no sample of glass, or fewer than k - 1 of tissue, it is plain k-means.
    """
    glass = x[:, glass_channel] > MOSTLY_GLASS if glass_channel is not None else None
    if glass is None or k < 2 or not glass.any() or int((~glass).sum()) < k - 1:
        return Concepts(kmeans(x, k, seed=seed), glass_last=False)
    tissue_concepts = kmeans(x[~glass], k - 1, seed=seed)
    glass_concept = x[glass].float().mean(0, keepdim=True)
    return Concepts(torch.cat([tissue_concepts, glass_concept]), glass_last=True)


def kmeans(
    x: torch.Tensor,
    k: int,
    *,
    iterations: int = 100,
    tol: float = 1e-4,
    seed: int = 0,
    restarts: int = 4,
) -> torch.Tensor:
    """Centres (k, C) of ``x`` (n, C): the best of ``restarts`` k-means++ runs.

    Each run is seeded by k-means++ and refined by Lloyd iterations; the run
    with the lowest inertia wins, as a single seeding can settle in a poor
    local minimum. Deterministic for a given seed. Clusters that empty out are
    re-seeded with the point farthest from its centre.
    """
    if len(x) < k:
        raise ValueError(f"k-means needs at least k={k} samples, got {len(x)}")
    x = x.float()
    best, best_inertia = None, float("inf")
    for run in range(restarts):
        generator = torch.Generator().manual_seed(seed + run)
        centres, inertia = _lloyd(x, _kmeans_plus_plus(x, k, generator), iterations, tol)
        if inertia < best_inertia:
            best, best_inertia = centres, inertia
    return best


def _lloyd(
    x: torch.Tensor, centres: torch.Tensor, iterations: int, tol: float
) -> tuple[torch.Tensor, float]:
    """Lloyd iterations from ``centres``; returns the centres and their inertia."""
    k = len(centres)
    previous_inertia = float("inf")
    for _ in range(iterations):
        assignment, distance = _assign(x, centres)
        inertia = float(distance.sum())
        sums = torch.zeros_like(centres).index_add_(0, assignment, x)
        counts = torch.bincount(assignment, minlength=k).to(x.dtype)
        empty = counts == 0
        centres = sums / counts.clamp_min(1).unsqueeze(1)
        if empty.any():
            far = torch.topk(distance, int(empty.sum())).indices
            centres[empty] = x[far]
        if previous_inertia - inertia <= tol * max(previous_inertia, 1e-12) and not empty.any():
            break
        previous_inertia = inertia
    return centres, float(_assign(x, centres)[1].sum())


def _kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Arthur and Vassilvitskii's seeding: each new centre drawn by squared distance."""
    first = int(torch.randint(len(x), (1,), generator=generator))
    centres = [x[first]]
    nearest = ((x - x[first]) ** 2).sum(1)
    for _ in range(1, k):
        weights = nearest.cpu().double()
        if float(weights.sum()) <= 0:  # fewer distinct points than k
            pick = int(torch.randint(len(x), (1,), generator=generator))
        else:
            pick = int(torch.multinomial(weights, 1, generator=generator))
        centres.append(x[pick])
        nearest = torch.minimum(nearest, ((x - x[pick]) ** 2).sum(1))
    return torch.stack(centres)


def _assign(x: torch.Tensor, centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centre and squared distance to it for every row, in blocks."""
    centre_norms = (centres * centres).sum(1)
    labels, distances = [], []
    for block in x.split(DISTANCE_CHUNK):
        d = (block * block).sum(1, keepdim=True) - 2 * block @ centres.T + centre_norms
        value, index = d.min(dim=1)
        labels.append(index)
        distances.append(value.clamp_min(0))
    return torch.cat(labels), torch.cat(distances)
