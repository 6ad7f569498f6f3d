"""The feature cache: a slide seen before skips reading and extraction, results stay the same,
and the cache keeps to its size cap."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import shared
from fseg_server.extract import create_extractor
from fseg_server.pipeline.device_worker import DeviceWorker
from fseg_server.pipeline.feature_cache import FeatureCache
from fseg_server.pipeline.options import SegmentOptions
from fseg_server.pipeline.segment import fit_on_slide, segment_slide
from fseg_server.slide.reader import open_slide


@pytest.fixture(scope="module")
def setup():
    extractor = create_extractor("stain")
    path = shared("slides/CMU-1-Small-Region.svs")
    with DeviceWorker(torch.device("cpu")) as worker, open_slide(path) as slide:
        options = SegmentOptions(k=8)
        bank = fit_on_slide(slide, extractor, options, worker, lambda *a: None, lambda: False)
        yield slide, extractor, worker, bank


def run(setup, cache, k=8, tile_size=None):
    slide, extractor, worker, bank = setup
    options = SegmentOptions(k=k, tile_size=tile_size)
    return segment_slide(slide, extractor, bank, options, worker, cache=cache)


def test_a_second_run_takes_every_tile_from_the_cache(setup, tmp_path):
    cache = FeatureCache(tmp_path, 1 << 30)
    first = run(setup, cache)
    again = run(setup, cache)
    processed = first.summary["tiles"]["processed"]
    assert first.summary["tiles"]["from_feature_cache"] == 0
    assert again.summary["tiles"]["from_feature_cache"] == processed > 0
    assert again.summary["timings_s"]["extract"] == 0  # the extractor never ran
    assert cache.size_bytes > 0


def test_cached_fp16_features_give_the_same_labels(setup, tmp_path):
    cache = FeatureCache(tmp_path, 1 << 30)
    fresh = run(setup, None)
    run(setup, cache)
    cached = run(setup, cache)
    tissue = fresh.labels != 255
    agreement = (fresh.labels[tissue] == cached.labels[tissue]).mean()
    assert agreement > 0.99


def test_the_cache_serves_another_k_of_the_same_bank(setup, tmp_path):
    slide, extractor, worker, _ = setup
    cache = FeatureCache(tmp_path, 1 << 30)
    run(setup, cache)
    many = fit_on_slide(
        slide, extractor, SegmentOptions(k=4), worker, lambda *a: None, lambda: False
    )
    result = segment_slide(slide, extractor, many, SegmentOptions(k=4), worker, cache=cache)
    assert result.summary["tiles"]["from_feature_cache"] == result.summary["tiles"]["processed"]
    assert result.summary["k"] == 4


def test_the_cache_keeps_to_its_cap(setup, tmp_path):
    cache = FeatureCache(tmp_path, 1 << 30)
    regions = run(setup, cache, tile_size=256).summary["tiles"]["processed"]
    assert regions > 4  # small regions, so that some fit under the cap
    one_run = cache.size_bytes
    cap = int(0.75 * one_run)
    small = FeatureCache(tmp_path / "small", cap)
    run(setup, small, tile_size=256)
    assert 0 < small.size_bytes <= cap
    files = list((tmp_path / "small").rglob("*.npy"))
    assert sum(f.stat().st_size for f in files) == small.size_bytes


def test_a_damaged_entry_is_recomputed_not_trusted(setup, tmp_path):
    cache = FeatureCache(tmp_path, 1 << 30)
    first = run(setup, cache)
    for entry in tmp_path.rglob("*.npy"):
        entry.write_bytes(b"garbage")
    again = run(setup, cache)
    assert again.summary["tiles"]["from_feature_cache"] == 0
    assert np.array_equal(again.labels, first.labels)


def test_pixel_resolution_labels_from_the_cache_follow_the_same_colour_edges(setup, tmp_path):
    """Plain images are labelled per pixel, guided by the tile's colours, which the
    cache does not keep: a cached run reads them again and gives the same labels."""
    _, extractor, worker, bank = setup
    cache = FeatureCache(tmp_path, 1 << 30)
    with open_slide(shared("wsss4luad-val/images/00.png")) as image:
        fresh = segment_slide(image, extractor, bank, SegmentOptions(k=8), worker, cache=cache)
        cached = segment_slide(image, extractor, bank, SegmentOptions(k=8), worker, cache=cache)
    assert fresh.summary["labels"]["per_cell"] > 1  # guided upsampling is in play
    assert cached.summary["tiles"]["from_feature_cache"] == cached.summary["tiles"]["processed"]
    assert fresh.labels.shape == cached.labels.shape
    assert (fresh.labels == cached.labels).mean() > 0.99


def test_the_cache_key_follows_the_weights_not_their_description():
    """Two random initialisations (or a checkpoint replaced at the same path)
    describe themselves alike but must not share cached features."""
    from fseg_server.pipeline.plan import plan_slide

    first = create_extractor("timm:resnet18", "random")
    second = create_extractor("timm:resnet18", "random")
    assert first.weights_state == second.weights_state
    with open_slide(shared("slides/CMU-1-Small-Region.svs")) as slide:
        grid = plan_slide(slide, first.spec, None, SegmentOptions()).grid
        keys = {FeatureCache.slide_key(slide.info.path, e, grid) for e in (first, second, first)}
    assert len(keys) == 2


def test_a_cache_that_cannot_write_costs_entries_not_the_result(setup, tmp_path):
    cache = FeatureCache(tmp_path, 1 << 30)
    uncached = run(setup, None)
    (tmp_path / "blocked").write_text("")  # every entry's folder name is taken by a file
    cache.root = tmp_path / "blocked"
    result = run(setup, cache)
    assert np.array_equal(result.labels, uncached.labels)
    assert cache.size_bytes == 0
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_re_run_takes_the_slides_thumbnail_from_the_cache(setup, tmp_path, monkeypatch):
    slide = setup[0]
    cache = FeatureCache(tmp_path, 1 << 30)
    first = run(setup, cache)
    reads = []
    original = slide.thumbnail
    monkeypatch.setattr(slide, "thumbnail", lambda size: reads.append(size) or original(size))
    again = run(setup, cache)
    assert reads == []  # planning read no pixels of the slide's thumbnail
    # The same tissue and the same regions as planned from the slide itself.
    assert again.summary["tissue"] == first.summary["tissue"]
    assert again.summary["tiles"]["model_px"] == first.summary["tiles"]["model_px"]
