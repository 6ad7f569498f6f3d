"""Label grid -> polygons -> QuPath GeoJSON.

``vectorize_labels`` is the whole chain for one grid: sieve small regions,
trace exact polygons in grid units, simplify them as one coverage so that
neighbouring classes keep sharing their edges, and map them to level-0 pixels.
``feature_collection`` and ``dumps`` turn the result into what QuPath imports.
"""

from __future__ import annotations

import logging

import numpy as np
import shapely

from fseg_server.vectorize.bands import BAND_ROWS, polygons_in_bands, sieve_in_bands
from fseg_server.vectorize.clip import area_within, clip_polygons
from fseg_server.vectorize.frame import affine, flatten, to_output_frame
from fseg_server.vectorize.geojson import dumps, feature_collection, feature_collection_json
from fseg_server.vectorize.sieve import sieve
from fseg_server.vectorize.trace import count_boundary_edges, label_polygons

__all__ = [
    "DEFAULT_SIMPLIFY",
    "area_within",
    "clip_polygons",
    "count_boundary_edges",
    "dumps",
    "feature_collection",
    "feature_collection_json",
    "label_polygons",
    "sieve",
    "simplify_coverage",
    "to_output_frame",
    "vectorize_labels",
]

log = logging.getLogger(__name__)

#: Default simplification tolerance, in grid cells. GEOS coverage simplification
#: is Visvalingam-Whyatt: it drops a vertex whose triangle with its neighbours
#: has an area below ``tolerance**2``. The corners of a one-cell staircase span
#: 0.5 cell², so any tolerance below sqrt(0.5) ~ 0.71 leaves lattice polygons
#: untouched. 1.0 removes one- and two-cell steps; boundaries move by well under
#: a cell, and what one class loses along a shared edge its neighbour gains.
#: Regions of fewer than 4 cells are kept exact (see ``simplify_coverage``).
#:
#: The tissue outline (the boundary with nodata) is left exact by default:
#: Visvalingam-Whyatt cuts corners, which shrinks a convex outline (measured on
#: 30 x 40 grids: 0.5 % of the tissue area on average, up to 2 %), whereas
#: between two classes what one side loses the other gains.
#: ``simplify_outline=True`` smooths the outline too.
DEFAULT_SIMPLIFY = 1.0


def vectorize_labels(
    labels: np.ndarray,
    *,
    cell_size: tuple[float, float] | float,
    origin: tuple[float, float] = (0.0, 0.0),
    simplify: float = DEFAULT_SIMPLIFY,
    min_cells: int = 0,
    nodata: int = 255,
    simplify_outline: bool = False,
    band_rows: int = BAND_ROWS,
    extent: shapely.Geometry | None = None,
) -> dict[int, list[shapely.Polygon]]:
    """Polygons of every class of a label grid, in level-0 pixel coordinates.

    Large grids are sieved and traced in bands of ``band_rows`` rows so that
    working memory follows the band, not the slide (see ``bands``).

    Args:
        labels: 2-D integer grid, one class index per feature cell; ``nodata`` = no tissue.
        cell_size: level-0 pixels per grid cell, ``(x, y)`` or one value for both.
        origin: level-0 pixel position ``(x, y)`` of the grid's top-left corner; may be negative.
        simplify: coverage simplification tolerance in grid cells (see
            ``DEFAULT_SIMPLIFY``); 0 keeps the exact lattice polygons.
        min_cells: components smaller than this many cells are sieved away first
            (taken over by their neighbours; see ``sieve`` for tissue islands).
        nodata: label of cells that produce no polygon.
        simplify_outline: also simplify the tissue outline (see ``DEFAULT_SIMPLIFY``).
        extent: where polygons may lie, in level-0 pixels (the image, or an
            ROI): polygons are cut at its edge (``clip_polygons``), and pieces
            the cut leaves under ``min_cells`` cells join a neighbour.

    Returns:
        Polygons keyed by class index, one per 4-connected component (or more
        where a simplified polygon had to be repaired). Coordinates are
        ``x = origin_x + col * cell_size_x``, ``y = origin_y + row * cell_size_y``
        for the cell corner at (row, col), x right and y down.
    """
    scale, _ = affine(cell_size, origin)  # fail before the work, not after it
    grid = np.asarray(labels)
    if min_cells > 1:
        grid = sieve_in_bands(grid, min_cells, nodata, band_rows=band_rows)
    if simplify > 0 and simplify_outline:
        # The outline's simplification needs the whole coverage at once.
        polygons = polygons_in_bands(grid, nodata, band_rows=grid.shape[0])
        polygons = simplify_coverage(polygons, simplify, simplify_outline=True)
    else:
        band_simplify = (lambda p: simplify_coverage(p, simplify)) if simplify > 0 else None
        polygons = polygons_in_bands(grid, nodata, band_rows=band_rows, simplify=band_simplify)
    del grid  # a sieved copy of a whole slide's grid
    polygons = to_output_frame(polygons, cell_size=cell_size, origin=origin)
    if extent is None:
        return polygons
    return clip_polygons(polygons, extent, min_area=min_cells * float(scale[0] * scale[1]))


