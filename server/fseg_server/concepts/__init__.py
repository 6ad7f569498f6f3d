"""Concept banks: storing, importing, fitting and naming k-means centres."""

from .bank import ConceptBank, ConceptClass, bank_from_bytes, load_bank
from .importer import import_joblib
from .kmeans import Reservoir, fit_concepts, kmeans

__all__ = [
    "ConceptBank",
    "ConceptClass",
    "Reservoir",
    "bank_from_bytes",
    "fit_concepts",
    "import_joblib",
    "kmeans",
    "load_bank",
]
