"""The exact finish of project mode's least squares, for small k.

ADMM (``nnls.py``) approaches the optimum slowly when the concepts are
correlated, but it knows early which concepts a cell uses. Given a guess F of
that support, the best weights on F solve G_FF w_F = b_F exactly, and the
Karush-Kuhn-Tucker conditions tell whether they are *the* optimum:
w_F >= 0, and the gradient y = G w - b is >= 0 off F. A cell whose guess
fails exchanges the offending indices and tries again. This is block
principal pivoting (Kim and Park, SIAM J. Sci. Comput. 33(6), 2011): exchange
every offending index while their number falls, a few more times when it
does not, then one index at a time (the largest), which guarantees the
search ends.

Cells with the same support share one K x K inverse, so a round costs one
pass over the cells plus one small product per distinct support. With k
concepts there are at most 2^k supports, which keeps this to small k; the
inverses are cached for the solver's lifetime (one bank, many tiles).

The arithmetic is float64: correlated banks have Gram condition numbers in
the thousands, and the sign tests must not flip on rounding noise.
"""

from __future__ import annotations

import torch

#: Largest k finished exactly (2^k possible supports, each a cached inverse).
EXACT_MAX_K = 12
#: Exchange rounds at most. Nearly every cell settles in two or three; rounds
#: over the last few cells are cheap, and ADMM takes the very few left after.
MAX_ROUNDS = 30
#: Full exchanges allowed without a fall in the number of offending indices.
BACKUP_EXCHANGES = 3
#: Sign tests tolerate this much: gradients relative to the cell's largest |b|,
#: weights relative to that over G's largest diagonal entry (w ~ b / G), so the
#: tests mean the same whatever the scale of the features.
FEASIBILITY_SLACK = 1e-9


class SupportSolver:
    """Exact non-negative least squares for many right-hand sides, one Gram matrix."""

    def __init__(self, gram: torch.Tensor) -> None:
        """``gram``: G = H Hᵀ, (K, K), with K at most :data:`EXACT_MAX_K`."""
        if len(gram) > EXACT_MAX_K:
            raise ValueError(f"exact finishing is for k <= {EXACT_MAX_K}, not {len(gram)}")
        self.gram = gram.double()
        self.bits = 2 ** torch.arange(len(gram), device=gram.device)
        # Turns a gradient tolerance into a weight tolerance (a host sync: once, here).
        self._weight_scale = float(self.gram.diagonal().max().clamp_min(1e-30))
        self._inverses: dict[int, torch.Tensor] = {}

    def finish(self, b: torch.Tensor, support: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Optimal weights from a support guess.

        Args:
            b: (N, K) H x per cell.
            support: (N, K) bool, the guessed positive weights.

        Returns:
            w (N, K) float32 and settled (N,) bool: where settled, w is the
            exact optimum; elsewhere w is zero and the caller keeps its own.
        """
        b = b.double()
        n, k = b.shape
        w = torch.zeros_like(b)
        settled = torch.zeros(n, dtype=torch.bool, device=b.device)
        # The state of the cells still searching, compacted every round.
        rows = torch.arange(n, device=b.device)
        rhs, on = b, support.clone()
        limit = FEASIBILITY_SLACK * b.abs().amax(dim=1, keepdim=True).clamp_min(1e-30)
        fewest = torch.full((n,), k + 1, device=b.device)
        backups = torch.full((n,), BACKUP_EXCHANGES, device=b.device)
        for _ in range(MAX_ROUNDS):
            trial = self._solve_on_supports(rhs, on)
            gradient = trial @ self.gram - rhs
            # On F the weights must be >= 0; off F the gradient must be.
            offending = torch.where(on, trial < -limit / self._weight_scale, gradient < -limit)
            count = offending.sum(dim=1)
            done = count == 0
            w[rows[done]] = trial[done].clamp_min(0.0)
            settled[rows[done]] = True
            searching = ~done
            rows, rhs, on, limit = rows[searching], rhs[searching], on[searching], limit[searching]
            offending, count = offending[searching], count[searching]
            fewest, backups = fewest[searching], backups[searching]
            if len(rows) == 0:
                break
            on = on ^ _exchange(offending, count, fewest, backups)
        return w.float(), settled

    def _solve_on_supports(self, rhs: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        """w with w_F = G_FF⁻¹ b_F and zeros off F, per cell; cells grouped by F."""
        codes = (support.long() * self.bits).sum(dim=1)
        order = torch.argsort(codes)
        distinct, counts = torch.unique_consecutive(codes[order], return_counts=True)
        ordered = rhs[order]
        solved = torch.empty_like(ordered)
        start = 0
        for code, size in zip(distinct.tolist(), counts.tolist(), strict=True):
            group = slice(start, start + size)
            torch.mm(ordered[group], self._inverse(code), out=solved[group])
            start += size
        result = torch.empty_like(solved)
        result[order] = solved
        return result

    def _inverse(self, code: int) -> torch.Tensor:
        """G_FF⁻¹ embedded in a K x K zero matrix, for the support whose bit mask is ``code``."""
        if code not in self._inverses:
            k = len(self.gram)
            index = torch.tensor([i for i in range(k) if code >> i & 1], device=self.gram.device)
            embedded = torch.zeros_like(self.gram)
            if len(index):
                # pinv: with k > C (more concepts than feature channels) G_FF may be singular.
                block = torch.linalg.pinv(self.gram[index][:, index])
                embedded[index[:, None], index[None, :]] = block
            self._inverses[code] = embedded
        return self._inverses[code]


def _exchange(
    offending: torch.Tensor, count: torch.Tensor, fewest: torch.Tensor, backups: torch.Tensor
) -> torch.Tensor:
    """Which indices each searching cell moves across F (Kim and Park's rule).

    ``fewest`` (the fewest offending indices seen) and ``backups`` (full
    exchanges left without improvement) are updated in place.
    """
    improved = count < fewest
    full = improved | (backups > 0)
    torch.where(improved, count, fewest, out=fewest)
    spent = torch.where(full & ~improved, backups - 1, backups)
    torch.where(improved, torch.full_like(backups, BACKUP_EXCHANGES), spent, out=backups)
    largest = offending.shape[1] - 1 - offending.flip(1).int().argmax(dim=1)
    single = torch.zeros_like(offending)
    single[torch.arange(len(offending), device=offending.device), largest] = True
    return torch.where(full[:, None], offending, single)
