"""project_onto_concepts against scikit-learn's reference call, on identical inputs.

The F-SEG reference solves project mode with
``non_negative_factorization(X, H=H, update_H=False, max_iter=10000)``. Inputs
are non-negative features built from the F-SEG authors' UNI concept bank:
each cell a sparse mixture of two concepts plus rectified Gaussian noise.
Reported per (N, k): both wall times, the speed-up, and the agreement of the
argmax labels. scikit-learn is run only up to --max-sklearn cells (its time
grows linearly with N; beyond that the speed-up is not measured).

    python bench/bench_project.py            # N = 1e4, 1e5, 1e6; k = 8, 32, 64
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED_DIR, print_table, write_json
from fseg_server.factorize import project_onto_concepts


def features(concepts: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    k = len(concepts)
    weights = np.zeros((n, k), np.float32)
    share = rng.dirichlet([1, 1], n).astype(np.float32)
    for j in range(2):
        weights[np.arange(n), rng.integers(0, k, n)] += share[:, j]
    x = weights @ concepts
    x += 0.3 * rng.standard_normal(x.shape, dtype=np.float32)
    return np.maximum(x, 0, out=x)


def reference(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    from sklearn.decomposition import non_negative_factorization

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w, _, _ = non_negative_factorization(
            x, H=h, W=None, n_components=len(h), update_H=False, max_iter=10000, random_state=0
        )
    return w


def timed(fn, *args):
    started = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", default="10000,100000,1000000")
    parser.add_argument("--k", default="8,32,64")
    parser.add_argument("--max-sklearn", type=int, default=100_000)
    args = parser.parse_args()
    import joblib

    bank = joblib.load(SHARED_DIR / "concept-banks" / "uni.joblib")
    rows = []
    for k in (int(v) for v in args.k.split(",")):
        h = np.clip(bank[k], 0, None).astype(np.float32)
        for n in (int(v) for v in args.n.split(",")):
            x = features(h, n)
            project_onto_concepts(x[:1000], h)  # warm-up: thread pools, allocator
            w, ours = timed(project_onto_concepts, x, h)
            row = {
                "N": n,
                "k": k,
                "fseg_s": ours,
                "sklearn_s": None,
                "speedup": None,
                "agree": None,
            }
            if n <= args.max_sklearn:
                w_ref, theirs = timed(reference, x, h)
                row.update(
                    sklearn_s=theirs,
                    speedup=theirs / ours,
                    agree=float((w.argmax(1) == w_ref.argmax(1)).mean()),
                )
            rows.append(row)
            print_table([row])
    print_table(rows, "project_onto_concepts vs scikit-learn non_negative_factorization")
    target = next((r for r in rows if r["N"] == 100_000 and r["k"] == 32), None)
    if target and target["speedup"]:
        print(
            f"\nN=1e5, k=32: {target['speedup']:.1f}x faster, agreement {target['agree']:.4f} "
            "(targets: >= 50x, >= 0.99)"
        )
    write_json("project", {"rows": rows})


if __name__ == "__main__":
    main()
