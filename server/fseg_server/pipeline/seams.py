"""Measuring tiling seams: do labels near tile borders disagree more than inside?

A slide is segmented twice with the same bank: once tiled (tiles of
``tile_size`` target pixels with the given context ``margin``), once as a
single tile that holds the whole slide. Label pixels where the two disagree
are counted in a band along the edges of the tiled run's regions (tiles
that follow the tissue, at most ``tile_size`` on a side) and in the interior
(farther than twice the band's half-width from any edge); without seams the
two rates are about equal (ratio near 1).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..concepts.bank import ConceptBank
from ..extract import Extractor
from ..slide.reader import Slide
from ..slide.tiles import Tile
from .canvas import NODATA
from .device_worker import DeviceWorker
from .options import SegmentOptions
from .segment import segment_slide


@dataclass(frozen=True)
class SeamReport:
    """Disagreement with the whole-slide reference: near region borders that cut
    through tissue (seams), near region sides that face glass, and inside."""

    border_disagreement: float
    interior_disagreement: float
    border_pixels: int
    interior_pixels: int
    glass_edge_disagreement: float = 0.0
    glass_edge_pixels: int = 0

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
    """Compare regions of at most ``tile_size`` with ``margin`` against one whole-slide region.

    The reference has the full margin on every side; the tiled run has it on
    the sides that face more tissue and one block of glass on the sides that
    face only glass, as segmenting does. ``band_pixels`` is the band's
    half-width in label pixels on each side of a region's edge.
    """
    spec = extractor.spec
    whole = max(slide.info.dimensions) + 2 * spec.stride  # target px, enough for one region
    reference_options = replace(options, tile_size=whole, margin=margin, glass_margin=margin)
    reference = segment_slide(slide, extractor, bank, reference_options, worker).labels
    tiled_options = replace(options, tile_size=tile_size, margin=margin)
    tiled_run = segment_slide(slide, extractor, bank, tiled_options, worker)
    tiled, plan = tiled_run.labels, tiled_run.plan
    per_target_px = tiled_run.summary["labels"]["per_cell"] / spec.stride
    full = plan.grid.margin

    def band(half_width: int, sides: str) -> np.ndarray:
        return _edge_band(tiled.shape, plan.tiles, per_target_px, half_width, full, sides)

    # A side that faces glass gives less context than the margin; every pixel
    # within a margin of it (the reach of the extractor's context), also at the
    # ends of a side that faces tissue, counts as glass edge.
    glass_edge = band(max(band_pixels, round(full * per_target_px)), "glass")
    border = band(band_pixels, "tissue") & ~glass_edge
    far = ~band(2 * band_pixels, "all")
    valid = (reference != NODATA) & (tiled != NODATA)
    differs = reference != tiled
    near, inside, edge = valid & border, valid & far, valid & glass_edge
    return SeamReport(
        border_disagreement=_rate(differs, near),
        interior_disagreement=_rate(differs, inside),
        border_pixels=int(near.sum()),
        interior_pixels=int(inside.sum()),
        glass_edge_disagreement=_rate(differs, edge),
        glass_edge_pixels=int(edge.sum()),
    )


def _rate(differs: np.ndarray, where: np.ndarray) -> float:
    return float(differs[where].mean()) if where.any() else 0.0


def _edge_band(
    shape: tuple[int, int],
    tiles: list[Tile],
    per_target_px: float,
    half_width: int,
    full_margin: int,
    sides: str,
) -> np.ndarray:
    """True within ``half_width`` label pixels of the chosen sides of every region's core:
    ``tissue`` (sides read with the full margin), ``glass`` (sides facing glass) or ``all``."""
    band = np.zeros(shape, bool)
    h = half_width
    for tile in tiles:
        x0, y0 = round(tile.core_x * per_target_px), round(tile.core_y * per_target_px)
        x1 = round((tile.core_x + tile.core_w) * per_target_px)
        y1 = round((tile.core_y + tile.core_h) * per_target_px)
        edges = (
            (slice(y0, y1), slice(x0 - h, x0 + h)),  # left
            (slice(y0 - h, y0 + h), slice(x0, x1)),  # top
            (slice(y0, y1), slice(x1 - h, x1 + h)),  # right
            (slice(y1 - h, y1 + h), slice(x0, x1)),  # bottom
        )
        for margin, (rows, cols) in zip(tile.margins, edges, strict=True):
            faces_tissue = margin >= full_margin
            if sides == "all" or (sides == "tissue") == faces_tissue:
                band[_clip(rows), _clip(cols)] = True
    return band


def _clip(index: slice) -> slice:
    return slice(max(0, index.start), max(0, index.stop))
