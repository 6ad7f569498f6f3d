"""The candidate changes to ``stain`` that ``bench_stain_variants.py`` scores.

A variant's name is its parts joined by ``+`` (``g24+ratio``); each part adds
channels to ``stain``'s output, changes how its stain densities are measured,
weighs its channels, changes its bank windows or changes how a bank is fitted.
:func:`variant` builds the extractor of a name, :data:`FITTINGS` the fit.

Variants (combine with ``+``):
  g24       glass fraction averaged over a fourth, wider neighbourhood
            (radius 24 cells, 96 µm: several alveoli), margin raised to 128 px;
  ratio     haematoxylin's share of the stain density, H / (H + E), per cell
            and over the three context radii: unchanged when a slide's
            staining is stronger or weaker overall, where H and E are not;
  inter     tissue x the glass around it (radii 5 and 12 cells): high only
            for tissue among air spaces (thin alveolar walls), low for glass
            and for solid sheets alike, so no mixture of those can mimic it;
  ratio2    ratio, its channels weighted 2 (distances are what k-means and the
            factorization see);
  tissue    the context's H, E and nuclear fraction averaged over tissue alone
            (divided by the neighbourhood's tissue share), so that the air
            around a cell no longer dilutes what its tissue is like;
  open      tissue thickness: the share of a cell's tissue that survives a
            morphological opening (erosion, then dilation) of the tissue mask
            by 6 and by 12 px, per cell and over radii 5 and 12 cells. Thin
            alveolar walls vanish at either; stroma and tumour sheets stay,
            up to their edges, where a cell's distance to glass is as small
            as in a wall; margin raised to 128 px;
  lean      glass counted once: the context keeps only its H, E and nuclear
            fraction (over tissue alone, as in ``tissue``) at each radius and
            the glass share at the widest, where ``stain`` repeats brightness,
            its texture and glass at three radii, so that 14 of its 29 channels
            say how close a cell is to glass and clusters follow distance to
            glass (tumour lining a lumen and alveolar walls alike) more than
            what the tissue is;
  cnorm     stain densities normalised per image: H and E are each scaled so
            that their 99th percentile over the image's stained pixels is
            REFERENCE_MAX_DENSITY, as in Macenko et al. (2009)'s second step,
            so that a lightly and a darkly stained slide of one tissue give
            one concept (the shared patches 24 to 30 hold 1.5 times the eosin
            of the others); the fixed Ruifrok vectors are kept;
  macenko   cnorm with each image's own H and E vectors as well (Macenko et
            al., 2009: the extremes of the stained pixels' angle in the plane
            of their two largest singular vectors; the third, their cross
            product);
  zall      every channel weighted by the glass share's spread over the cells
            of a slide that is not one of the patches (CMU-1-Small-Region)
            divided by its own, so that all spread alike and the wide context
            channels, which separate normal tissue best but spread least,
            weigh as much in distances as the noisy per-cell ones;
  ztissue   zall with the spreads taken over that slide's tissue cells alone;
  window16  bank windows of 16 px instead of 32;
  allkmeans a change to fitting, not to the features: banks fitted as they
            were before issue 18, by k-means on all samples. ``stain`` now
            keeps one concept for glass (the mean of the samples more than
            half glass) and fits the other k - 1 on the rest
            (``fit_concepts``); this variant clears ``stain``'s
            ``glass_channel``, so that ``fit_bank`` fits as before, and
            measures what the glass concept gained;
  reseed    ``stain`` itself with other k-means starts (seeds 1000 on): no
            change at all, so its spread is the noise floor of a paired
            difference, what k-means' starts alone move a fold by.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import openslide
import torch
import torch.nn.functional as F
from PIL import Image

from common import SHARED_DIR
from fseg_server.concepts import ConceptBank
from fseg_server.concepts.kmeans import MOSTLY_GLASS
from fseg_server.extract import create_extractor
from fseg_server.extract.stain import (
    CELL_CHANNELS,
    CONTEXT_CHANNELS,
    CONTEXT_RADII,
    GLASS_CHANNEL,
    NUCLEAR_OD,
    NUCLEAR_SOFTNESS,
    StainExtractor,
    _box_mean,
    glass_pixels,
)
from wsss_protocol import FsegMethod

# Channels of stain's output that the additions read (see StainExtractor.features).
HAEMATOXYLIN, EOSIN, GLASS = 0, 1, GLASS_CHANNEL
MIN_STAIN_OD = 0.05  # below this a cell is glass: its H share means nothing
WIDE_RADIUS = 24  # cells (96 µm)
ADDITIONS = ("g24", "ratio", "ratio2", "inter", "tissue", "open", "lean")
NORMALISATIONS = ("cnorm", "macenko")  # change stain's H and E, add no channel
SCALINGS = ("zall", "ztissue")  # weigh stain's channels, add none
# The slide the scalings' spreads are measured on: real H&E (skin) that is not
# one of the annotated lung patches, read at stain's 1 µm/px (its 0.499 µm/px
# halved).
SCALING_SLIDE = SHARED_DIR / "slides" / "CMU-1-Small-Region.svs"
# Macenko et al. (2009): pixels with an optical density under 0.15 (natural log) in
# any channel are too faint to say which stain they hold; 0.065 in log10 units.
MIN_PIXEL_OD = 0.065
STAIN_ANGLE_PERCENTILE = 1.0  # robust extremes of the stain angle, in %
# The 99th percentile of H and E densities (OD, log10) that a normalised image
# gets: about the median of the shared patches' own under stain's fixed vectors
# (0.89, 0.28; no labels read), so that NUCLEAR_OD keeps its meaning.
REFERENCE_MAX_DENSITY = (0.9, 0.3)
MIN_STAINED_PIXELS = 500
MAX_CONDITION = 100.0  # vectors of one colour (a blank tile) keep the fixed ones
OPENING_RADII = (6, 12)  # px: walls thinner than 13 and 25 px vanish
OPEN_CONTEXT_RADII = (5, 12)  # cells
# Within each radius's context block: H, E, brightness, nuclear fraction, texture, glass.
CONTEXT_STAINS, CONTEXT_GLASS = [0, 1, 3], 5  # H, E, nuclear fraction; glass
MIN_TISSUE_SHARE = 0.1
RESEED = 1000  # k-means seeds of the reseed variant start here


class StainVariant(StainExtractor):
    """``stain`` with some of ADDITIONS appended to its channels, its densities
    normalised (NORMALISATIONS) or its channels weighed (SCALINGS)."""

    def __init__(self, additions: tuple[str, ...], concept_window: int | None) -> None:
        super().__init__()
        self.additions = additions
        self.channel_weights = _channel_weights(self, additions)
        probe = self.features(torch.zeros(1, 3, 64, 64))
        wide = {"g24", "open"} & set(additions)
        margin = 2 * self.spec.margin if wide else self.spec.margin
        self.spec = replace(
            self.spec,
            feature_dim=probe.shape[1],
            margin=margin,
            concept_window=concept_window or self.spec.concept_window,
        )

    def _pixel_maps(self, rgb: torch.Tensor) -> torch.Tensor:
        maps = super()._pixel_maps(rgb)
        if set(NORMALISATIONS) & set(self.additions):
            optical_density = -torch.log10(rgb.clamp(min=1.0 / 255.0))
            for b in range(rgb.shape[0]):  # a patch fits in one tile: per tile is per image
                unmix = self._image_unmix(optical_density[b])
                if unmix is not None:
                    _normalise_densities(maps[b], optical_density[b], unmix)
        return maps

    def _image_unmix(self, od: torch.Tensor) -> torch.Tensor | None:
        """The (3, 3) unmixing matrix for one image's optical density ``od`` (3, H, W),
        or None when too few of its pixels are stained to normalise it."""
        stained = od.flatten(1).T[(od.flatten(1) > MIN_PIXEL_OD).all(0)]
        if len(stained) < MIN_STAINED_PIXELS:
            return None
        vectors = _macenko_vectors(stained) if "macenko" in self.additions else None
        if vectors is not None and torch.linalg.cond(vectors) < MAX_CONDITION:
            return torch.linalg.inv(vectors)
        return self._unmix

    def features(self, rgb: torch.Tensor) -> torch.Tensor:
        base = super().features(rgb)
        if self.channel_weights is not None:
            base = base * self.channel_weights[:, None, None]
        if "tissue" in self.additions or "lean" in self.additions:
            base = _tissue_context(base)
        if "lean" in self.additions:
            base = _lean_context(base)
        glass = base[:, GLASS : GLASS + 1]
        extra = []
        if "g24" in self.additions:
            extra.append(_box_mean(glass, WIDE_RADIUS))
        if "ratio" in self.additions or "ratio2" in self.additions:
            h, e = base[:, HAEMATOXYLIN : HAEMATOXYLIN + 1], base[:, EOSIN : EOSIN + 1]
            density = h + e
            share = h / density.clamp_min(MIN_STAIN_OD) * (density > MIN_STAIN_OD)
            share = share * (2.0 if "ratio2" in self.additions else 1.0)
            extra += [share, *(_box_mean(share, r) for r in CONTEXT_RADII)]
        if "inter" in self.additions:
            extra += [(1 - glass) * _box_mean(glass, r) for r in (5, 12)]
        if "open" in self.additions:
            extra += _thickness(self._pixel_maps(rgb), self.spec.stride)
        return torch.cat([base, *extra], dim=1).clamp_min_(0.0)


def _normalise_densities(maps: torch.Tensor, od: torch.Tensor, unmix: torch.Tensor) -> None:
    """Rewrite one image's H, E, residual and nuclear maps in ``maps`` (6, H, W), its
    H and E scaled so that their 99th percentiles over stained pixels are
    REFERENCE_MAX_DENSITY."""
    stains = torch.einsum("chw,cd->dhw", od, unmix).clamp_min(0.0)
    stained = (od > MIN_PIXEL_OD).all(0)
    top = torch.quantile(stains[:2, stained], 0.99, dim=1).clamp_min(1e-3)
    maps[:2] = stains[:2] * (torch.tensor(REFERENCE_MAX_DENSITY) / top)[:, None, None]
    maps[2] = stains[2]
    maps[5] = torch.sigmoid((maps[0] - NUCLEAR_OD) / NUCLEAR_SOFTNESS)


def _channel_weights(extractor: StainExtractor, additions: tuple[str, ...]) -> torch.Tensor | None:
    """Per channel, the glass share's spread over the scaling slide's cells divided
    by the channel's own (over all cells for ``zall``, over tissue cells for
    ``ztissue``): every channel then spreads as far as the glass share, which
    keeps its units, so that MOSTLY_GLASS still means half glass."""
    scaling = next((a for a in additions if a in SCALINGS), None)
    if scaling is None:
        return None
    with openslide.OpenSlide(SCALING_SLIDE) as slide:
        image = slide.read_region((0, 0), 0, slide.dimensions).convert("RGB")
    image = image.resize((image.width // 2, image.height // 2), Image.BILINEAR)
    rgb = torch.from_numpy(np.asarray(image, np.float32) / 255.0).permute(2, 0, 1)[None]
    with torch.no_grad():
        cells = StainExtractor.features(extractor, rgb)[0].flatten(1)
    if scaling == "ztissue":
        cells = cells[:, cells[GLASS] <= MOSTLY_GLASS]
    spread = cells.std(dim=1)
    return spread[GLASS] / spread.clamp_min(1e-3)


def _macenko_vectors(od: torch.Tensor) -> torch.Tensor:
    """(3, 3) unit stain vectors (H, E, residual as rows) of one image's stained
    pixels ``od`` (N, 3): the extremes of their angle in the plane of the two
    largest singular vectors (Macenko et al., 2009)."""
    _, _, vh = torch.linalg.svd(od.double(), full_matrices=False)
    plane = vh[:2].T * torch.sign(vh[:2].sum(dim=1))  # both axes into positive OD
    projected = od.double() @ plane
    angle = torch.atan2(projected[:, 1], projected[:, 0])
    q = STAIN_ANGLE_PERCENTILE / 100.0
    ends = torch.quantile(angle, torch.tensor([q, 1 - q], dtype=torch.float64))
    a, b = (plane @ torch.stack([ends.cos(), ends.sin()])).T
    h, e = (a, b) if a[0] > b[0] else (b, a)  # haematoxylin absorbs more red
    residual = torch.linalg.cross(h, e)
    residual = residual * residual.sum().sign()  # the third stain absorbs, too
    vectors = torch.stack([h, e, residual]).float()
    return vectors / vectors.norm(dim=1, keepdim=True)


def _thickness(pixels: torch.Tensor, cell: int) -> list[torch.Tensor]:
    """Per opening radius: the cell's share of pixels in tissue that survives the
    opening, then its mean over OPEN_CONTEXT_RADII."""
    tissue = (~glass_pixels(pixels)).float()
    out = []
    for r in OPENING_RADII:
        width = 2 * r + 1
        eroded = -F.max_pool2d(-tissue, width, stride=1, padding=r)
        opened = F.avg_pool2d(F.max_pool2d(eroded, width, stride=1, padding=r), cell)
        out += [opened, *(_box_mean(opened, c) for c in OPEN_CONTEXT_RADII)]
    return out


def _tissue_context(base: torch.Tensor) -> torch.Tensor:
    out = base.clone()
    for i in range(len(CONTEXT_RADII)):
        block = CELL_CHANNELS + i * CONTEXT_CHANNELS
        tissue = (1 - base[:, block + CONTEXT_GLASS]).clamp_min(MIN_TISSUE_SHARE)
        for c in CONTEXT_STAINS:
            out[:, block + c] = base[:, block + c] / tissue
    return out


def _lean_context(base: torch.Tensor) -> torch.Tensor:
    keep = list(range(CELL_CHANNELS))
    for i in range(len(CONTEXT_RADII)):
        keep += [CELL_CHANNELS + i * CONTEXT_CHANNELS + c for c in CONTEXT_STAINS]
    keep.append(CELL_CHANNELS + (len(CONTEXT_RADII) - 1) * CONTEXT_CHANNELS + CONTEXT_GLASS)
    return base[:, keep]


class ReseededFit(FsegMethod):
    """``stain``'s fitting with other k-means starts (the ``reseed`` variant)."""

    def fit(self, images: Sequence[Path], k: int, seed: int) -> ConceptBank:
        return super().fit(images, k, seed + RESEED)


FITTINGS = {"reseed": ReseededFit}


def unknown_part(name: str) -> str | None:
    """The first part of ``name`` that names no variant, if any."""
    known = (*ADDITIONS, *NORMALISATIONS, *SCALINGS, *FITTINGS, "window16", "allkmeans", "stain")
    return next((p for p in name.split("+") if p not in known), None)


def variant(name: str) -> StainExtractor:
    parts = tuple(p for p in name.split("+") if p not in FITTINGS)
    additions = tuple(p for p in parts if p in (*ADDITIONS, *NORMALISATIONS, *SCALINGS))
    if additions or "window16" in parts:
        extractor = StainVariant(additions, 16 if "window16" in parts else None)
    else:
        extractor = create_extractor("stain")
    if "allkmeans" in parts:  # fit_bank then fits as it did before glass had a concept
        extractor.spec = replace(extractor.spec, glass_channel=None)
    return extractor
