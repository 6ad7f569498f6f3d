"""Measuring tiling seams: do labels near tile borders disagree more than inside?

A slide is segmented twice with the same bank: once tiled (tiles of
``tile_size`` target pixels with the given context ``margin``), once as a
single tile that holds the whole slide. Label pixels where the two disagree
are counted in a band along the tiled run's core borders and in the interior
(farther than twice the band's half-width from any border); without seams
the two rates are about equal (ratio near 1).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..concepts.bank import ConceptBank
from ..extract import Extractor
from ..slide.reader import Slide
from .canvas import NODATA
from .device_worker import DeviceWorker
from .options import SegmentOptions
from .segment import segment_slide


@dataclass(frozen=True)
class SeamReport:
    """Disagreement with the single-tile reference, near tile borders and inside."""

    border_disagreement: float
    interior_disagreement: float
    border_pixels: int
    interior_pixels: int

    @property
    def ratio(self) -> float:
        """Border rate over interior rate (1.0: no seam effect)."""
        return self.border_disagreement / max(self.interior_disagreement, 1e-9)


def measure_seams(
    slide: Slide,
    extractor: Extractor,
    bank: ConceptBank,
    options: SegmentOptions,
    worker: DeviceWorker,
    *,
    tile_size: int,
    margin: int,
    band_pixels: int = 6,
) -> SeamReport:
    """Compare ``tile_size`` tiles with ``margin`` against one whole-slide tile.

    ``band_pixels`` is the band's half-width in label pixels on each side of a
    tile border.
    """
    spec = extractor.spec
    whole = max(slide.info.dimensions) + 2 * spec.stride  # target px, enough for one tile
    reference = segment_slide(
        slide, extractor, bank, replace(options, tile_size=whole), worker
    ).labels
    tiled_run = segment_slide(
        slide, extractor, bank, replace(options, tile_size=tile_size, margin=margin), worker
    )
    tiled = tiled_run.labels
    per_cell = tiled_run.summary["labels"]["per_cell"]
    core = tiled_run.summary["tiles"]["size"]  # target px, rounded to the stride
    period = core // spec.stride * per_cell
    border = _border_band(tiled.shape, period, band_pixels)
    far = ~_border_band(tiled.shape, period, 2 * band_pixels)
    valid = (reference != NODATA) & (tiled != NODATA)
    differs = reference != tiled
    near, inside = valid & border, valid & far
    return SeamReport(
        border_disagreement=float(differs[near].mean()) if near.any() else 0.0,
        interior_disagreement=float(differs[inside].mean()) if inside.any() else 0.0,
        border_pixels=int(near.sum()),
        interior_pixels=int(inside.sum()),
    )


def _border_band(shape: tuple[int, int], period: int, half_width: int) -> np.ndarray:
    """True within ``half_width`` label pixels of every multiple of ``period`` (not 0)."""
    rows = np.arange(shape[0])
    cols = np.arange(shape[1])
    near_row = _near_multiple(rows, period, half_width)
    near_col = _near_multiple(cols, period, half_width)
    return near_row[:, None] | near_col[None, :]


def _near_multiple(index: np.ndarray, period: int, half_width: int) -> np.ndarray:
    offset = index % period
    return ((offset < half_width) | (offset >= period - half_width)) & (index >= half_width)
