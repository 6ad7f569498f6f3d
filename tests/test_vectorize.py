"""Label grid -> polygons: exactness, validity, simplification, sieve, output frame."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from scipy import ndimage
from shapely.geometry import Polygon, box

from fseg_server.vectorize import (
    area_within,
    clip_polygons,
    label_polygons,
    sieve,
    simplify_coverage,
    to_output_frame,
    vectorize_labels,
)
from fseg_server.vectorize.trace import component_runs

NODATA = 255


# --- grids ------------------------------------------------------------------------------------


def noisy_grid(rng: np.random.Generator, h: int, w: int, k: int, nodata_p: float) -> np.ndarray:
    """Independent random class per cell: a saddle at almost every other vertex."""
    grid = rng.integers(0, k, (h, w)).astype(np.uint8)
    grid[rng.random((h, w)) < nodata_p] = NODATA
    return grid


def blob_grid(rng: np.random.Generator, h: int, w: int, k: int, glass: bool) -> np.ndarray:
    """Argmax of smoothed noise: blob-like regions, optionally with a nodata region."""
    fields = ndimage.gaussian_filter(rng.standard_normal((k, h, w)), (0, 2.5, 2.5))
    grid = fields.argmax(axis=0).astype(np.uint8)
    if glass:
        grid[ndimage.gaussian_filter(rng.standard_normal((h, w)), 3) > 0.05] = NODATA
    return grid


def random_grids(seed: int, count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    grids = []
    for i in range(count):
        k = int(rng.integers(3, 7))
        if i % 2:
            grids.append(noisy_grid(rng, 30, 40, k, nodata_p=0.15 * (i % 4 == 1)))
        else:
            grids.append(blob_grid(rng, 30, 40, k, glass=i % 4 == 0))
    return grids


def flat(polygons: dict[int, list[Polygon]]) -> np.ndarray:
    out = np.empty(sum(len(v) for v in polygons.values()), dtype=object)
    out[:] = [p for v in polygons.values() for p in v]
    return out


def overlap_area(polys: np.ndarray) -> float:
    """Total area of pairwise intersections between distinct polygons."""
    tree = shapely.STRtree(polys)
    a, b = tree.query(polys, predicate="intersects")
    keep = a < b
    return float(shapely.area(shapely.intersection(polys[a[keep]], polys[b[keep]])).sum())


def assert_exact(grid: np.ndarray, polygons: dict[int, list[Polygon]]) -> None:
    """The polygons reproduce the grid exactly (see the trace module's contract)."""
    classes = set(np.unique(grid).tolist()) - {NODATA}
    assert set(polygons) == classes
    h, w = grid.shape
    yc, xc = np.mgrid[0:h, 0:w] + 0.5
    for c, polys in polygons.items():
        arr = np.array(polys, dtype=object)
        assert shapely.is_valid(arr).all(), [shapely.is_valid_reason(p) for p in polys]
        mask = grid == c
        assert len(polys) == ndimage.label(mask)[1]  # one polygon per 4-connected component
        assert shapely.area(arr).sum() == mask.sum()  # exact, not approximately
        inside = shapely.contains_xy(arr[:, None, None], xc, yc)
        assert np.array_equal(inside.any(axis=0), mask)
    everything = flat(polygons)
    assert overlap_area(everything) == 0
    assert shapely.union_all(everything).area == (grid != NODATA).sum()
    # Shared edges carry identical vertices on both sides (GEOS coverage rules).
    assert shapely.coverage_is_valid(everything)


# --- exact tracing: simple cases --------------------------------------------------------------


def test_single_class_full_grid_is_one_rectangle():
    polygons = label_polygons(np.full((3, 5), 2, dtype=np.uint8))
    assert list(polygons) == [2]
    (poly,) = polygons[2]
    assert poly.equals(box(0, 0, 5, 3))
    assert len(poly.exterior.coords) == 5  # four corners plus the closing point


def test_hole_filled_by_other_class_is_an_interior_ring_equal_to_it():
    grid = np.zeros((6, 7), dtype=np.uint8)
    grid[1:4, 2:5] = 1
    grid[2, 3] = 0  # the inner class has a hole of its own, which is another component
    polygons = label_polygons(grid)
    outer = next(p for p in polygons[0] if p.area > 1)
    assert len(outer.interiors) == 1
    (inner,) = polygons[1]
    hole = Polygon(outer.interiors[0])
    assert hole.equals(Polygon(inner.exterior))
    assert set(hole.exterior.coords) == set(inner.exterior.coords)
    assert len(inner.interiors) == 1 and Polygon(inner.interiors[0]).equals(box(3, 2, 4, 3))
    assert_exact(grid, polygons)


def test_nodata_hole_and_nodata_cells_make_no_polygon():
    grid = np.zeros((5, 5), dtype=np.uint8)
    grid[2, 2] = NODATA
    grid[0, :] = NODATA
    polygons = label_polygons(grid)
    assert list(polygons) == [0]
    (poly,) = polygons[0]
    assert len(poly.interiors) == 1 and poly.area == 19
    assert_exact(grid, polygons)


@pytest.mark.parametrize("grid", [np.full((0, 4), 1), np.full((3, 3), NODATA)])
def test_nothing_to_trace(grid):
    assert label_polygons(grid.astype(np.uint8)) == {}


def test_rejects_non_integer_or_non_2d_input():
    with pytest.raises(ValueError):
        label_polygons(np.zeros((3, 3), dtype=float))
    with pytest.raises(ValueError):
        label_polygons(np.zeros((2, 3, 3), dtype=np.uint8))


def test_other_integer_types_and_nodata_values():
    grid = np.array([[-1, 5, 5], [7, 5, -1]], dtype=np.int16)
    polygons = label_polygons(grid, nodata=-1)
    assert sorted(polygons) == [5, 7]
    assert polygons[5][0].area == 3 and polygons[7][0].equals(box(0, 1, 1, 2))


def test_checkerboard_2x2_gives_four_valid_unit_squares():
    polygons = label_polygons(np.array([[0, 1], [1, 0]], dtype=np.uint8))
    assert [len(polygons[0]), len(polygons[1])] == [2, 2]
    assert all(p.is_valid and p.area == 1 and len(p.exterior.coords) == 5 for p in flat(polygons))


@pytest.mark.parametrize("k", [2, 3, 5])
def test_larger_checkerboards_are_valid_one_polygon_per_cell(k):
    rng = np.random.default_rng(k)
    i, j = np.mgrid[0:9, 0:11]
    grid = ((i + j) % 2).astype(np.uint8)
    if k > 2:  # random classes on one colour keep every diagonal neighbour a saddle
        grid[grid == 1] = rng.integers(1, k, int(grid.sum()))
    polygons = label_polygons(grid)
    assert sum(len(v) for v in polygons.values()) >= 50  # class 0 cells never merge
    assert_exact(grid, polygons)


def test_component_touching_itself_diagonally_is_a_shell_with_a_hole():
    # The 1-cells at (1, 2) and (2, 1) meet at the saddle vertex (2, 2) and are
    # also joined around the top-left; tracing must not produce a self-touching ring.
    grid = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 0]], dtype=np.uint8)
    polygons = label_polygons(grid)
    (ring,) = polygons[1]
    assert ring.is_valid and len(ring.interiors) == 1
    assert sorted(p.area for p in polygons[0]) == [1, 1]
    assert_exact(grid, polygons)


