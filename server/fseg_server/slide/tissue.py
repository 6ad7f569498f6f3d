"""Tissue detection on a thumbnail, so glass is never sent to the extractor.

The recipe is the field's usual one (CLAM, histolab and others threshold
saturation; optical density catches pale, grey tissue): a pixel is tissue when
it is coloured or dense, then small specks are removed and small holes filled.
Thresholds are fixed physical quantities with an Otsu threshold on saturation
kept inside a safe range, so a slide that is nearly all tissue is not split
into "dense" and "pale" halves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import shapely
from PIL import Image, ImageDraw
from scipy import ndimage

SATURATION_RANGE = (0.05, 0.15)  # Otsu threshold on saturation is clamped to this
DENSE_OD = 0.25  # mean optical density above which even grey pixels are tissue
MIN_TISSUE_OD = 0.03  # coloured pixels fainter than this are dust or glass tint
MIN_OBJECT_UM2 = 5_000.0  # specks smaller than this (about 70 µm across) are dropped
MAX_HOLE_UM2 = 2_000.0  # holes smaller than this are filled


@dataclass(frozen=True)
class TissueMask:
    """A boolean mask on a regular grid over the slide.

    Attributes:
        mask: (rows, cols) bool, True where there is tissue.
        downsample: level-0 pixels per mask pixel (same along x and y).
    """

    mask: np.ndarray
    downsample: float

    @property
    def fraction(self) -> float:
        return float(self.mask.mean()) if self.mask.size else 0.0

    def any_in(self, x0: float, y0: float, x1: float, y1: float) -> bool:
        """Whether any tissue lies in the level-0 pixel rectangle [x0, x1) x [y0, y1)."""
        c0, r0 = int(x0 // self.downsample), int(y0 // self.downsample)
        c1 = int(np.ceil(x1 / self.downsample))
        r1 = int(np.ceil(y1 / self.downsample))
        return bool(self.mask[max(r0, 0) : max(r1, 0), max(c0, 0) : max(c1, 0)].any())


def detect_tissue(thumbnail: np.ndarray, downsample: float, mpp: float | None) -> TissueMask:
    """Tissue mask of an RGB thumbnail.

    Args:
        thumbnail: (h, w, 3) uint8.
        downsample: level-0 pixels per thumbnail pixel.
        mpp: µm per level-0 pixel, to express the size limits; None means the
            limits are taken as if a thumbnail pixel were 8 µm.
    """
    rgb = thumbnail.astype(np.float32) / 255.0
    top, bottom = rgb.max(axis=2), rgb.min(axis=2)
    saturation = (top - bottom) / np.maximum(top, 1e-3)
    density = -np.log10(np.clip(rgb, 1 / 255, 1)).mean(axis=2)
    saturation = ndimage.median_filter(saturation, size=3)
    threshold = float(np.clip(_otsu(saturation), *SATURATION_RANGE))
    tissue = ((saturation > threshold) & (density > MIN_TISSUE_OD)) | (density > DENSE_OD)
    pixel_um2 = (downsample * mpp) ** 2 if mpp else 64.0
    tissue = ndimage.binary_closing(tissue, structure=_disk(1), border_value=0)
    tissue = _fill_small_holes(tissue, MAX_HOLE_UM2 / pixel_um2)
    tissue = _remove_small_objects(tissue, MIN_OBJECT_UM2 / pixel_um2)
    return TissueMask(tissue, downsample)


def full_mask(dimensions: tuple[int, int], downsample: float) -> TissueMask:
    """A mask that is all tissue (detection switched off)."""
    cols = int(np.ceil(dimensions[0] / downsample))
    rows = int(np.ceil(dimensions[1] / downsample))
    return TissueMask(np.ones((rows, cols), bool), downsample)


def restrict_to_polygons(tissue: TissueMask, polygons: list, reach: float = 0.0) -> TissueMask:
    """Keep only the tissue within ``reach`` of ``polygons`` (shapely, level-0 pixels).

    Every mask pixel the polygons, grown by ``reach`` (level-0 pixels), touch
    is kept, however little of it they cover: the mask is coarse (8 µm per
    pixel on large slides), so a centre rule would drop tissue near the ROI's
    edge. The output polygons are cut at the ROI's exact edge instead
    (``SlidePlan.extent``); ``reach`` lets label cells that straddle that edge
    keep their centres on the mask.
    """
    rows, cols = tissue.mask.shape
    inside = np.zeros((rows, cols), bool)
    scale = 1.0 / tissue.downsample
    if reach > 0:
        grown = shapely.buffer(np.asarray(polygons, dtype=object), reach, join_style="mitre")
        polygons = [part for geom in grown for part in shapely.get_parts(geom)]
    for polygon in polygons:
        # Each polygon is drawn on its own patch so that its holes cannot
        # erase another polygon (an island annotated inside a ring's hole).
        x0, y0, x1, y1 = polygon.bounds
        left, top = max(0, math.floor(x0 * scale) - 1), max(0, math.floor(y0 * scale) - 1)
        right, bottom = min(cols, math.ceil(x1 * scale) + 1), min(rows, math.ceil(y1 * scale) + 1)
        if right <= left or bottom <= top:
            continue
        patch = Image.new("1", (right - left, bottom - top), 0)
        draw = ImageDraw.Draw(patch)
        draw.polygon(_ring_xy(polygon.exterior, scale, left, top), fill=1)
        for hole in polygon.interiors:
            draw.polygon(_ring_xy(hole, scale, left, top), fill=0)
        inside[top:bottom, left:right] |= np.asarray(patch, dtype=bool)
    # Filling takes pixels whose centres are inside; one pixel more on every
    # side takes each pixel an edge passes through.
    touched = ndimage.binary_dilation(inside, np.ones((3, 3), bool))
    return TissueMask(tissue.mask & touched, tissue.downsample)


def _ring_xy(ring: object, scale: float, left: int, top: int) -> list[tuple[float, float]]:
    """Ring vertices in the pixels of a patch whose corner is mask pixel (left, top).

    Mask pixel centres sit at half-integers, so the outline shifts by -0.5.
    """
    return [(x * scale - 0.5 - left, y * scale - 0.5 - top) for x, y in ring.coords]


def _otsu(values: np.ndarray, bins: int = 256) -> float:
    hist, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(hist)
    weight_high = weight_low[-1] - weight_low
    mean_low = np.cumsum(hist * centres) / np.maximum(weight_low, 1)
    total = (hist * centres).sum()
    mean_high = (total - np.cumsum(hist * centres)) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(centres[int(np.argmax(between))])


def _disk(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return xx * xx + yy * yy <= radius * radius


def _fill_small_holes(mask: np.ndarray, max_pixels: float) -> np.ndarray:
    holes, count = ndimage.label(~mask)
    if count == 0:
        return mask
    sizes = np.bincount(holes.ravel())
    # Components touching the border are the outside, never a hole.
    border = np.unique(np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]]))
    small = sizes <= max_pixels
    small[border] = False
    small[0] = False
    return mask | small[holes]


def _remove_small_objects(mask: np.ndarray, min_pixels: float) -> np.ndarray:
    objects, count = ndimage.label(mask)
    if count == 0:
        return mask
    keep = np.bincount(objects.ravel()) >= min_pixels
    keep[0] = False
    return keep[objects]
