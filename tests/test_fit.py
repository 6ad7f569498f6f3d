"""Fitting a concept bank: which windows sample the tissue, which samples count, and
how the concepts are shared between glass and tissue."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fseg_server.concepts import Reservoir, fit_concepts, kmeans
from fseg_server.concepts.kmeans import MOSTLY_GLASS
from fseg_server.concepts.palette import GLASS_COLOR, default_names
from fseg_server.concepts_cli import describe_bank
from fseg_server.errors import InvalidInput
from fseg_server.extract import create_extractor
from fseg_server.extract.stain import STAIN_SPEC
from fseg_server.pipeline.fit import MIN_TISSUE_IN_WINDOW, _tissue_fraction, fit_bank
from fseg_server.slide.tissue import TissueMask


def test_a_window_hanging_off_the_slide_counts_the_overhang_as_glass():
    # All tissue up to the slide's right edge at level-0 x = 100; a 40-px
    # window starting at x = 80 lies half beyond it, where reads are edge padding.
    tissue = TissueMask(np.ones((100, 100), bool), 1.0)
    assert _tissue_fraction(tissue, 80, 0, 40) == 0.5
    assert _tissue_fraction(tissue, 90, 0, 40) < MIN_TISSUE_IN_WINDOW
    assert _tissue_fraction(tissue, 20, 20, 40) == 1.0


def test_the_tissue_fraction_is_measured_in_the_masks_own_pixels():
    mask = np.zeros((50, 50), bool)
    mask[:, :25] = True  # tissue on the left half; 4 level-0 px per mask pixel
    tissue = TissueMask(mask, 4.0)
    assert _tissue_fraction(tissue, 0, 0, 200) == 0.5
    assert _tissue_fraction(tissue, 100, 0, 100) == 0.0


def reservoir_of(rows: np.ndarray) -> Reservoir:
    reservoir = Reservoir(len(rows), rows.shape[1])
    reservoir.add(rows)
    return reservoir


def test_fewer_distinct_samples_than_k_are_refused_not_duplicated():
    rng = np.random.default_rng(0)
    three = rng.random((3, STAIN_SPEC.feature_dim), dtype=np.float32)
    repeated = np.repeat(three, 100, axis=0)  # 300 samples, 3 different ones
    with pytest.raises(InvalidInput, match="only 3 distinct feature samples"):
        fit_bank(reservoir_of(repeated), [6], create_extractor("stain"), 1.0, "test")


def test_samples_that_are_not_finite_are_left_out_of_the_fit():
    rows = np.random.default_rng(1).random((500, STAIN_SPEC.feature_dim), dtype=np.float32)
    rows[::10] = np.nan  # an extractor that overflowed in half precision
    bank = fit_bank(reservoir_of(rows), [4], create_extractor("stain"), 1.0, "test")
    assert np.isfinite(bank.concepts(4)).all()


def stain_like_samples(tissue_types: int, glass_rows: int, seed: int = 0) -> np.ndarray:
    """Samples with stain's channels: ``tissue_types`` tight clusters of tissue
    (glass share 0.1) and ``glass_rows`` samples of glass in two shades."""
    rng = np.random.default_rng(seed)
    dim, glass = STAIN_SPEC.feature_dim, STAIN_SPEC.glass_channel
    centres = rng.random((tissue_types, dim), dtype=np.float32)
    centres[:, glass] = 0.1
    tissue = np.repeat(centres, 50, axis=0) + rng.normal(0, 0.01, (tissue_types * 50, dim))
    shades = rng.random((2, dim), dtype=np.float32)
    shades[:, glass] = (0.8, 0.95)
    glass_samples = np.repeat(shades, glass_rows // 2, axis=0)
    return np.concatenate([tissue, glass_samples]).astype(np.float32)


def test_a_stain_bank_keeps_one_concept_for_glass_and_the_rest_for_tissue():
    # Two shades of glass, far apart, and as many samples as all tissue together:
    # plain k-means would give glass two concepts and merge two tissue types.
    rows = stain_like_samples(tissue_types=3, glass_rows=150)
    glass = STAIN_SPEC.glass_channel
    concepts = fit_bank(reservoir_of(rows), [4], create_extractor("stain"), 1.0, "t").concepts(4)
    mostly_glass = concepts[:, glass] > MOSTLY_GLASS
    assert mostly_glass.tolist() == [False, False, False, True]
    np.testing.assert_allclose(concepts[3], rows[rows[:, glass] > 0.5].mean(0), atol=1e-5)
    tissue_centres = rows[:150].reshape(3, 50, -1).mean(1)
    for centre in tissue_centres:  # each tissue type has a concept of its own
        assert np.abs(concepts[:3] - centre).max(axis=1).min() < 0.01


def test_the_concept_kept_for_glass_is_named_and_coloured_as_glass():
    rows = stain_like_samples(tissue_types=3, glass_rows=150)
    bank = fit_bank(reservoir_of(rows), [4, 8], create_extractor("stain"), 1.0, "t")
    for k in (4, 8):
        *tissue, glass = bank.classes[k]
        assert (glass.name, glass.color) == (f"F-SEG k{k} glass", GLASS_COLOR)
        assert [c.name for c in tissue] == default_names(k)[:-1]
    lines = [line.strip() for line in describe_bank(bank, Path("b.safetensors"))]
    assert "k = 4: default names" in lines  # show-concepts: nobody has named them yet


def test_without_glass_among_the_samples_the_bank_is_plain_kmeans():
    rows = stain_like_samples(tissue_types=5, glass_rows=0)
    concepts = fit_concepts(torch.from_numpy(rows), 5, glass_channel=STAIN_SPEC.glass_channel)
    assert not concepts.glass_last
    np.testing.assert_array_equal(concepts.centres, kmeans(torch.from_numpy(rows), 5))


def test_an_extractor_that_does_not_measure_glass_gets_plain_kmeans():
    rows = stain_like_samples(tissue_types=3, glass_rows=150)
    x = torch.from_numpy(rows)
    assert fit_concepts(x, 4, glass_channel=None).centres.equal(kmeans(x, 4))
    assert create_extractor("timm:resnet18", weights="random").spec.glass_channel is None


def test_too_few_tissue_samples_for_k_minus_one_concepts_fall_back_to_plain_kmeans():
    rows = stain_like_samples(tissue_types=1, glass_rows=200)[48:]  # 2 tissue samples
    x = torch.from_numpy(rows)
    concepts = fit_concepts(x, 5, glass_channel=STAIN_SPEC.glass_channel)
    assert concepts.centres.equal(kmeans(x, 5)) and not concepts.glass_last


def test_stains_glass_channel_is_the_share_of_glass_in_each_cell():
    stain = create_extractor("stain")
    half = torch.ones(1, 3, 64, 64)  # white glass on the left...
    half[:, :, :, 32:] = torch.tensor([0.55, 0.25, 0.55]).view(1, 3, 1, 1)  # ...purple tissue
    share = stain.features(half)[0, STAIN_SPEC.glass_channel]
    assert share[:, :8].eq(1).all() and share[:, 8:].eq(0).all()
