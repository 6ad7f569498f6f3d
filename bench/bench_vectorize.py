"""Vectorization speed: label grid -> exact polygons -> coverage simplification -> level 0.

The grid imitates a segmented slide: ``--classes`` blob-like regions (argmax of
smooth random fields with detail at 250, 60 and 15 cells, upsampled bilinearly
from low resolution), a little per-cell noise so boundaries are ragged at the
cell level with some isolated cells, and a nodata margin (glass) around an
irregular tissue outline. Everything is seeded, so runs are comparable.

Timed steps: boundary-edge count (the two whole-grid scans alone), trace
(exact polygons), simplify (coverage simplification at the default tolerance),
transform (grid -> level-0 pixels), and with ``--min-cells`` the sieve first.
``total`` = sieve + trace + simplify + transform, which is what
``vectorize_labels`` does. The target is a
total under 10 s for 10,000 x 10,000 cells with 8 classes on a 2-core CPU.

    python bench/bench_vectorize.py                     # 2,500 and 10,000 cells
    python bench/bench_vectorize.py --size 10000 --classes 8 --noise 0.03 --min-cells 4
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import shapely
from scipy import ndimage

from common import print_table, write_json
from fseg_server.vectorize import (
    DEFAULT_SIMPLIFY,
    clip_polygons,
    count_boundary_edges,
    label_polygons,
    sieve,
    simplify_coverage,
    to_output_frame,
)

NODATA = 255
TARGET_S = 10.0
T = TypeVar("T")


def upsample(small: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize (cell centres aligned), separable so it stays cheap at 10^8 cells."""
    out = small.astype(np.float32)
    for axis, n in enumerate(shape):
        m = out.shape[axis]
        pos = np.clip((np.arange(n) + 0.5) * m / n - 0.5, 0, m - 1)
        i0 = np.floor(pos).astype(np.int64)
        i1 = np.minimum(i0 + 1, m - 1)
        t = (pos - i0).astype(np.float32)
        t = t[:, None] if axis == 0 else t[None, :]
        out = np.take(out, i0, axis=axis) * (1 - t) + np.take(out, i1, axis=axis) * t
    return out


def smooth_field(
    rng: np.random.Generator, size: int, octaves: list[tuple[int, float]]
) -> np.ndarray:
    """Sum of smoothed noise at several scales (in cells), built at the finest one's resolution."""
    fine = max(size // octaves[-1][0], 4)
    acc = np.zeros((fine, fine), np.float32)
    for scale, amplitude in octaves:
        n = max(size // scale, 4)
        f = ndimage.gaussian_filter(rng.standard_normal((n, n)).astype(np.float32), 1.0)
        acc += amplitude * upsample(f / (f.std() + 1e-9), (fine, fine))
    return upsample(acc, (size, size))


def realistic_grid(size: int, classes: int, noise: float, seed: int = 0) -> np.ndarray:
    """Deterministic uint8 label grid, ``size`` x ``size``, 255 = glass."""
    rng = np.random.default_rng(seed)
    best = np.full((size, size), -np.inf, np.float32)
    labels = np.zeros((size, size), np.uint8)
    for c in range(classes):
        score = smooth_field(rng, size, [(250, 1.0), (60, 0.4), (15, 0.15)])
        if noise > 0:
            score += noise * rng.standard_normal((size, size), dtype=np.float32)
        win = score > best
        best[win], labels[win] = score[win], c
    outline = smooth_field(rng, size, [(500, 1.0), (60, 0.2)])
    y, x = np.ogrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]
    labels[0.15 * outline - (x * x + y * y) < -0.8] = NODATA
    return labels


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def vertices(polygons: dict[int, list[shapely.Polygon]]) -> int:
    return int(sum(shapely.get_num_coordinates(p).sum() for p in polygons.values()))


def run(size: int, classes: int, noise: float, seed: int, min_cells: int) -> dict[str, Any]:
    grid, gen_s = timed(lambda: realistic_grid(size, classes, noise, seed))
    edges, edges_s = timed(lambda: count_boundary_edges(grid))
    sieve_s = 0.0
    if min_cells > 1:
        grid, sieve_s = timed(lambda: sieve(grid, min_cells))
    exact, trace_s = timed(lambda: label_polygons(grid))
    simple, simplify_s = timed(lambda: simplify_coverage(exact, DEFAULT_SIMPLIFY))
    moved, transform_s = timed(
        lambda: to_output_frame(simple, cell_size=16.0, origin=(-64.0, 32.0))
    )
    # As the pipeline does: cut at the image's edge, which the last row and column
    # of cells overhang (here by half a cell), with --min-area for the cut pieces.
    rows, cols = grid.shape
    image = shapely.box(-64.0, 32.0, -64.0 + 16.0 * (cols - 0.5), 32.0 + 16.0 * (rows - 0.5))
    clipped, clip_s = timed(lambda: clip_polygons(moved, image, min_area=min_cells * 16.0**2))
    flat = [p for v in clipped.values() for p in v]
    valid, valid_s = timed(lambda: bool(shapely.is_valid(np.array(flat, dtype=object)).all()))
    total = sieve_s + trace_s + simplify_s + transform_s + clip_s
    return {
        "size": size,
        "classes": classes,
        "noise": noise,
        "min_cells": min_cells,
        "tissue_frac": round(float((grid != NODATA).mean()), 3),
        "edges": edges,
        "polygons": len(flat),
        "vertices": vertices(exact),
        "vertices_simpl": vertices(simple),
        "gen_s": gen_s,
        "edges_s": edges_s,
        "sieve_s": sieve_s,
        "trace_s": trace_s,
        "simplify_s": simplify_s,
        "transform_s": transform_s,
        "clip_s": clip_s,
        "total_s": total,
        "valid": valid,
        "valid_check_s": valid_s,
        "under_target": total < TARGET_S if size >= 10_000 else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, action="append", help="grid side (repeatable)")
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--noise", type=float, default=0.01, help="per-cell score noise")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-cells", type=int, default=0, help="sieve threshold (0: none)")
    args = parser.parse_args()
    sizes = args.size or [2_500, 10_000]
    rows = [run(s, args.classes, args.noise, args.seed, args.min_cells) for s in sizes]
    shown = ["size", "edges", "polygons", "vertices", "vertices_simpl", "edges_s", "sieve_s"]
    shown += ["trace_s"]
    shown += ["simplify_s", "transform_s", "clip_s", "total_s", "valid"]
    print_table([{k: r[k] for k in shown} for r in rows], "vectorize (seconds)")
    write_json(
        "vectorize", {"target_s": TARGET_S, "default_simplify": DEFAULT_SIMPLIFY, "rows": rows}
    )


if __name__ == "__main__":
    main()
