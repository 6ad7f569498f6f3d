"""Factorizing feature grids against a concept bank (F-SEG's three modes)."""

from .modes import Mode, concept_scores, labels_from_scores
from .nmf import batched_nmf
from .nnls import project_batch, project_onto_concepts
from .upsample import guide_cells, guided_upsample

__all__ = [
    "Mode",
    "batched_nmf",
    "concept_scores",
    "guide_cells",
    "guided_upsample",
    "labels_from_scores",
    "project_batch",
    "project_onto_concepts",
]
