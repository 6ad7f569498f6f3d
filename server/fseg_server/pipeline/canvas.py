"""The stitched label grid of a slide: one byte per label pixel, nothing else.

Label pixels are a fixed fraction of a feature cell (``upsample`` per cell
along each axis), laid over the slide from its level-0 origin. Features and
weights never accumulate here; only each tile core's labels are pasted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import shapely
import shapely.affinity

from ..slide.tiles import Tile, TileGrid
from ..slide.tissue import TissueMask, pixels_near

NODATA = 255  # label of glass, of areas outside the ROI and of unprocessed tiles


@dataclass
class LabelCanvas:
    """Labels of a whole slide.

    Attributes:
        labels: (rows, cols) uint8, class index or NODATA.
        target_pixels: target (working-resolution) pixels per label pixel.
        downsample: level-0 pixels per label pixel.
    """

    labels: np.ndarray
    target_pixels: float
    downsample: float

    @classmethod
    def for_grid(cls, grid: TileGrid, stride: int, upsample: int) -> LabelCanvas:
        target_pixels = stride / upsample
        rows = math.ceil(grid.height / target_pixels)
        cols = math.ceil(grid.width / target_pixels)
        return cls(
            labels=np.full((rows, cols), NODATA, np.uint8),
            target_pixels=target_pixels,
            downsample=target_pixels * grid.resolution.target_downsample,
        )

    def paste(self, tile: Tile, block: np.ndarray) -> None:
        """Put the labels of a tile's core (label pixels) at its place, clipped to the slide."""
        top = round(tile.core_y / self.target_pixels)
        left = round(tile.core_x / self.target_pixels)
        rows = min(block.shape[0], self.labels.shape[0] - top)
        cols = min(block.shape[1], self.labels.shape[1] - left)
        if rows > 0 and cols > 0:
            self.labels[top : top + rows, left : left + cols] = block[:rows, :cols]

    def keep_only(self, tissue: TissueMask) -> None:
        """Set every label pixel whose centre is not on tissue to NODATA."""
        rows, cols = self.labels.shape
        scale = self.downsample / tissue.downsample
        mask_rows = np.minimum(
            ((np.arange(rows) + 0.5) * scale).astype(np.int64), len(tissue.mask) - 1
        )
        mask_cols = np.minimum(
            ((np.arange(cols) + 0.5) * scale).astype(np.int64), tissue.mask.shape[1] - 1
        )
        # Row by row keeps the temporary small for very large grids.
        for r0 in range(0, rows, 2048):
            on_tissue = tissue.mask[np.ix_(mask_rows[r0 : r0 + 2048], mask_cols)]
            self.labels[r0 : r0 + 2048][~on_tissue] = NODATA

    def keep_touched_by(self, region: shapely.Geometry) -> None:
        """Set every label pixel that ``region`` (level-0 pixels) does not reach to NODATA.

        The tissue mask is coarser than label pixels and is kept generous
        around an ROI (see ``restrict_to_polygons``); this trims the grid to
        the pixels the ROI touches (and a few near its edges), so that
        ``labels.png`` and the label-grid areas describe the ROI.
        """
        rows, cols = self.labels.shape
        d = self.downsample
        x0, y0, x1, y1 = region.bounds
        c0, r0 = max(0, math.floor(x0 / d) - 1), max(0, math.floor(y0 / d) - 1)
        c1, r1 = min(cols, math.ceil(x1 / d) + 1), min(rows, math.ceil(y1 / d) + 1)
        c1, r1 = max(c0, c1), max(r0, r1)
        window = self.labels[r0:r1, c0:c1]
        moved = shapely.affinity.translate(region, -c0 * d, -r0 * d)
        window[~pixels_near(window.shape, d, [moved])] = NODATA
        self.labels[:r0] = NODATA
        self.labels[r1:] = NODATA
        self.labels[:, :c0] = NODATA
        self.labels[:, c1:] = NODATA

    def class_counts(self, k: int) -> np.ndarray:
        """Label pixels per class, (k,) int64."""
        counts = np.zeros(256, np.int64)
        # In row bands: bincount widens its input to int64, 8 bytes per label pixel.
        for r0 in range(0, len(self.labels), 2048):
            counts += np.bincount(self.labels[r0 : r0 + 2048].ravel(), minlength=256)
        return counts[:k]
