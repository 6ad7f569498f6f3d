"""Colour-guided upsampling of class scores to label pixels.

A feature cell spans several pixels (4 for ``stain``, 16 for a ViT-L/16), so
labels finer than the feature grid need the scores upsampled. Bilinear
upsampling, as the F-SEG reference does, puts every boundary halfway between
cell centres whatever the tissue looks like. Joint bilateral upsampling
(Kopf et al., 2007) weighs each neighbouring cell's scores by its distance to
the pixel *and* by how close the pixel's colour is to the cell's mean colour,
so that a boundary between, say, a gland and the lumen inside it follows the
edge a person sees. Where the colours are alike it falls back to a smooth,
distance-weighted blend.

The guide travels beside the features as channels of the feature grid: each
cell carries its u x u label pixels' colours (``guide_cells``), so that any
crop of the grid crops its guide with it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Spatial sigma in feature cells: a neighbour one cell away keeps 61% weight.
SPATIAL_SIGMA_CELLS = 1.0
# Range sigma in RGB units of [0, 1]: about 25 grey levels, the contrast of a
# visible stain edge rather than of noise within one tissue type.
COLOUR_SIGMA = 0.1
LIKENESS_FLOOR = 1e-6
RADIUS_CELLS = 1  # neighbours considered: the 3 x 3 cells around a pixel's own


def guide_cells(tiles: torch.Tensor, stride: int, upsample: int) -> torch.Tensor:
    """Label-pixel colours of (B, H, W, 3) uint8 tiles, stacked per feature cell.

    Args:
        tiles: pixels at the working resolution; H and W multiples of ``stride``.
        stride: the extractor's feature cell edge in working pixels.
        upsample: label pixels per cell edge (1 <= upsample <= stride).

    Returns:
        (B, 3 * upsample**2, H / stride, W / stride) float in [0, 1]; each
        label pixel's colour is the mean over the working pixels it covers.
    """
    images = tiles.permute(0, 3, 1, 2).float().div_(255.0)
    label_pixels = F.avg_pool2d(images, stride // upsample) if upsample < stride else images
    return F.pixel_unshuffle(label_pixels, upsample)


def guided_upsample(scores: torch.Tensor, guide: torch.Tensor, upsample: int) -> torch.Tensor:
    """Scores upsampled by ``upsample`` with the colours of ``guide``.

    Args:
        scores: (B, M, h, w) per-cell scores.
        guide: (B, 3 * upsample**2, h, w) from :func:`guide_cells`, cropped as
            ``scores`` is.
        upsample: label pixels per cell edge.

    Returns:
        (B, M, h * upsample, w * upsample) scores; pixel centres are aligned
        as bilinear upsampling with ``align_corners=False`` aligns them.
    """
    u, r = upsample, RADIUS_CELLS
    batch, classes, rows, cols = scores.shape
    # Label pixels stay grouped by cell, (B, 3, u, u, h, w), so that a cell's
    # scores and mean colour broadcast over its pixels without copies.
    pixels = guide.to(scores.dtype).view(batch, 3, u, u, rows, cols)
    cell_colours = pixels.mean(dim=(2, 3))
    padded_scores = F.pad(scores, (r, r, r, r), mode="replicate")
    padded_colours = F.pad(cell_colours, (r, r, r, r), mode="replicate")
    # Offset of each label pixel from its own cell's centre, in cells.
    within = (torch.arange(u, device=scores.device, dtype=scores.dtype) + 0.5) / u - 0.5
    total = scores.new_zeros(batch, classes, u, u, rows, cols)
    weight_sum = scores.new_zeros(batch, 1, u, u, rows, cols)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            neighbour = (..., slice(r + dy, r + dy + rows), slice(r + dx, r + dx + cols))
            distance2 = (within - dy).view(u, 1, 1, 1) ** 2 + (within - dx).view(u, 1, 1) ** 2
            spatial = torch.exp(-distance2 / (2 * SPATIAL_SIGMA_CELLS**2))
            colour = padded_colours[neighbour][:, :, None, None]
            difference2 = ((pixels - colour) ** 2).sum(1, keepdim=True)
            # The floor keeps a pixel unlike all its neighbours (a lone dark
            # speck on glass) from dividing zero by zero: it gets a plain blend.
            likeness = torch.exp(-difference2 / (2 * COLOUR_SIGMA**2)).clamp_min(LIKENESS_FLOOR)
            weight = spatial * likeness
            total += weight * padded_scores[neighbour][:, :, None, None]
            weight_sum += weight
    blended = (total / weight_sum).view(batch, classes * u * u, rows, cols)
    return F.pixel_shuffle(blended, u)
