"""Non-negative least squares against a fixed concept matrix (F-SEG's project mode).

For features X (N, C) and concepts H (K, C) we solve, for every row,

    W = argmin_{W >= 0} ||X - W H||_F^2

which is what scikit-learn's ``non_negative_factorization(X, H=H,
update_H=False)`` computes. Every row is an independent K-dimensional convex
quadratic program ``min ½ wᵀ G w - bᵀ w, w >= 0`` with G = H Hᵀ and
b = H x, so after one product X Hᵀ (the only step that touches C) the work is
K x K per row. We solve all rows at once with ADMM (Boyd et al., 2011, §4.2 on
constrained QPs): the w-update uses one K x K inverse shared by every row, so
an iteration is a single (N, K) x (K, K) product. Concept banks are highly
correlated (condition numbers of G in the thousands), which slows gradient
methods; ADMM starting with ρ near the geometric mean of G's extreme
eigenvalues, and rebalancing ρ when one residual dominates the other (Boyd
et al., §3.4.1), converges in tens to a few hundred iterations regardless.

Denormal floats (which ADMM's dual variables approach as it converges) make
x86 arithmetic hundreds of times slower, so they are flushed to zero.

For k up to 12 (the default k is 8), ADMM runs a few tens of iterations
and every row is then finished exactly: ADMM knows by then which concepts
each row uses, and the rows are solved on that support (``active_set.py``).
This halves the work on the correlated banks of real tissue, where ADMM
would need a few hundred iterations, and makes each row's answer its own
exact optimum. Larger k keeps ADMM to convergence.

Problems solved together (the tiles of a batch) each keep their own ρ and
stop at their own convergence, and the exact finish is per row: a tile's
weights never depend on which other tiles shared its batch, so a slide gives
the same labels on any server and under any load.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import torch

from .active_set import EXACT_MAX_K, SupportSolver

#: Starting ρ = RHO_SCALE * sqrt(λ_min λ_max) of G; measured best across k = 8..64.
RHO_SCALE = 0.3
#: ρ is doubled or halved when one residual exceeds the other by this factor.
RHO_BALANCE = 10.0
#: How many rows are solved as one problem when a single large X is given.
CHUNK_ROWS = 1 << 17
CHECK_EVERY = 10
#: ADMM iterations before the exact finish (k <= EXACT_MAX_K). Well-separated
#: concepts converge sooner and never need the finish; correlated ones
#: would need hundreds, but their support guess is good by now.
SUPPORT_ITERATIONS = 40
#: Solvers kept for reuse, one per concept tensor and device: their set-up is a
#: few K x K factorizations, and the exact finish caches inverses across tiles.
SOLVERS_KEPT = 8


def project_onto_concepts(
    X: np.ndarray | torch.Tensor,
    H: np.ndarray | torch.Tensor,
    *,
    max_iter: int = 500,
    tol: float = 1e-4,
) -> np.ndarray | torch.Tensor:
    """Non-negative weights W (N, K) with X ≈ W H, for fixed concepts H.

    Args:
        X: (N, C) non-negative features; numpy or torch (any device).
        H: (K, C) concepts; negative entries are clipped to 0 first, as the
            F-SEG reference does.
        max_iter: ADMM iterations at most.
        tol: ADMM stops when the change of W and the constraint residual are
            both below ``tol`` relative to ||W|| (checked every 10
            iterations). For k <= 12, a problem not converged within 40
            iterations is solved exactly instead (see the module docstring).

    Returns:
        W, (N, K) float32, of the same kind (numpy or torch) and device as X.
    """
    as_numpy = isinstance(X, np.ndarray)
    x = torch.as_tensor(X)
    h = torch.as_tensor(H, device=x.device)
    if x.ndim != 2 or h.ndim != 2 or x.shape[1] != h.shape[1]:
        raise ValueError(f"X {tuple(x.shape)} and H {tuple(h.shape)} must be (N, C) and (K, C)")
    if len(x) == 0:
        w = x.new_zeros((0, h.shape[0]))
    else:
        w = torch.cat([project_batch(chunk[None], h, max_iter=max_iter, tol=tol)[0]
                       for chunk in x.float().split(CHUNK_ROWS)])  # fmt: skip
    return w.cpu().numpy() if as_numpy else w


def project_batch(
    X: torch.Tensor, H: torch.Tensor, *, max_iter: int = 500, tol: float = 1e-4
) -> torch.Tensor:
    """W (B, N, K) for B independent problems X (B, N, C) against the same H (K, C).

    Each problem converges on its own; its result does not depend on the others.
    """
    torch.set_flush_denormal(True)
    return _solver_for(H, X.device, max_iter, tol).solve(X.float())


# Solvers by the identity of the concept tensor a caller passes batch after batch
# (a job's LabelRecipe holds one for its whole life); each entry keeps that tensor,
# so its id cannot be reused by another while the entry lives.
_solvers: OrderedDict[tuple, tuple[torch.Tensor, _Solver]] = OrderedDict()
_solvers_lock = threading.Lock()


def _solver_for(H: torch.Tensor, device: torch.device, max_iter: int, tol: float) -> _Solver:
    """The solver for these concepts on ``device``, built once per concept tensor."""

    def build() -> _Solver:
        return _Solver(H.to(device).float().clamp_min(0.0), max_iter=max_iter, tol=tol)

    if H.is_inference():  # no version counter to tell an in-place change: not kept
        return build()
    key = (id(H), H._version, str(device), max_iter, tol)
    with _solvers_lock:
        entry = _solvers.get(key)  # the entry holds H, so its id names H alone
        if entry is not None:
            _solvers.move_to_end(key)
            return entry[1]
    solver = build()
    with _solvers_lock:
        _solvers[key] = (H, solver)
        while len(_solvers) > SOLVERS_KEPT:
            _solvers.popitem(last=False)
    return solver


class _Solver:
    """ADMM to find each row's support, then the exact finish where k allows it."""

    def __init__(self, concepts: torch.Tensor, max_iter: int, tol: float) -> None:
        self.concepts = concepts
        self.admm = _AdmmSolver(concepts, max_iter=max_iter, tol=tol)
        small = len(concepts) <= EXACT_MAX_K
        self.exact = SupportSolver(self.admm.gram) if small else None

    def solve(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, N, K)."""
        b = x @ self.concepts.T
        if self.exact is None:
            return self.admm.solve(b, self.admm.max_iter)[0]
        w, _ = self.admm.solve(b, min(SUPPORT_ITERATIONS, self.admm.max_iter))
        # Every problem is finished exactly, also one ADMM solved within its
        # tolerance: the exact optimum is a cell's own, so a cell's label does
        # not depend on which cells shared its problem (a tile, a region, or
        # the whole slide), and tiling cannot flip a near tie.
        for i in range(len(w)):
            w[i] = self._finish(b[i], w[i] > 0)
        return w

    def _finish(self, b: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        """One problem's (N, K) weights, exact from a support guess.

        The few rows still infeasible after the exchange rounds are solved
        by ADMM to convergence, as one problem of their own (so the answer
        still depends on nothing outside this problem).
        """
        w, settled = self.exact.finish(b, support)
        if not settled.all():
            left = ~settled
            w[left] = self.admm.solve(b[left][None], self.admm.max_iter)[0][0]
        return w


class _AdmmSolver:
    """ADMM for min ½ wᵀGw - bᵀw s.t. w >= 0, for many right-hand sides b."""

    def __init__(self, concepts: torch.Tensor, max_iter: int, tol: float) -> None:
        gram = (concepts @ concepts.T).double()
        eig = torch.linalg.eigvalsh(gram)
        top = eig[-1].clamp_min(1e-30)
        # k > C (e.g. many concepts for a small feature space) makes G singular.
        bottom = eig[0].clamp_min(1e-6 * top)
        self.rho0 = float(RHO_SCALE * torch.sqrt(bottom * top))
        self.gram = gram
        self.pinv = torch.linalg.pinv(gram).float()
        self.max_iter, self.tol = max_iter, tol
        self._inverses: dict[float, torch.Tensor] = {}

    def system_inv(self, rho: float) -> torch.Tensor:
        """(G + ρI)⁻¹, cached: ρ only ever takes a few values."""
        if rho not in self._inverses:
            eye = torch.eye(len(self.gram), dtype=self.gram.dtype, device=self.gram.device)
            self._inverses[rho] = torch.linalg.inv(self.gram + rho * eye).float()
        return self._inverses[rho]

    def solve(self, b: torch.Tensor, iterations: int) -> tuple[torch.Tensor, list[bool]]:
        """(B, N, K) right-hand sides b = x Hᵀ -> W (B, N, K), and whether
        each problem converged.

        Problem i's answer is taken when problem i converges, or after
        ``iterations``.

        The iteration is carried in one variable v = w + u (before the
        projection): z = max(v, 0) and the scaled dual u = min(v, 0), so that
        z - u = |v|. An iteration is then one fused product and three passes
        over the data:

            w = b (G + ρI)⁻¹ + |v| ρ(G + ρI)⁻¹;   v = w + min(v, 0)
        """
        batch = len(b)
        v = (b @ self.pinv).clamp_min_(0.0)  # clipped least squares (u = 0): a close start
        # Preallocated buffers: an iteration allocates nothing, which matters
        # when large allocations are mapped and unmapped (see fseg_server.memory).
        w, magnitude = torch.empty_like(v), torch.empty_like(v)
        z, z_prev, result = torch.empty_like(v), torch.empty_like(v), torch.empty_like(v)
        rho = [self.rho0] * batch
        inverses = torch.stack([self.system_inv(r) for r in rho])
        scaled = inverses * torch.tensor(rho, device=b.device).view(batch, 1, 1)
        b_term = torch.bmm(b, inverses)  # recomputed for a problem whose ρ changes
        pending = list(range(batch))
        solved = [False] * batch
        for it in range(1, iterations + 1):
            checking = it % CHECK_EVERY == 0 or it == iterations
            if checking:
                torch.clamp_min(v, 0.0, out=z_prev)
            torch.baddbmm(b_term, torch.abs(v, out=magnitude), scaled, out=w)
            v.clamp_max_(0.0).add_(w)
            if not checking:
                continue
            torch.clamp_min(v, 0.0, out=z)
            primal, dual = _residuals(w, z, z_prev)
            for i in list(pending):
                converged = primal[i] < self.tol and dual[i] < self.tol
                if converged or it == iterations:
                    result[i] = z[i]
                    solved[i] = converged
                    pending.remove(i)
                    continue
                old = rho[i]
                if self._rebalance(rho, i, primal[i], dual[i]):
                    # The scaled dual u = min(v, 0) scales by old/new ρ; z stays.
                    v[i] = z[i] + v[i].clamp_max(0.0) * (old / rho[i])
                    inverses[i] = self.system_inv(rho[i])
                    scaled[i] = inverses[i] * rho[i]
                    torch.mm(b[i], inverses[i], out=b_term[i])
            if not pending:
                break
        return result, solved

    @staticmethod
    def _rebalance(rho: list[float], i: int, primal: float, dual: float) -> bool:
        """Residual balancing (Boyd et al., §3.4.1): change ρ[i] when one residual dominates."""
        if primal > RHO_BALANCE * dual:
            rho[i] *= 2
        elif dual > RHO_BALANCE * primal:
            rho[i] /= 2
        else:
            return False
        return True


def _residuals(w: torch.Tensor, z: torch.Tensor, z_prev: torch.Tensor) -> tuple[list, list]:
    """Per problem: primal (w - z) and dual (change of z) residuals relative to ||z||."""
    scale = torch.linalg.vector_norm(z, dim=(1, 2)).clamp_min(1e-12)
    primal = torch.linalg.vector_norm(w - z, dim=(1, 2)) / scale
    dual = torch.linalg.vector_norm(z - z_prev, dim=(1, 2)) / scale
    return primal.tolist(), dual.tolist()
