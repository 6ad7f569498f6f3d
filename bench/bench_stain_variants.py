"""Candidate changes to the built-in ``stain`` extractor, scored against it fold by fold.

Issue 18 asks for a built-in extractor that does better on unseen lung H&E,
normal (alveolar) tissue above all. Each candidate here is ``stain`` with a
few channels added (or its bank windows changed), put through the
cross-validated protocol of ``wsss_protocol.py`` on the same splits and
seeds as the current extractor; ``vs_first`` is its paired difference to
``stain`` (mean, standard deviation, folds where it rose). A candidate
would replace ``stain`` only if it rose by more than that spread.

    python bench/bench_stain_variants.py [--variants g24,ratio,g24+ratio]
        [--k 8,16,32] [--seeds 5] [--starts 1] [--name NAME]

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
With ``--starts N`` each fold's score is the mean of N k-means starts, which
shrinks the part of a paired difference's spread that is k-means' alone
(``reseed``: 0.034 with one start, 0.017 with four, k = 8).
Results: bench/results/stain-variants[-NAME].json (``--name``). Of the feature
changes, none has risen by more than its spread so far; the glass concept in
fitting did, with four starts per fold (README, How well it segments).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, write_json
from fseg_server.concepts import ConceptBank
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
from fseg_server.pipeline.options import SegmentOptions
from wsss_protocol import (
    FsegMethod,
    cross_validate,
    paired_difference,
    patches,
    summarise,
)

# Channels of stain's output that the additions read (see StainExtractor.features).
HAEMATOXYLIN, EOSIN, GLASS = 0, 1, GLASS_CHANNEL
MIN_STAIN_OD = 0.05  # below this a cell is glass: its H share means nothing
WIDE_RADIUS = 24  # cells (96 µm)
ADDITIONS = ("g24", "ratio", "ratio2", "inter", "tissue", "open", "lean")
OPENING_RADII = (6, 12)  # px: walls thinner than 13 and 25 px vanish
OPEN_CONTEXT_RADII = (5, 12)  # cells
# Within each radius's context block: H, E, brightness, nuclear fraction, texture, glass.
CONTEXT_STAINS, CONTEXT_GLASS = [0, 1, 3], 5  # H, E, nuclear fraction; glass
MIN_TISSUE_SHARE = 0.1
RESEED = 1000  # k-means seeds of the reseed variant start here


class StainVariant(StainExtractor):
    """``stain`` with some of ADDITIONS appended to its channels."""

    def __init__(self, additions: tuple[str, ...], concept_window: int | None) -> None:
        super().__init__()
        self.additions = additions
        probe = self.features(torch.zeros(1, 3, 64, 64))
        wide = {"g24", "open"} & set(additions)
        margin = 2 * self.spec.margin if wide else self.spec.margin
        self.spec = replace(
            self.spec,
            feature_dim=probe.shape[1],
            margin=margin,
            concept_window=concept_window or self.spec.concept_window,
        )

    def features(self, rgb: torch.Tensor) -> torch.Tensor:
        base = super().features(rgb)
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
    known = (*ADDITIONS, *FITTINGS, "window16", "allkmeans", "stain")
    return next((p for p in name.split("+") if p not in known), None)


def variant(name: str) -> StainExtractor:
    parts = tuple(p for p in name.split("+") if p not in FITTINGS)
    additions = tuple(p for p in parts if p in ADDITIONS)
    if additions or "window16" in parts:
        extractor = StainVariant(additions, 16 if "window16" in parts else None)
    else:
        extractor = create_extractor("stain")
    if "allkmeans" in parts:  # fit_bank then fits as it did before glass had a concept
        extractor.spec = replace(extractor.spec, glass_channel=None)
    return extractor


def main() -> None:
    args = _parser().parse_args()
    images, ks = patches(), [int(k) for k in args.k.split(",")]
    baseline: dict[int, list[dict]] = {}  # stain's folds per k: the pairs for vs_first
    rows, table = [], []
    for name in ["stain", *args.variants.split(",")]:
        extractor = variant(name)
        fitting = next((FITTINGS[p] for p in name.split("+") if p in FITTINGS), FsegMethod)
        method = fitting(extractor, "project", SegmentOptions())
        for k in ks:
            started = time.perf_counter()
            folds = cross_validate(method, images, k, args.seeds, starts=args.starts)
            baseline.setdefault(k, [vars(f) for f in folds])
            summary = summarise(folds)
            rows.append({"variant": name, "k": k, "feature_dim": extractor.spec.feature_dim,
                         "cross_validated": summary, "folds": [vars(f) for f in folds],
                         "seconds": time.perf_counter() - started})  # fmt: skip
            table.append(_table_row(name, k, extractor.spec.feature_dim, summary))
            table[-1] |= paired_difference(folds, baseline[k])
            print_table(table[-1:], "")
        method.close()
    print_table(table, f"stain variants, {len(images)} patches, {args.seeds} seeds, project mode")
    payload = {"settings": vars(args), "rows": rows, "table": table}
    write_json(f"stain-variants-{args.name}" if args.name else "stain-variants", payload)


def _table_row(name: str, k: int, channels: int, summary: dict) -> dict:
    per_class = summary["per_class_iou_mean"]
    return {
        "variant": name, "k": k, "channels": channels,
        "cv_mIoU": summary["miou_mean"], "sd": summary["miou_sd"],
        **{c: per_class[c] for c in ("tumour", "stroma", "normal", "background")},
    }  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="allkmeans,g24,ratio,inter,window16,g24+ratio",
                        type=lambda text: _variants(parser, text),
                        help="comma-separated; scored after stain itself")  # fmt: skip
    parser.add_argument("--k", default="8,16,32", help="comma-separated k values")
    parser.add_argument("--seeds", type=int, default=5, help="splits (two folds each)")
    parser.add_argument("--starts", type=int, default=1,
                        help="k-means starts per fold, its score their mean")  # fmt: skip
    parser.add_argument("--name", default="", help="results go to stain-variants-NAME.json")
    return parser


def _variants(parser: argparse.ArgumentParser, text: str) -> str:
    for name in text.split(","):
        if unknown_part(name):
            parser.error(f"unknown variant {unknown_part(name)!r} in {name!r}")
    return text


if __name__ == "__main__":
    main()