def test_two_holes_touching_at_a_vertex():
    grid = np.ones((4, 4), dtype=np.uint8)
    grid[1, 1] = grid[2, 2] = 0
    polygons = label_polygons(grid)
    (outer,) = polygons[1]
    assert outer.is_valid and len(outer.interiors) == 2
    assert len(polygons[0]) == 2
    assert_exact(grid, polygons)


def test_collinear_vertices_dropped_but_junctions_kept():
    strip = np.zeros((3, 7), dtype=np.uint8)
    strip[1, 1:6] = 1
    assert len(label_polygons(strip)[1][0].exterior.coords) == 5
    # Class 0 runs straight along y = 1, but classes 1 and 2 meet below at x = 1.
    tee = np.array([[0, 0], [1, 2]], dtype=np.uint8)
    (top,) = label_polygons(tee)[0]
    assert (1.0, 1.0) in set(top.exterior.coords)


# --- exact tracing: properties on many random grids -------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_random_grids_are_reproduced_exactly(seed):
    for grid in random_grids(seed, 12):
        assert_exact(grid, label_polygons(grid))


def test_tiny_random_grids_hit_every_saddle_case():
    rng = np.random.default_rng(99)
    for _ in range(400):
        h, w = rng.integers(1, 9, 2)
        grid = noisy_grid(rng, int(h), int(w), int(rng.integers(1, 4)), nodata_p=0.2)
        if (grid != NODATA).any():
            assert_exact(grid, label_polygons(grid))


