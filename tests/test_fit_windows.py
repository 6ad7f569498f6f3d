"""Which windows of a tile sample the tissue when a concept bank is fitted on slides."""

from __future__ import annotations

import numpy as np

from fseg_server.pipeline.fit import MIN_TISSUE_IN_WINDOW, _tissue_fraction
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
