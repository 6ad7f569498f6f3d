"""``stain``: a built-in, weight-free extractor for H&E.

It needs no download, runs fast on a CPU, and gives the product something
real to segment on a fresh machine. Each feature cell (4 x 4 px, 4 µm at the
native 1 µm/px) describes its stains and texture:

* colour deconvolution (Ruifrok and Johnston, 2001) of optical density into
  haematoxylin (nuclei), eosin (cytoplasm, stroma) and a residual channel;
* brightness and saturation, which separate glass, fat and lumens from tissue;
* a soft nuclear fraction (share of pixels dense in haematoxylin) and a glass
  fraction (share of bright, colourless pixels), so that mixed cells at a
  tissue edge say how much of each they hold;
* within-cell standard deviations and brightness gradients (texture);
* stains, brightness, nuclei, texture and glass averaged over three wider
  neighbourhoods (radii of 2, 5 and 12 cells: 8, 20 and 48 µm) for context.
  The widest one spans a gland or a few alveoli, and the glass around a cell
  tells a solid sheet of tumour or stroma from thin walls around air.

All features are non-negative, as the factorization requires, and scaled so
that none dominates distances by its units alone.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import InvalidInput
from .base import Extractor, ExtractorSpec
from .registry import register

# Optical-density vectors of haematoxylin, eosin and DAB (rows), unit length.
STAIN_VECTORS = torch.tensor([[0.650, 0.704, 0.286], [0.072, 0.990, 0.105], [0.268, 0.570, 0.776]])
STAIN_VECTORS = STAIN_VECTORS / STAIN_VECTORS.norm(dim=1, keepdim=True)
# Haematoxylin density (OD units) above which a pixel counts as nuclear.
NUCLEAR_OD = 0.35
NUCLEAR_SOFTNESS = 0.08
GLASS_BRIGHTNESS, GLASS_SATURATION = 0.8, 0.15  # a glass pixel is brighter and greyer
CONTEXT_RADII = (2, 5, 12)  # in cells, a factor of about 2.5 apart
# Per cell: 6 pixel-map means, 3 texture spreads, edges and glass fraction; then,
# per context radius, 6 neighbourhood means (see StainExtractor.features).
CELL_CHANNELS, CONTEXT_CHANNELS = 11, 6
GLASS_CHANNEL = CELL_CHANNELS - 1  # the cell's glass fraction, last of its own channels
TEXTURE_GAIN = 3.0  # standard deviations and gradients are ~3x smaller than means

STAIN_SPEC = ExtractorSpec(
    name="stain",
    feature_dim=CELL_CHANNELS + CONTEXT_CHANNELS * len(CONTEXT_RADII),
    stride=4,
    mpp=1.0,
    mean=(0.0, 0.0, 0.0),
    std=(1.0, 1.0, 1.0),
    tile_size=1024,
    region_size=2048,
    network=False,  # optical densities need fp32, and this is cheap anyway
    # The widest context reaches 48 px; the rest covers the edge gradients and
    # the label upsampling, so that tiles join without seams.
    margin=64,
    weights="none needed",
    # The stain features describe a cell's neighbourhood already; small windows
    # keep the fitted concepts close to pure tissue types.
    concept_window=32,
    batch_size=2,
    glass_channel=GLASS_CHANNEL,
)


class StainExtractor(Extractor):
    """Colour-deconvolution and texture features; see the module docstring."""

    weights_state = "built in (no weights)"

    def __init__(self) -> None:
        super().__init__(STAIN_SPEC)
        self.register_buffer("_unmix", torch.linalg.inv(STAIN_VECTORS), persistent=False)

    def features(self, rgb: torch.Tensor) -> torch.Tensor:
        return self.features_of_maps(self.pixel_maps(rgb))

    def features_of_maps(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, feature_dim, H / stride, W / stride) features of :meth:`pixel_maps`' output."""
        s = self.spec.stride
        means = F.avg_pool2d(pixels, s)
        spread = _cell_std(pixels[:, [0, 1, 3]], s) * TEXTURE_GAIN
        edges = F.avg_pool2d(_gradient_magnitude(pixels[:, 3:4]), s) * TEXTURE_GAIN
        glass_fraction = F.avg_pool2d(glass_pixels(pixels).float(), s)
        cells = torch.cat([means, spread, edges, glass_fraction], dim=1)  # CELL_CHANNELS
        # Context: H, E, brightness, nuclear fraction, brightness texture and glass around it.
        context_source = torch.cat(
            [means[:, [0, 1, 3, 5]], spread[:, 2:3], glass_fraction], dim=1
        )  # CONTEXT_CHANNELS
        context = [_box_mean(context_source, r) for r in CONTEXT_RADII]
        return torch.cat([cells, *context], dim=1).clamp_min_(0.0)

    def pixel_maps(self, rgb: torch.Tensor) -> torch.Tensor:
        """(B, 6, H, W) per pixel of ``rgb`` (B, 3, H, W, 0 to 1): H, E and residual
        densities (OD), brightness, saturation and nuclear share."""
        stains = self.stain_densities(-torch.log10(rgb.clamp(min=1.0 / 255.0)))
        brightness = rgb.mean(dim=1, keepdim=True)
        top = rgb.amax(dim=1, keepdim=True)
        saturation = (top - rgb.amin(dim=1, keepdim=True)) / top.clamp(min=1e-3)
        nuclear = torch.sigmoid((stains[:, 0:1] - NUCLEAR_OD) / NUCLEAR_SOFTNESS)
        return torch.cat([stains, brightness, saturation, nuclear], dim=1)

    def stain_densities(self, optical_density: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) H, E and residual densities of ``optical_density`` (B, 3, H, W,
        log10 units), by the fixed Ruifrok vectors."""
        return torch.einsum("bchw,cd->bdhw", optical_density, self._unmix).clamp_min(0.0)


def glass_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) True where a pixel of :meth:`StainExtractor.pixel_maps`' output
    is glass: brighter than GLASS_BRIGHTNESS and greyer than GLASS_SATURATION."""
    return (pixels[:, 3:4] > GLASS_BRIGHTNESS) & (pixels[:, 4:5] < GLASS_SATURATION)


def _cell_std(x: torch.Tensor, cell: int) -> torch.Tensor:
    mean = F.avg_pool2d(x, cell)
    return (F.avg_pool2d(x * x, cell) - mean * mean).clamp_min(0.0).sqrt()


def _gradient_magnitude(x: torch.Tensor) -> torch.Tensor:
    padded = F.pad(x, (0, 1, 0, 1), mode="replicate")
    dx = padded[..., :-1, 1:] - padded[..., :-1, :-1]
    dy = padded[..., 1:, :-1] - padded[..., :-1, :-1]
    return (dx * dx + dy * dy).sqrt()


def _box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    # Rows, then columns: a box is separable, and two 1-D passes cost 2(2r + 1)
    # reads per cell instead of (2r + 1)^2, which matters at r = 12.
    width = 2 * radius + 1
    padded = F.pad(x, (radius,) * 4, mode="replicate")
    rows = F.avg_pool2d(padded, (1, width), stride=1)
    return F.avg_pool2d(rows, (width, 1), stride=1)


@register(STAIN_SPEC)
def stain(weights: str | Path | None = None) -> StainExtractor:
    """The built-in extractor; it has no weights to load."""
    if weights is not None and str(weights) != "random":
        raise InvalidInput("the stain extractor has no weights; drop --weights for it")
    return StainExtractor()