def test_component_runs_match_ndimage_label():
    for grid in random_grids(7, 8):
        runs = component_runs(grid)
        comp = np.full(grid.shape, -1)
        for r, a, b, c in zip(runs.row, runs.start, runs.stop, runs.component, strict=True):
            comp[r, a:b] = c
        assert np.array_equal(comp >= 0, grid != NODATA)
        assert np.array_equal(np.bincount(comp[comp >= 0]), runs.size)
        for c in set(np.unique(grid).tolist()) - {NODATA}:
            labels, n = ndimage.label(grid == c)
            ours = comp[grid == c]
            assert (runs.cls[ours] == c).all()
            pairs = set(zip(labels[grid == c].tolist(), ours.tolist(), strict=True))
            assert len(pairs) == len(set(ours.tolist())) == n  # the same partition


# --- simplification ---------------------------------------------------------------------------


def blob_grids(seed: int, count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [blob_grid(rng, 30, 40, int(rng.integers(3, 7)), glass=i % 2 == 0) for i in range(count)]


@pytest.mark.parametrize("outline", [False, True])
def test_simplified_coverage_stays_valid_without_overlaps(outline):
    for grid in blob_grids(11, 16):
        exact = flat(label_polygons(grid))
        simple = flat(vectorize_labels(grid, cell_size=1.0, simplify_outline=outline))
        assert shapely.is_valid(simple).all()
        assert shapely.coverage_is_valid(simple)  # shared edges are still shared
        union = shapely.union_all(exact).area
        assert overlap_area(simple) < 1e-9 * union
        assert shapely.get_num_coordinates(simple).sum() < shapely.get_num_coordinates(exact).sum()
        if not outline:
            assert abs(shapely.union_all(simple).area - union) <= 0.005 * union


def test_regions_under_four_cells_stay_exact_when_simplified():
    rng = np.random.default_rng(8)
    grid = blob_grid(rng, 30, 40, 3, glass=True)
    grid[5, 5], grid[10, 10:12], grid[20:22, 30] = 4, 5, 6
    grid[20, 31] = 6  # an L of three cells
    exact = label_polygons(grid)
    simple = vectorize_labels(grid, cell_size=1.0)
    for c in (4, 5, 6):
        assert [p.area for p in simple[c]] == [p.area for p in exact[c]]
        assert simple[c][0].equals(exact[c][0])
    everything = flat(simple)
    assert shapely.coverage_is_valid(everything)
    assert overlap_area(everything) < 1e-9


def test_invalid_simplification_is_repaired(monkeypatch):
    grid = np.zeros((4, 4), dtype=np.uint8)
    grid[1:3, 1:3] = 1
    bowtie = Polygon([(0, 0), (2, 2), (2, 0), (0, 2)])
    sliver = Polygon([(0, 0), (1, 0), (2, 0), (0, 0)])
    fakes = iter([bowtie, sliver])

    def fake(geoms, tolerance, simplify_boundary):
        out = np.array(geoms, dtype=object)
        out[0] = next(fakes)
        return out

    monkeypatch.setattr(shapely, "coverage_simplify", fake)
    exact = label_polygons(grid)
    repaired = simplify_coverage(exact, 1.0)
    assert len(repaired[0]) == 2 and all(p.is_valid for p in repaired[0])  # bowtie: two parts
    fallback = simplify_coverage(exact, 1.0)
    assert fallback[0][0].equals(exact[0][0])  # nothing usable: the unsimplified polygon


# --- sieve ------------------------------------------------------------------------------------


def test_small_islands_are_filled_by_the_surrounding_class():
    grid = np.zeros((10, 10), dtype=np.uint8)
    grid[4:6, 4:6] = 1
    grid[0, 9] = 2
    grid[:, :2] = 3  # large: stays
    out = sieve(grid, 5)
    expected = np.zeros_like(grid)
    expected[:, :2] = 3
    assert np.array_equal(out, expected)
    assert grid[4, 4] == 1  # the input is left alone


def test_sieve_keeps_tissue_area_and_leaves_no_small_component():
    for grid in random_grids(21, 12):
        grid = np.where(grid == NODATA, 0, grid).astype(np.uint8)
        out = sieve(grid, 6)
        assert (out != NODATA).sum() == grid.size
        for c in np.unique(out):
            labels, _ = ndimage.label(out == c)
            assert np.bincount(labels.ravel())[1:].min() >= 6


def test_sieve_with_nodata_never_fills_from_glass():
    rng = np.random.default_rng(5)
    for _ in range(30):
        grid = noisy_grid(rng, 25, 30, int(rng.integers(2, 6)), nodata_p=0.35)
        min_cells = int(rng.integers(2, 6))
        out = sieve(grid, min_cells)
        assert (out[grid == NODATA] == NODATA).all()
        islands, _ = ndimage.label(grid != NODATA)
        island_size = np.bincount(islands.ravel())[islands]
        dropped = (grid != NODATA) & (out == NODATA)
        assert np.array_equal(dropped, (grid != NODATA) & (island_size < min_cells))
        for c in set(np.unique(out).tolist()) - {NODATA}:
            labels, _ = ndimage.label(out == c)
            assert np.bincount(labels.ravel())[1:].min() >= min_cells


def test_island_of_only_small_components_keeps_its_largest():
    grid = np.full((5, 8), NODATA, dtype=np.uint8)
    grid[1:3, 1:4] = [[0, 0, 1], [0, 2, 1]]  # 6 cells: 3 + 2 + 1
    grid[4, 6] = 2  # a lone cell in the glass
    out = sieve(grid, 4)
    assert (out[1:3, 1:4] == 0).all()
    assert out[4, 6] == NODATA
    assert np.array_equal(sieve(grid, 0), grid)


# --- output frame -----------------------------------------------------------------------------


def test_cell_size_and_negative_origin():
    grid = np.full((3, 4), NODATA, dtype=np.uint8)
    grid[1, 2] = 1
    out = vectorize_labels(grid, cell_size=(2.0, 3.0), origin=(-10.0, -20.0), simplify=0)
    assert out[1][0].equals(box(-10 + 2 * 2, -20 + 1 * 3, -10 + 3 * 2, -20 + 2 * 3))
    square = vectorize_labels(grid, cell_size=16, origin=(-8, 0), simplify=0)[1][0]
    assert square.bounds == (24.0, 16.0, 40.0, 32.0)


def test_output_frame_matches_exact_trace_scaled():
    grid = blob_grids(3, 1)[0]
    exact = label_polygons(grid)
    moved = to_output_frame(exact, cell_size=(0.5, 4.0), origin=(100.0, -7.0))
    for c in exact:
        for a, b in zip(exact[c], moved[c], strict=True):
            assert b.area == a.area * 2.0
            xy = shapely.get_coordinates(a) * [0.5, 4.0] + [100.0, -7.0]
            assert np.array_equal(shapely.get_coordinates(b), xy)


def test_bad_cell_size_is_rejected():
    with pytest.raises(ValueError):
        vectorize_labels(np.zeros((2, 2), dtype=np.uint8), cell_size=(0.0, 1.0))


# --- bands ------------------------------------------------------------------------------------


def _canonical(polygons: dict[int, list]) -> dict[int, list[bytes]]:
    return {
        c: sorted(g.wkb for g in shapely.normalize(np.asarray(p, object)).tolist())
        for c, p in polygons.items()
        if p
    }


@pytest.mark.parametrize("seed", range(6))
def test_band_by_band_tracing_gives_the_whole_grid_polygons(seed):
    """Bands bound memory on whole slides; the result must not show where they were cut."""
    from fseg_server.vectorize.bands import polygons_in_bands

    rng = np.random.default_rng(seed)
    grid = blob_grid(rng, 90, 70, 5, True) if seed % 2 else noisy_grid(rng, 90, 70, 4, 0.2)
    banded = polygons_in_bands(grid, NODATA, band_rows=int(rng.integers(7, 30)))
    assert _canonical(banded) == _canonical(label_polygons(grid))
    flat = np.asarray([p for ps in banded.values() for p in ps], object)
    assert shapely.coverage_is_valid(flat)


def test_band_by_band_sieving_matches_the_whole_grid():
    from fseg_server.vectorize.bands import sieve_in_bands

    rng = np.random.default_rng(7)
    grid = noisy_grid(rng, 200, 60, 4, nodata_p=0.1)
    assert np.array_equal(sieve_in_bands(grid, 4, NODATA, band_rows=40), sieve(grid, 4))


def test_large_grids_vectorize_in_bands_like_small_ones():
    """Unsimplified, bands change nothing; simplified band by band, the result is still a
    valid coverage of the same area per class (edges are only kept exact at band lines)."""
    rng = np.random.default_rng(8)
    grid = blob_grid(rng, 120, 80, 6, True)
    exact = {"min_cells": 3, "simplify": 0, "cell_size": 2.0}
    whole = vectorize_labels(grid, band_rows=10_000, **exact)
    assert _canonical(whole) == _canonical(vectorize_labels(grid, band_rows=25, **exact))
    banded = vectorize_labels(grid, cell_size=2.0, min_cells=3, band_rows=25)
    flat = np.asarray([p for ps in banded.values() for p in ps], object)
    assert shapely.coverage_is_valid(flat) and shapely.is_valid(flat).all()
    for cls, polygons in whole.items():
        area = sum(p.area for p in polygons)
        assert sum(p.area for p in banded[cls]) == pytest.approx(area, rel=0.02)


def test_clipping_cuts_every_class_at_the_same_edge():
    # Two classes side by side, cut by a slanted ROI edge: nothing outside it,
    # no overlap between the classes, and together they fill what the ROI covers.
    left, right = shapely.box(0, 0, 10, 10), shapely.box(10, 0, 20, 10)
    roi = shapely.Polygon([(2, -1), (21, -1), (21, 11), (5, 11)])
    clipped = clip_polygons({0: [left], 1: [right], 2: []}, roi)
    a, b = shapely.union_all(clipped[0]), shapely.union_all(clipped[1])
    assert clipped[2] == [] and clipped[1] == [right]  # wholly inside: kept as it is
    assert a.difference(roi).area < 1e-9 and a.intersection(b).area < 1e-9
    assert (a.area + b.area) == pytest.approx(roi.intersection(left.union(right)).area)
    assert all(shapely.is_valid(clipped[0]))


def test_area_within_counts_only_what_lies_inside_the_extent():
    # A 10 x 10 grid of 4-px cells from level-0 (-8, -8), every cell labelled but
    # one: a triangle over part of it gets the triangle's area minus that cell's share.
    labels = np.zeros((10, 10), np.uint8)
    labels[2, 2] = 255  # level-0 x 0..4, y 0..4: wholly inside the triangle
    triangle = shapely.Polygon([(0, 0), (20, 0), (0, 20)])
    area = area_within(labels, nodata=255, cell_size=4.0, origin=(-8.0, -8.0), extent=triangle)
    assert area == pytest.approx(triangle.area - 16.0)
    far = shapely.box(100, 100, 120, 120)
    assert area_within(labels, nodata=255, cell_size=4.0, origin=(-8.0, -8.0), extent=far) == 0


def test_a_region_the_cut_leaves_under_min_cells_joins_its_neighbour():
    # Class 1 (4 x 4 cells of 10 px) keeps a 1-px-wide strip inside the extent: 40 px²,
    # under min_cells = 4 (400 px²). It joins class 0, which borders it; no gap is left.
    grid = np.zeros((8, 8), np.uint8)
    grid[0:4, 4:8] = 1
    extent = shapely.box(0, 0, 41, 80)
    out = vectorize_labels(grid, cell_size=10.0, min_cells=4, simplify=0, extent=extent)
    assert out[1] == []
    assert shapely.union_all(out[0]).area == pytest.approx(extent.area)
    assert all(shapely.is_valid(out[0]))
