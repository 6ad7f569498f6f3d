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
    is kept, however little of it they cover (see :func:`pixels_near`): the
    mask is coarse (8 µm per pixel on large slides), so a centre rule would
    drop tissue near the ROI's edge. The output polygons are cut at the ROI's
    exact edge instead (``SlidePlan.extent``); ``reach`` lets label cells that
    straddle that edge keep their centres on the mask.
    """
    near = pixels_near(tissue.mask.shape, tissue.downsample, polygons, reach)
    return TissueMask(tissue.mask & near, tissue.downsample)


def pixels_near(
    shape: tuple[int, int], downsample: float, polygons: list, reach: float = 0.0
) -> np.ndarray:
    """(rows, cols) bool: the pixels of a grid within ``reach`` of ``polygons``, or touched by them.

    Pixel (row, col) covers level-0 ``(col, row) * downsample`` to one pixel
    further; ``polygons`` and ``reach`` are in level-0 pixels. A pixel the
    polygons touch has its centre within half its diagonal of them, so the
    polygons are grown by that much (and ``reach``) and filled by the
    pixel-centre rule: every touched pixel is kept, and a few near the edges
    that are not.
    """
    rows, cols = shape
    near = np.zeros(shape, bool)
    grown = shapely.buffer(np.asarray(polygons, dtype=object), reach + downsample * math.sqrt(0.5))
    for polygon in (part for geom in grown for part in shapely.get_parts(geom)):
        # One polygon at a time (even-odd within it, OR across them), so that a
        # ring's hole cannot erase another polygon (an island annotated inside it),
        # each filled on its own bounding box only.
        x0, y0, x1, y1 = (v / downsample for v in polygon.bounds)
        left, top = max(0, math.floor(x0)), max(0, math.floor(y0))
        right, bottom = min(cols, math.ceil(x1) + 1), min(rows, math.ceil(y1) + 1)
        if right <= left or bottom <= top:
            continue
        corner = np.array([left, top])
        rings = [
            np.asarray(r.coords) / downsample - corner
            for r in (polygon.exterior, *polygon.interiors)
        ]
        near[top:bottom, left:right] |= _centres_inside(rings, (bottom - top, right - left))
    return near


def _centres_inside(rings: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Pixels whose centres lie inside ``rings`` (even-odd; vertices in pixel units).

    A scanline fill at every pixel-centre row, exact where a drawing library
    rounds vertices to whole pixels.
    """
    rows, cols = shape
    inside = np.zeros(shape, bool)
    edges = np.concatenate([np.stack([r[:-1], r[1:]], axis=1) for r in rings])  # (E, 2, 2)
    (x0, y0), (x1, y1) = edges[:, 0].T, edges[:, 1].T
    # Rows whose centre y = row + 0.5 falls in [top, bottom) of each edge.
    first = np.clip(np.ceil(np.minimum(y0, y1) - 0.5), 0, rows).astype(np.int64)
    last = np.clip(np.ceil(np.maximum(y0, y1) - 0.5), 0, rows).astype(np.int64)
    count = last - first
    if count.sum() == 0:
        return inside
    edge = np.repeat(np.arange(len(edges)), count)
    step = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    row = np.repeat(first, count) + step
    y = row + 0.5
    x = x0[edge] + (y - y0[edge]) * (x1[edge] - x0[edge]) / (y1[edge] - y0[edge])
    order = np.lexsort((x, row))
    row, x = row[order], x[order]
    span_rows = row[0::2]  # crossings pair up within each row (even-odd)
    # Columns whose centre x = col + 0.5 falls in [x_in, x_out).
    c_in = np.clip(np.ceil(x[0::2] - 0.5), 0, cols).astype(np.int64)
    c_out = np.clip(np.ceil(x[1::2] - 0.5), 0, cols).astype(np.int64)
    r0, r1 = int(span_rows.min()), int(span_rows.max()) + 1  # only the rows crossed
    change = np.zeros((r1 - r0, cols + 1), np.int8)  # spans of one polygon never overlap
    np.add.at(change, (span_rows - r0, c_in), 1)
    np.add.at(change, (span_rows - r0, c_out), -1)
    inside[r0:r1] = np.cumsum(change, axis=1, dtype=np.int8)[:, :cols] > 0
    return inside


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
