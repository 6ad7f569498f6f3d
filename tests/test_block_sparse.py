"""Block-sparse execution: a network computes the tissue's blocks and nothing else.

A region's occupied blocks go through the network packed as a batch, each
convolution and pooling gathering its halo from the neighbouring blocks, and
a block of uniform glass standing in for the blocks not computed
(``extract/sparse.py``, ``extract/block_tensor.py``). The planner then cuts
the slide into windows whose model pixels follow the tissue
(``slide/sparse_regions.py``). Networks are timm's with random weights (no
model hub here); the slide is the shared CMU-1-Small-Region.svs.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from conftest import shared
from fseg_server.device import place
from fseg_server.extract import create_extractor
from fseg_server.extract.block_tensor import run_block_sparse
from fseg_server.extract.sparse import (
    BlockLayout,
    core_cells,
    pack_blocks,
    runs_block_sparse,
    scatter_cells,
)
from fseg_server.pipeline.device_worker import DeviceWorker
from fseg_server.pipeline.feature_cache import FeatureCache
from fseg_server.pipeline.options import SegmentOptions
from fseg_server.pipeline.plan import plan_slide
from fseg_server.pipeline.segment import fit_on_slide, segment_slide
from fseg_server.slide.reader import open_slide

CPU = torch.device("cpu")


def network(name: str):
    torch.manual_seed(0)
    return place(create_extractor(name, "random"), CPU)


def as_blocks(image: torch.Tensor, block: int) -> torch.Tensor:
    """(1, 3, H, W) -> (rows * cols, 3, block, block), row-major."""
    _, channels, height, width = image.shape
    rows, cols = height // block, width // block
    grid = image.reshape(channels, rows, block, cols, block).permute(1, 3, 0, 2, 4)
    return grid.reshape(rows * cols, channels, block, block)


@pytest.mark.parametrize("name", ["timm:resnet18", "timm:resnet50d", "timm:regnetx_002"])
def test_blocks_covering_a_rectangle_give_the_network_s_dense_features(name):
    extractor = network(name)
    block = 2 * extractor.spec.stride  # two cells a side after the last stage
    image = torch.randn(1, 3, 5 * block, 6 * block, generator=torch.Generator().manual_seed(3))
    layout = BlockLayout(np.ones((5, 6), bool), block)
    blocks = torch.cat([as_blocks(image, block), torch.zeros(1, 3, block, block)])
    with torch.inference_mode():
        dense = extractor.features(image)[0]
        # Zero fill: a missing neighbour is what the dense network's zero padding is.
        packed = run_block_sparse(
            extractor.features, blocks, torch.from_numpy(layout.neighbours()), fill=0.0
        )
    sparse = scatter_cells(core_cells(packed[:-1], layout), layout, block // extractor.spec.stride)
    assert sparse.shape == dense.shape
    assert float((sparse - dense).abs().max()) <= 1e-4 * float(dense.abs().max())


def test_a_block_among_glass_sees_glass_as_the_network_does_in_the_midst_of_glass():
    extractor = network("timm:resnet18")
    block = 32
    glass = torch.tensor([0.93, 0.92, 0.95]).view(1, 3, 1, 1)
    uniform = glass.expand(1, 3, 12 * block, 12 * block).contiguous()
    with torch.inference_mode():
        centre = extractor.features((uniform - extractor._mean) / extractor._std)[0, :, 12, 12]
    occupied = np.zeros((3, 3), bool)
    occupied[1, 1] = True
    layout = BlockLayout(occupied, block)
    pixels = np.full((3 * block, 3 * block, 3), np.round(glass.view(3).numpy() * 255), np.uint8)
    packed = torch.from_numpy(pack_blocks(pixels, layout)).permute(0, 3, 1, 2)
    with torch.inference_mode():
        features = extractor.forward_blocks(packed, torch.from_numpy(layout.neighbours()))
    # Both the occupied block and the glass block are uniform glass here.
    for index in (0, 1):
        cells = features[index].flatten(1)
        assert torch.allclose(cells, centre[:, None].expand_as(cells), rtol=2e-3, atol=2e-3)


def test_pack_blocks_keeps_the_occupied_blocks_and_the_colour_of_the_glass():
    pixels = np.full((64, 96, 3), 240, np.uint8)
    pixels[:32, 32:64] = (150, 60, 120)  # tissue in block (0, 1)
    pixels[32:, 64:] = (120, 40, 100)  # and in block (1, 2)
    occupied = np.array([[False, True, False], [False, False, True]])
    packed = pack_blocks(pixels, BlockLayout(occupied, 32))
    assert packed.shape == (3, 32, 32, 3)
    assert (packed[0] == (150, 60, 120)).all() and (packed[1] == (120, 40, 100)).all()
    assert (packed[2] == 240).all()  # the glass block


def test_the_neighbour_table_points_across_blocks_and_at_glass_beyond():
    occupied = np.array([[True, True], [False, True]])
    table = BlockLayout(occupied, 16).neighbours()
    glass = 3  # index n: three blocks are packed
    # Block 0 (row 0, col 0): right is block 1, below-right block 2, the rest glass.
    assert list(table[0]) == [glass, glass, glass, glass, 1, glass, glass, 2]
    assert list(table[2]) == [0, 1, glass, glass, glass, glass, glass, glass]
    assert (table[glass] == glass).all()


@pytest.mark.parametrize("name", ["timm:seresnet18", "timm:vit_tiny_patch16_224"])
def test_a_network_with_global_pooling_or_attention_runs_on_whole_rectangles(name):
    torch.manual_seed(0)
    extractor = create_extractor(name, "random")
    assert not runs_block_sparse(extractor.features, extractor.spec.stride)
    assert not place(extractor, CPU).block_sparse


def test_placing_a_network_decides_whether_it_runs_on_blocks():
    assert network("timm:resnet18").block_sparse
    assert not place(create_extractor("stain"), CPU).block_sparse  # cheap anyway


@pytest.fixture(scope="module")
def resnet_on_cmu():
    """timm ResNet-18 (random weights) at 1 µm/px on CMU-1, regions of 512 px, a bank
    fitted once."""
    extractor = network("timm:resnet18")
    options = SegmentOptions(target_mpp=1.0, tile_size=512)
    with DeviceWorker(CPU) as worker, open_slide(shared("slides/CMU-1-Small-Region.svs")) as slide:
        bank = fit_on_slide(slide, extractor, options, worker, lambda *a: None, lambda: False)
        yield slide, extractor, bank, options, worker


def test_sparse_windows_cover_every_tissue_block_once_with_fewer_model_pixels(resnet_on_cmu):
    slide, extractor, bank, options, _ = resnet_on_cmu
    sparse = plan_slide(slide, extractor.spec, bank.mpp, options, block_sparse=True)
    dense = plan_slide(slide, extractor.spec, bank.mpp, options, block_sparse=False)
    assert all(tile.blocks is not None for tile in sparse.tiles)
    assert all(tile.blocks is None for tile in dense.tiles)
    covered = np.zeros((sparse.grid.height, sparse.grid.width), np.int32)
    for tile in sparse.tiles:
        covered[
            tile.core_y : tile.core_y + tile.core_h, tile.core_x : tile.core_x + tile.core_w
        ] += 1
        ring = tile.margins[0] // tile.blocks.block
        assert tile.margins == (ring * sparse.block,) * 4
    assert covered.max() == 1  # cores are disjoint
    tissue = np.kron(_occupied(sparse), np.ones((sparse.block, sparse.block), bool))
    tissue = tissue[: covered.shape[0], : covered.shape[1]]
    assert covered[tissue].min() == 1  # and cover every block that holds tissue
    assert sparse.model_px < dense.model_px
    assert sparse.model_px == sum(t.blocks.count for t in sparse.tiles) * sparse.block**2


def _occupied(plan) -> np.ndarray:
    from fseg_server.slide.regions import tissue_blocks

    return tissue_blocks(plan.tissue, plan.grid, plan.block)


def test_block_sparse_labels_agree_with_whole_rectangles_on_a_real_slide(resnet_on_cmu):
    slide, extractor, bank, options, worker = resnet_on_cmu
    sparse = segment_slide(slide, extractor, bank, options, worker)
    dense = segment_slide(
        slide, extractor, bank, dataclasses.replace(options, block_sparse=False), worker
    )
    assert sparse.summary["tiles"]["model_px"] < dense.summary["tiles"]["model_px"]
    assert sparse.summary["tiles"]["block_sparse"] and not dense.summary["tiles"]["block_sparse"]
    a, b = sparse.labels, dense.labels
    assert ((a == 255) == (b == 255)).all()  # the same tissue is labelled
    labelled = a != 255
    # Only cells near the tissue's edge see glass differently (uniform, not scanned).
    assert (a[labelled] == b[labelled]).mean() >= 0.97


@pytest.mark.parametrize("mode", ["project", "classify"])
def test_a_feature_cache_gives_block_sparse_regions_their_labels_again(
    resnet_on_cmu, tmp_path, mode
):
    slide, extractor, bank, options, worker = resnet_on_cmu
    options = dataclasses.replace(options, mode=mode)
    cache = FeatureCache(tmp_path, 2**30)
    first = segment_slide(slide, extractor, bank, options, worker, cache=cache)
    again = segment_slide(slide, extractor, bank, options, worker, cache=cache)
    assert again.summary["tiles"]["from_feature_cache"] == len(again.plan.tiles) > 0
    assert (first.labels == again.labels).all()


def test_windows_are_cut_where_the_least_tissue_lies():
    from fseg_server.slide.sparse_regions import _cuts

    # 45 lines of tissue with glass on lines 26 to 28; windows of at most 30 lines.
    tissue = np.array([5] * 26 + [0] * 3 + [5] * 16)
    edges = _cuts(tissue, limit=30, reach=1)
    # Two windows (the fewest), cut where no tissue lies within reach of the cut.
    assert len(edges) == 3 and edges[0] == 0 and edges[-1] == len(tissue)
    assert edges[1] in (27, 28)
    assert _cuts(np.ones(100), limit=30, reach=2) == [0, 10, 40, 70, 100]  # parts <= 30
