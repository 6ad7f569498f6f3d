"""Grid cells to level-0 pixels: the affine map every traced polygon goes through."""

from __future__ import annotations

import numpy as np
import shapely


def to_output_frame(
    polygons: dict[int, list[shapely.Polygon]],
    *,
    cell_size: tuple[float, float] | float,
    origin: tuple[float, float] = (0.0, 0.0),
) -> dict[int, list[shapely.Polygon]]:
    """Map polygons from grid cells to level-0 pixels: ``origin + grid * cell_size``."""
    scale, shift = affine(cell_size, origin)
    keys, flat = flatten(polygons)
    moved = shapely.transform(flat, lambda xy: xy * scale + shift)
    result: dict[int, list[shapely.Polygon]] = {k: [] for k in polygons}
    for key, geom in zip(keys, moved.tolist(), strict=True):
        result[key].append(geom)
    return result


def affine(
    cell_size: tuple[float, float] | float, origin: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Checked ``(scale, shift)`` arrays, both ``(x, y)``."""
    sx, sy = (cell_size, cell_size) if np.isscalar(cell_size) else cell_size
    scale = np.array([float(sx), float(sy)])
    shift = np.array([float(origin[0]), float(origin[1])])
    if not (np.all(np.isfinite(scale)) and np.all(scale > 0) and np.all(np.isfinite(shift))):
        raise ValueError(f"cell_size must be positive and origin finite: {cell_size}, {origin}")
    return scale, shift


def flatten(polygons: dict[int, list[shapely.Polygon]]) -> tuple[list[int], np.ndarray]:
    """All polygons in one array, with the class key of each."""
    keys = [k for k, polys in polygons.items() for _ in polys]
    flat = np.empty(len(keys), dtype=object)
    flat[:] = [p for polys in polygons.values() for p in polys]
    return keys, flat