def simplify_coverage(
    polygons: dict[int, list[shapely.Polygon]],
    tolerance: float,
    *,
    simplify_outline: bool = False,
) -> dict[int, list[shapely.Polygon]]:
    """Simplify all polygons of all classes together, so shared edges stay shared.

    ``tolerance`` is in the polygons' units (grid cells here). Edges that only one
    polygon has (the outline of the coverage, i.e. the tissue outline and nodata
    holes) are kept unless ``simplify_outline``.

    Unless ``simplify_outline``, polygons smaller than ``4 * tolerance**2`` (one to
    three cells at the default) are left out of the coverage and kept exact, since
    Visvalingam-Whyatt would fold them into triangles of half their area. Their
    edges then belong to one polygon only, so the neighbours keep them exact too.

    GEOS promises valid output for a valid coverage; should a polygon still come
    out invalid, it is repaired with ``make_valid`` (its polygonal parts are kept)
    or, failing that, replaced by its unsimplified self, and a warning is logged.
    """
    keys, flat = flatten(polygons)
    # GEOS simplifies a ring without junctions from its first vertex on; a
    # canonical start makes the result independent of how the ring was traced.
    # (The normalized copies replace the originals: one copy in memory, not two.)
    flat = shapely.normalize(flat)
    out = flat.copy()
    todo = np.arange(flat.size)
    if not simplify_outline:
        todo = todo[shapely.area(flat) >= 4 * tolerance * tolerance]
    if todo.size:
        out[todo] = shapely.coverage_simplify(
            flat[todo], tolerance, simplify_boundary=simplify_outline
        )
    bad = todo[~shapely.is_valid(out[todo]) | shapely.is_empty(out[todo])]
    parts = {int(i): _repair(out[i], flat[i]) for i in bad}
    if parts:
        log.warning("coverage simplification produced %d invalid polygon(s); repaired", len(parts))
    result: dict[int, list[shapely.Polygon]] = {k: [] for k in polygons}
    for i, (key, geom) in enumerate(zip(keys, out.tolist(), strict=True)):
        result[key].extend(parts.get(i, [geom]))
    return result


def _repair(simplified: shapely.Geometry, original: shapely.Polygon) -> list[shapely.Polygon]:
    """Valid polygonal parts of ``simplified``, or ``[original]`` if nothing usable remains."""
    fixed = shapely.make_valid(simplified)
    parts = [
        g
        for g in shapely.get_parts(shapely.get_parts(fixed))
        if isinstance(g, shapely.Polygon) and g.area > 0
    ]
    if parts and all(shapely.is_valid(parts)):
        return parts
    return [original]
