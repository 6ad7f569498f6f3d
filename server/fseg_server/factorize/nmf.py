"""Per-image NMF for F-SEG's classify mode, batched over images on torch.

Each image's feature cells X (N, C) are factorized as X ≈ M Q with M (N, n)
the component maps and Q (n, C) the component concept vectors.

The F-SEG authors factorize with scikit-learn's ``NMF(n, init="random",
random_state=0)`` and its defaults: coordinate descent (Hsieh and Dhillon,
2011), which for the Frobenius loss is hierarchical alternating least squares
(Cichocki and Phan, 2009), up to 200 sweeps, stopping once the projected
gradient has fallen to 1e-4 of its first sweep's. NMF has many local minima,
and which one an image lands in (and how each component's scale is split
between its map and its concept vector, which decides the map's argmax)
depends on the start and the order of updates. So this follows the reference
step by step: the same random start (drawn by NumPy's legacy generator, as
scikit-learn draws it), concept vectors updated before maps in each sweep,
entries clipped at zero, and the same stopping rule. Labels then agree with
the reference's on most cells (``tests/test_classify_reference.py``).
"""

from __future__ import annotations

import numpy as np
import torch

#: scikit-learn's NMF defaults, which the F-SEG reference keeps.
MAX_ITERATIONS = 200
TOLERANCE = 1e-4


def batched_nmf(
    X: torch.Tensor,
    n_components: int,
    *,
    max_iterations: int = MAX_ITERATIONS,
    tol: float = TOLERANCE,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Factorize every image of a batch, each on its own.

    Args:
        X: (B, N, C) non-negative features of B images with N cells each.
        n_components: n, the rank of each factorization.
        max_iterations: coordinate-descent sweeps at most (each updates Q, then M).
        tol: an image stops once a sweep's projected-gradient norm (L1) is at
            most ``tol`` times its first sweep's.
        seed: random initialisation seed; the same input gives the same output.

    Returns:
        M (B, N, n) component maps and Q (B, n, C) component concept vectors.
    """
    x = X.float()
    # Rows of (B, n, R) factors are the components, contiguous for the sweeps.
    maps_t, concepts = _random_start(x, n_components, seed)  # (B, n, N), (B, n, C)
    x_t = x.transpose(1, 2)
    first: torch.Tensor | None = None
    active = torch.ones(len(x), dtype=torch.bool, device=x.device)
    for _ in range(max_iterations):
        rows = active.nonzero().squeeze(1)
        m, q = maps_t[rows], concepts[rows]
        violation = _sweep(q, m @ x[rows], m @ m.transpose(1, 2))
        violation += _sweep(m, q @ x_t[rows], q @ q.transpose(1, 2))
        maps_t[rows], concepts[rows] = m, q
        if first is None:
            first = violation
        done = (first[rows] == 0) | (violation <= tol * first[rows])
        active[rows[done]] = False
        if not bool(active.any()):
            break
    return maps_t.transpose(1, 2), concepts


def _random_start(x: torch.Tensor, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Transposed maps (B, n, N) and concepts (B, n, C) as scikit-learn's
    ``init="random"`` starts them for the (C, N) matrix the reference factorizes:
    |normal| draws scaled by sqrt(mean(X) / n), the maps drawn first."""
    _, cells, channels = x.shape
    rng = np.random.RandomState(seed)
    maps_t = torch.from_numpy(np.abs(rng.standard_normal((n, cells))).astype(np.float32))
    concepts = torch.from_numpy(np.abs(rng.standard_normal((channels, n)).T).astype(np.float32))
    # One draw for every image, so an image's result does not depend on its batch.
    scale = (x.mean(dim=(1, 2), keepdim=True) / n).sqrt()
    return maps_t.to(x.device) * scale, concepts.contiguous().to(x.device) * scale


def _sweep(factor: torch.Tensor, cross: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
    """One coordinate-descent sweep over the rows of ``factor`` (B, n, R), in place.

    ``cross`` is the other factor times the data (B, n, R) and ``gram`` the
    other factor's Gram matrix (B, n, n). Returns each image's projected
    gradient L1 norm before the sweep's steps (B,), in float64.
    """
    # Gradients of every row at once, then kept current after each row's step
    # by a rank-one update: far cheaper on torch than a product per row. Row j's
    # gradient is final once its step is taken, so after the sweep ``grads``
    # holds the gradient each step saw, and ``before`` the entry it started from.
    before = factor.clone()
    grads = gram @ factor - cross
    for j in range(factor.shape[1]):
        row, grad = factor[:, j], grads[:, j]
        # A component whose other factor is all zero has a zero gradient too: no step.
        hess = gram[:, j, j : j + 1].clamp_min(torch.finfo(factor.dtype).tiny)
        stepped = (row - grad / hess).clamp_min(0)
        grads[:, j + 1 :].addcmul_(gram[:, j + 1 :, j : j + 1], (stepped - row)[:, None])
        row.copy_(stepped)
    # At a zero entry only a step into the positive side counts as violation.
    projected = torch.where(before == 0, grads.clamp(max=0), grads)
    return projected.abs().sum((1, 2), dtype=torch.float64)
