"""Project mode's exact finish: block principal pivoting on a support guess.

The reference for every answer here is SciPy's Lawson-Hanson NNLS, an
independent exact solver, run row by row.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import nnls

from fseg_server.factorize import active_set, project_onto_concepts
from fseg_server.factorize import nnls as fseg_nnls
from fseg_server.factorize.active_set import EXACT_MAX_K, SupportSolver


def correlated_concepts(k: int, channels: int, seed: int = 0) -> np.ndarray:
    """Concepts that share most of their mass, like centres fitted on one tissue
    type's variations: their Gram matrix is badly conditioned."""
    rng = np.random.default_rng(seed)
    common = rng.random(channels)
    return (common + 0.15 * rng.random((k, channels))).astype(np.float32)


def features(concepts: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    weights = rng.random((n, len(concepts))) * (rng.random((n, len(concepts))) < 0.35)
    x = weights @ concepts + 0.05 * rng.standard_normal((n, concepts.shape[1]))
    return np.maximum(x, 0).astype(np.float32)


def reference(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    return np.stack([nnls(h.T.astype(np.float64), row.astype(np.float64))[0] for row in x])


def assert_optimal(w: np.ndarray, x: np.ndarray, h: np.ndarray) -> None:
    """w is the reference optimum, up to what float32 inputs allow."""
    expected = reference(x, h)
    residual = np.linalg.norm(x - w.astype(np.float64) @ h, axis=1)
    best = np.linalg.norm(x - expected @ h, axis=1)
    assert w.min() >= 0
    assert (residual <= best * (1 + 1e-6) + 1e-7).all()
    # Gram condition numbers in the thousands turn float32 rounding of the
    # inputs into weight errors of about 1e-4.
    assert np.abs(w - expected).max() < 1e-3


def test_the_gram_matrix_of_the_test_concepts_is_badly_conditioned():
    h = correlated_concepts(8, 21)
    assert np.linalg.cond(h @ h.T) > 1e3


@pytest.mark.parametrize("guess", ["nothing", "everything", "random"])
def test_the_finish_reaches_the_exact_optimum_from_any_support_guess(guess):
    h = correlated_concepts(8, 21)
    x = features(h, 400)
    b = torch.from_numpy(x @ h.T)
    support = {
        "nothing": torch.zeros(b.shape, dtype=torch.bool),
        "everything": torch.ones(b.shape, dtype=torch.bool),
        "random": torch.rand(b.shape, generator=torch.Generator().manual_seed(0)) < 0.5,
    }[guess]
    w, settled = SupportSolver(torch.from_numpy(h @ h.T)).finish(b, support)
    assert bool(settled.all())
    assert_optimal(w.numpy(), x, h)


@pytest.mark.parametrize("scale", [1e-3, 1e3])
def test_the_finish_is_exact_whatever_the_scale_of_the_features(scale):
    # Unnormalised extractors give activations in the thousands; the sign tests
    # must not accept clearly negative weights because b is large.
    h = correlated_concepts(8, 21, seed=3) * scale
    x = features(h / scale, 300, seed=3) * scale
    b = torch.from_numpy(x.astype(np.float64) @ h.T.astype(np.float64))
    none = torch.zeros(b.shape, dtype=torch.bool)
    w, settled = SupportSolver(torch.from_numpy(h.astype(np.float64) @ h.T)).finish(b, none)
    assert bool(settled.all())
    expected = reference(x, h)
    assert np.abs(w.numpy() - expected).max() < 1e-4 * max(1.0, float(expected.max()))


def test_project_mode_is_exact_on_correlated_concepts():
    # ADMM alone would stop at its tolerance here (hundreds of iterations away
    # from convergence); the finish gives the optimum itself.
    h = correlated_concepts(8, 21, seed=1)
    x = features(h, 3000, seed=1)
    w = project_onto_concepts(x, h)
    assert_optimal(w, x, h)


def test_rows_the_exchange_rounds_do_not_settle_are_left_to_admm(monkeypatch):
    monkeypatch.setattr(active_set, "MAX_ROUNDS", 0)  # nothing settles by exchange
    monkeypatch.setattr(fseg_nnls, "SUPPORT_ITERATIONS", 1)  # nothing converges first
    fseg_nnls._solvers.clear()
    h = correlated_concepts(6, 21, seed=2)
    x = features(h, 500, seed=2)
    w = project_onto_concepts(x, h, tol=1e-6, max_iter=20000)
    fseg_nnls._solvers.clear()
    assert_optimal(w, x, h)


def test_the_exact_finish_is_for_small_k_only():
    with pytest.raises(ValueError, match="k <= 12"):
        SupportSolver(torch.eye(EXACT_MAX_K + 1, dtype=torch.float64))
