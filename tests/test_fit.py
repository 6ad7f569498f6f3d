"""Fitting a concept bank: which windows sample the tissue, and which samples count."""

from __future__ import annotations

import numpy as np
import pytest

from fseg_server.concepts import Reservoir
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
