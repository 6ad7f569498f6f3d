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
    StainExtractor,
    _box_mean,
    glass_pixels,
)
from fseg_server.slide.reader import open_slide
from wsss_protocol import FsegMethod

# Channels of stain's output that the additions read (see StainExtractor.features).
HAEMATOXYLIN, EOSIN, GLASS = 0, 1, GLASS_CHANNEL
MIN_STAIN_OD = 0.05  # below this a cell is glass: its H share means nothing
WIDE_RADIUS = 24  # cells (96 µm)
ADDITIONS = ("g24", "ratio", "ratio2", "inter", "tissue", "open", "lean")
NORMALISATIONS = ("cnorm", "macenko")  # change stain's H and E, add no channel
SCALINGS = ("zall", "ztissue")  # weigh stain's channels, add none
EXTRACTOR_PARTS = (*ADDITIONS, *NORMALISATIONS, *SCALINGS)  # parts StainVariant does
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

    def __init__(self, parts: tuple[str, ...], concept_window: int | None) -> None:
        super().__init__()
        self.parts = parts
        self.channel_weights = _channel_weights(parts)
        probe = self.features(torch.zeros(1, 3, 64, 64))
        wide = {"g24", "open"} & set(parts)
        margin = 2 * self.spec.margin if wide else self.spec.margin
        self.spec = replace(
            self.spec,
            feature_dim=probe.shape[1],
            margin=margin,
            concept_window=concept_window or self.spec.concept_window,
        )

    def stain_densities(self, optical_density: torch.Tensor) -> torch.Tensor:
        stains = super().stain_densities(optical_density)
        if not set(NORMALISATIONS) & set(self.parts):
            return stains
        for b, od in enumerate(optical_density):  # a patch fits in one tile: per tile is per image
            stained = (od > MIN_PIXEL_OD).all(0)
            if int(stained.sum()) < MIN_STAINED_PIXELS:
                continue  # too faint to say how it is stained: left as it is
            if "macenko" in self.parts:
                unmix = self._image_unmix(od[:, stained].T)
                stains[b] = torch.einsum("chw,cd->dhw", od, unmix).clamp_min(0.0)
            top = torch.quantile(stains[b, :2, stained], 0.99, dim=1).clamp_min(1e-3)
            stains[b, :2] *= (torch.tensor(REFERENCE_MAX_DENSITY) / top)[:, None, None]
        return stains

    def _image_unmix(self, stained: torch.Tensor) -> torch.Tensor:
        """The (3, 3) unmixing matrix of one image's stained pixels (N, 3, OD): its
        own stain vectors', or the fixed ones' where its own are degenerate."""
        vectors = _macenko_vectors(stained)
        if torch.linalg.cond(vectors) < MAX_CONDITION:
            return torch.linalg.inv(vectors)
        return self._unmix

    def features(self, rgb: torch.Tensor) -> torch.Tensor:
        pixels = self.pixel_maps(rgb)
        base = self.features_of_maps(pixels)
        if self.channel_weights is not None:
            base = base * self.channel_weights[:, None, None]
        if "tissue" in self.parts or "lean" in self.parts:
            base = _tissue_context(base)
        if "lean" in self.parts:
            base = _lean_context(base)
        glass = base[:, GLASS : GLASS + 1]
        extra = []
        if "g24" in self.parts:
            extra.append(_box_mean(glass, WIDE_RADIUS))
        if "ratio" in self.parts or "ratio2" in self.parts:
            h, e = base[:, HAEMATOXYLIN : HAEMATOXYLIN + 1], base[:, EOSIN : EOSIN + 1]
            density = h + e
            share = h / density.clamp_min(MIN_STAIN_OD) * (density > MIN_STAIN_OD)
            share = share * (2.0 if "ratio2" in self.parts else 1.0)
            extra += [share, *(_box_mean(share, r) for r in CONTEXT_RADII)]
        if "inter" in self.parts:
            extra += [(1 - glass) * _box_mean(glass, r) for r in (5, 12)]
        if "open" in self.parts:
            extra += _thickness(pixels, self.spec.stride)
        return torch.cat([base, *extra], dim=1).clamp_min_(0.0)


def _channel_weights(parts: tuple[str, ...]) -> torch.Tensor | None:
    """Per channel, the glass share's spread over the scaling slide's cells divided
    by the channel's own (over all cells for ``zall``, over tissue cells for
    ``ztissue``): every channel then spreads as far as the glass share, which
    keeps its units, so that MOSTLY_GLASS still means half glass."""
    scaling = next((p for p in parts if p in SCALINGS), None)
    if scaling is None:
        return None
    with open_slide(SCALING_SLIDE) as slide:
        width, height = slide.info.dimensions
        image = Image.fromarray(slide.read(0, 0, 0, width, height))
    image = image.resize((width // 2, height // 2), Image.BILINEAR)
    rgb = torch.from_numpy(np.asarray(image, np.float32) / 255.0).permute(2, 0, 1)[None]
    with torch.no_grad():
        cells = StainExtractor().features(rgb)[0].flatten(1)
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
    known = (*EXTRACTOR_PARTS, *FITTINGS, "window16", "allkmeans", "stain")
    return next((p for p in name.split("+") if p not in known), None)


def variant(name: str) -> StainExtractor:
    parts = tuple(p for p in name.split("+") if p not in FITTINGS)
    changes = tuple(p for p in parts if p in EXTRACTOR_PARTS)
    if changes or "window16" in parts:
        extractor = StainVariant(changes, 16 if "window16" in parts else None)
    else:
        extractor = create_extractor("stain")
    if "allkmeans" in parts:  # fit_bank then fits as it did before glass had a concept
        extractor.spec = replace(extractor.spec, glass_channel=None)
    return extractor
