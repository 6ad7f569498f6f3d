"""Tissue regions: the model sees rectangles that follow the tissue, each with its context once."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import shared
from fseg_server.extract import extractor_spec
from fseg_server.pipeline.options import SegmentOptions
from fseg_server.pipeline.plan import plan_slide
from fseg_server.slide.reader import open_slide
from fseg_server.slide.regions import RegionGeometry, plan_regions, tissue_blocks
from fseg_server.slide.tiles import Resolution, TileGrid
from fseg_server.slide.tissue import TissueMask

BLOCK, MARGIN, GLASS, STRIDE = 16, 64, 16, 16


def grid_of(width: int, height: int) -> TileGrid:
    """A slide of ``width`` x ``height`` target pixels, level 0 read as it is."""
    resolution = Resolution(mpp=1.0, target_downsample=1.0, level=0, scale=1.0, level0_mpp=1.0)
    return TileGrid(resolution, 512, MARGIN, math.ceil(height / 512), math.ceil(width / 512),
                    width, height)  # fmt: skip


def regions_of(occupied: np.ndarray, max_blocks: int = 64) -> list:
    grid = grid_of(occupied.shape[1] * BLOCK, occupied.shape[0] * BLOCK)
    geometry = RegionGeometry(BLOCK, max_blocks, MARGIN, GLASS, STRIDE)
    return plan_regions(occupied, grid, geometry)


def covered(tiles: list, shape: tuple[int, int]) -> np.ndarray:
    """How many regions' cores cover each block."""
    count = np.zeros(shape, int)
    for t in tiles:
        count[t.core_y // BLOCK : (t.core_y + t.core_h) // BLOCK,
              t.core_x // BLOCK : (t.core_x + t.core_w) // BLOCK] += 1  # fmt: skip
    return count


def test_regions_cover_every_tissue_block_once_and_skip_glass():
    rng = np.random.default_rng(0)
    occupied = np.zeros((60, 80), bool)
    for _ in range(12):  # islands of tissue of many sizes
        r, c, h, w = (
            rng.integers(0, 50),
            rng.integers(0, 70),
            rng.integers(1, 12),
            rng.integers(1, 12),
        )
        occupied[r : r + h, c : c + w] = True
    tiles = regions_of(occupied)
    count = covered(tiles, occupied.shape)
    assert count.max() == 1  # disjoint
    assert (count[occupied] == 1).all()  # every tissue block
    assert count.sum() < occupied.size / 2  # most of the glass is never read


def test_a_side_gets_the_full_margin_only_where_more_tissue_lies_beyond_it():
    occupied = np.zeros((40, 40), bool)
    occupied[10:20, 10:20] = True  # a lone island: glass all round
    (alone,) = regions_of(occupied)
    assert alone.margins == (GLASS,) * 4
    assert (alone.core_x, alone.core_y, alone.core_w, alone.core_h) == (160, 160, 160, 160)


def test_a_solid_area_larger_than_the_limit_is_split_into_equal_regions():
    occupied = np.ones((30, 50), bool)
    tiles = regions_of(occupied, max_blocks=16)
    widths = {t.core_w for t in tiles}
    heights = {t.core_h for t in tiles}
    assert len(tiles) == 2 * 4  # ceil(30 / 16) x ceil(50 / 16)
    assert max(widths) - min(widths) <= BLOCK and max(heights) - min(heights) <= BLOCK
    assert max(widths | heights) <= 16 * BLOCK
    # Between regions of one tissue the context is the full margin: no seams.
    inner = [t for t in tiles if t.core_x > 0 and t.core_y > 0]
    assert inner and all(t.margins[0] == t.margins[1] == MARGIN for t in inner)


def test_no_tissue_no_regions():
    assert regions_of(np.zeros((10, 10), bool)) == []


def test_two_islands_far_apart_are_two_regions_not_one_with_the_glass_between():
    occupied = np.zeros((20, 200), bool)
    occupied[5:15, 5:15] = True
    occupied[5:15, 185:195] = True
    tiles = regions_of(occupied)
    assert len(tiles) == 2
    assert sum(t.input_pixels for t in tiles) < 2 * (160 + 2 * MARGIN) ** 2


def test_blocks_hold_tissue_where_any_mask_pixel_does():
    grid = grid_of(64, 64)  # 4 x 4 blocks of 16 px; the mask has 8-px pixels
    mask = np.zeros((8, 8), bool)
    mask[0, 0] = True  # block (0, 0)
    mask[7, 5] = True  # level-0 x 40..48, y 56..64: block (3, 2)
    occupied = tissue_blocks(TissueMask(mask, 8.0), grid, BLOCK)
    assert occupied.shape == (4, 4)
    assert set(zip(*np.nonzero(occupied), strict=True)) == {(0, 0), (3, 2)}


@pytest.mark.parametrize("extractor, mpp", [("stain", None), ("timm:resnet50", 0.5)])
def test_on_real_tissue_the_model_sees_far_fewer_pixels_than_a_tile_grid(extractor, mpp):
    """CMU-1: the regions' pixels, margins included, against those of the square tiles
    that touch tissue (what fseg sent before), in one plan."""
    spec = extractor_spec(extractor)
    with open_slide(shared("slides/CMU-1-Small-Region.svs")) as slide:
        plan = plan_slide(slide, spec, mpp, SegmentOptions())
    grid_px = sum(t.input_pixels for t in plan.grid.tiles(plan.tissue))
    assert plan.model_px < 0.75 * grid_px
    assert plan.model_px > plan.tissue_px  # the tissue itself, at least, went through
    count = np.zeros((plan.grid.height, plan.grid.width), np.uint8)
    for t in plan.tiles:
        count[t.core_y : t.core_y + t.core_h, t.core_x : t.core_x + t.core_w] += 1
    assert count.max() == 1
