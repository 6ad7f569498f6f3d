"""The F-SEG authors' classify mode, rebuilt with scikit-learn as the oracle for fseg's.

The reference (deepathology/fseg, ``FSeg.predict_clustering``) factorizes one
image's activations, arranged as a (channels, cells) matrix, with
``sklearn.decomposition.NMF(n_components=n, init="random", random_state=0)``
and every other setting at its default; the factor over channels holds the
components' concept vectors, the factor over cells their maps. Each component
takes the class of the concept-bank centre nearest to its concept vector by
cosine distance; the maps are upsampled bilinearly to the image's size and
every pixel takes the class of the component whose map is largest there.

Written here from that description (not copied), for the tests and for
``bench/bench_classify_reference.py``.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.decomposition import NMF
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics.pairwise import cosine_distances


def reference_components(features: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """NMF of one image's (C, h, w) features: maps (n, h, w) and concept vectors (n, C)."""
    channels, rows, cols = features.shape
    model = NMF(n_components=n, init="random", random_state=0)
    with warnings.catch_warnings():
        # The reference runs scikit-learn's 200 sweeps whether or not they converge.
        warnings.simplefilter("ignore", ConvergenceWarning)
        concepts = model.fit_transform(features.reshape(channels, rows * cols))  # (C, n)
    return model.components_.reshape(n, rows, cols), concepts.T


def reference_classes(concepts: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """The bank class of each component: the centre nearest by cosine distance."""
    return cosine_distances(concepts, centres).argmin(axis=1)


def reference_labels(maps: np.ndarray, classes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) class labels: maps upsampled bilinearly to ``size``, argmax, then classes."""
    upsampled = F.interpolate(torch.from_numpy(maps[None]).float(), size, mode="bilinear")
    return classes[upsampled[0].argmax(0).numpy()]


def reference_classify(
    features: np.ndarray, centres: np.ndarray, n: int, size: tuple[int, int]
) -> np.ndarray:
    """The reference's labels of one image from its (C, h, w) features."""
    maps, concepts = reference_components(features, n)
    return reference_labels(maps, reference_classes(concepts, centres), size)
