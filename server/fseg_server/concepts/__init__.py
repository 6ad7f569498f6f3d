"""Concept banks: storing, importing, fitting and naming k-means centres."""

from .bank import ConceptBank, ConceptClass, load_bank
from .importer import import_joblib
from .kmeans import Reservoir, kmeans

__all__ = ["ConceptBank", "ConceptClass", "Reservoir", "import_joblib", "kmeans", "load_bank"]
