"""The three F-SEG modes: from a batch of feature grids to per-cell class scores.

Every mode returns *scores* (B, M, h, w) and an *index map* (B, M) that says
which concept class each of the M score channels stands for. Labels are the
index map applied to the argmax of the scores after upsampling
(:func:`labels_from_scores`), as the reference upsamples W before its argmax
so that boundaries are finer than the feature grid; with the tile's colours
at hand, the upsampling follows visible edges (see ``upsample.py``).

* ``project``: W from non-negative least squares against the bank's centres
  (negatives clipped); M = k and the index map is the identity.
* ``classify``: NMF of each image's own features into n components; each
  component's concept vector goes to the nearest bank centre by cosine
  distance; M = n.
* ``cluster``: cosine similarity to every centre, no factorization (the
  paper's baseline); M = k.
"""

from __future__ import annotations

from enum import Enum

import torch
import torch.nn.functional as F

from .nmf import batched_nmf
from .nnls import project_batch
from .upsample import guided_upsample

# Labels only need the argmax of W; 1e-3 agrees with scikit-learn's tighter
# solution on more than 99.8% of cells (bench/bench_project.py) at half the work.
LABEL_TOLERANCE = 1e-3


class Mode(str, Enum):
    """How feature cells are turned into concept classes."""

    PROJECT = "project"
    CLASSIFY = "classify"
    CLUSTER = "cluster"


def concept_scores(
    features: torch.Tensor,
    concepts: torch.Tensor,
    mode: Mode | str,
    *,
    components: int = 8,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-cell scores for a batch of feature grids.

    Args:
        features: (B, C, h, w) non-negative features.
        concepts: (k, C) the bank's centres for the chosen k.
        mode: ``project``, ``classify`` or ``cluster``.
        components: n, the NMF rank of classify mode.
        seed: NMF initialisation seed (classify mode).

    Returns:
        scores (B, M, h, w) float32 and index map (B, M) int64 of class indices.
    """
    mode = Mode(mode)
    batch, channels, rows, cols = features.shape
    x = features.float().permute(0, 2, 3, 1).reshape(batch, rows * cols, channels)
    h = concepts.to(x.device).float()
    if mode is Mode.PROJECT:
        w = project_batch(x, h, tol=LABEL_TOLERANCE)
        index = torch.arange(len(h), device=x.device).expand(batch, -1)
    elif mode is Mode.CLUSTER:
        w = F.normalize(x, dim=-1) @ F.normalize(h, dim=-1).T
        index = torch.arange(len(h), device=x.device).expand(batch, -1)
    else:
        n = min(components, rows * cols)
        # One image at a time: a batched product may round differently with the
        # batch's size, and an image's classes must not depend on its batch.
        parts = [batched_nmf(image[None], n, seed=seed) for image in x]
        w = torch.cat([maps for maps, _ in parts])
        component_vectors = torch.cat([vectors for _, vectors in parts])
        similarity = F.normalize(component_vectors, dim=-1) @ F.normalize(h, dim=-1).T
        index = similarity.argmax(dim=-1)
    scores = w.transpose(1, 2).reshape(batch, -1, rows, cols)
    return scores, index


def labels_from_scores(
    scores: torch.Tensor, index: torch.Tensor, upsample: int, guide: torch.Tensor | None = None
) -> torch.Tensor:
    """Class labels (B, h * upsample, w * upsample) uint8 from (B, M, h, w) scores.

    With a ``guide`` (label-pixel colours from :func:`guide_cells`) the scores
    are upsampled along the tissue's visible edges (:func:`guided_upsample`);
    without one, bilinearly with pixel-centre alignment (align_corners=False),
    as the reference does.
    """
    if upsample > 1 and guide is not None:
        scores = guided_upsample(scores, guide, upsample)
    elif upsample > 1:
        scores = F.interpolate(scores, scale_factor=upsample, mode="bilinear", align_corners=False)
    winner = scores.argmax(dim=1)  # (B, H, W) indices into M
    labels = torch.gather(index, 1, winner.flatten(1)).view_as(winner)
    return labels.to(torch.uint8)
