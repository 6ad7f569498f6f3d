"""Fitting a concept bank on slides or images: the F-SEG authors' recipe.

Tiles are sampled from each input's tissue, their features averaged over
windows (``concept_window`` pixels), and the window vectors stream into one
bounded reservoir; k-means then fits every requested k on that sample. A
reservoir that keeps tags keeps each vector's input and level-0 window with
it, and the bank remembers a sample of them (``concepts/provenance.py``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..concepts.bank import ConceptBank, default_classes
from ..concepts.kmeans import Reservoir, fit_concepts
from ..concepts.provenance import (
    WINDOW_COLUMNS,
    Provenance,
    SampledInput,
    file_fingerprint,
    sampled_subset,
)
from ..errors import FailedPrecondition, FsegError, InvalidInput, NotFound, PermissionDenied
from ..extract import Extractor
from ..slide.reader import Slide
from ..slide.tiles import Tile
from .device_worker import DeviceWorker
from .options import SegmentOptions
from .plan import SlidePlan, plan_slide
from .progress import Progress
from .recipes import FeatureRecipe
from .stream import pixels_with, stream_tiles

log = logging.getLogger("fseg.server")

MIN_TISSUE_IN_WINDOW = 0.5  # windows mostly on glass are not samples of tissue


def sample_slide(
    slide: Slide,
    extractor: Extractor,
    worker: DeviceWorker,
    reservoir: Reservoir,
    options: SegmentOptions,
    *,
    max_tiles: int = 64,
    should_stop: Callable[[], bool] = lambda: False,
    progress: Progress | None = None,
    plan: SlidePlan | None = None,
    input_index: int = 0,
) -> int:
    """Add window-averaged feature vectors of up to ``max_tiles`` tissue tiles.

    ``plan``: the slide's plan at the extractor's resolution, if made already.
    ``input_index``: the slide's place among the fit's inputs, tagged on each
    vector when the reservoir keeps tags.

    Returns:
        the number of vectors offered to the reservoir.
    """
    spec = extractor.spec
    plan = plan or plan_slide(slide, spec, None, options, should_stop=should_stop)
    tiles = _spread(list(plan.grid.tiles(plan.tissue)), max_tiles)
    window_cells = max(1, spec.concept_window // spec.stride)
    recipe = FeatureRecipe(
        extractor=extractor,
        margin_cells=plan.grid.margin // spec.stride,
        window_cells=window_cells,
        batch_pixels=spec.batch_pixels,
    )
    added = 0
    stream = stream_tiles(
        tiles,
        pixels_with(slide, plan.grid, recipe),
        worker,
        should_stop=should_stop,
    )
    for done, (tile, windows) in enumerate(stream, start=1):
        window_px = window_cells * spec.stride
        keep = _useful_windows(plan, tile, windows.shape[:2], window_px)
        vectors = windows[keep]
        tags = None
        if reservoir.tag_columns:
            boxes = _window_boxes(plan, tile, windows.shape[:2], window_px)[keep]
            tags = np.column_stack([np.full(len(boxes), input_index), boxes])
        reservoir.add(vectors, tags)
        added += len(vectors)
        if progress:
            progress("fit", done, len(tiles))
    return added


#: Errors that belong to one input (unreadable, no µm/px, missing, outside the root).
_INPUT_FAULTS = (InvalidInput, FailedPrecondition, NotFound, PermissionDenied)


@dataclass
class Sampled:
    """What :func:`sample_slides` did: inputs sampled, and every input's identity."""

    inputs: list[SampledInput] = field(default_factory=list)

    @property
    def count(self) -> int:
        """Inputs sampled: those not left out (a left-out input has no fingerprint)."""
        return sum(1 for given in self.inputs if given.fingerprint)


def sample_slides(
    count: int,
    open_input: Callable[[int], Slide],
    extractor: Extractor,
    worker: DeviceWorker,
    reservoir: Reservoir,
    options_for: Callable[[int], SegmentOptions],
    *,
    max_tiles: int,
    report: Callable[[int, int | FsegError], None],
    should_stop: Callable[[], bool] = lambda: False,
    name_of: Callable[[int], str] | None = None,
) -> Sampled:
    """:func:`sample_slide` for each of ``count`` inputs, opened by ``open_input(i)``
    and read with ``options_for(i)`` (a cohort's slides may each have their own µm/px).

    One bad input of a cohort must not cost the others their bank: an input
    that cannot be read is left out. After each input, ``report(i, outcome)``
    gets the vectors it added or the error that left it out.

    ``name_of(i)``: the input's file name as its user knows it (an upload is
    stored under its hash), for the bank's provenance.

    Returns:
        how many inputs were sampled, and each input's name and fingerprint
        (an input left out has an empty fingerprint).

    Raises:
        the first input's error, when none could be read.
    """
    first_refusal: FsegError | None = None
    sampled = Sampled()
    for index in range(count):
        identity = SampledInput(name_of(index) if name_of else "", "")
        try:
            with open_input(index) as slide:
                outcome: int | FsegError = sample_slide(
                    slide, extractor, worker, reservoir, options_for(index),
                    max_tiles=max_tiles, should_stop=should_stop, input_index=index,
                )  # fmt: skip
                path = slide.info.path
                identity = SampledInput(identity.name or path.name, file_fingerprint(path))
        except _INPUT_FAULTS as exc:
            first_refusal = first_refusal or exc
            outcome = exc
        sampled.inputs.append(identity)
        report(index, outcome)
    if first_refusal is not None and sampled.count == 0:
        raise first_refusal
    return sampled


def fit_bank(
    reservoir: Reservoir,
    ks: Sequence[int],
    extractor: Extractor,
    mpp: float | None,
    source: str,
    seed: int = 0,
    inputs: Sequence[SampledInput] = (),
) -> ConceptBank:
    """k-means for every k on the reservoir's sample, on the extractor's device
    (with one concept kept for glass where the extractor measures glass).

    With the fit's ``inputs`` and a reservoir that kept its vectors' windows,
    the bank remembers a sample of those windows (its provenance).
    """
    sample, tags = reservoir.sample, reservoir.tags
    finite = np.isfinite(sample).all(axis=1)
    if not finite.all():
        # An extractor overflowing in half precision: those samples describe nothing.
        log.warning("fit: %d of %d feature samples were not finite and were left out",
                    int((~finite).sum()), len(sample))  # fmt: skip
        sample, tags = sample[finite], tags[finite]
    distinct = _distinct_rows(sample)
    if distinct < max(ks):
        raise InvalidInput(
            f"only {distinct} distinct feature samples were found on the inputs' tissue, too "
            f"few for k={max(ks)}; give more or larger inputs, or a smaller k"
        )
    device = next(extractor.parameters(), torch.empty(0)).device
    x = torch.from_numpy(sample).to(device)
    glass = extractor.spec.glass_channel
    fitted = {k: fit_concepts(x, k, glass_channel=glass, seed=seed) for k in sorted(set(ks))}
    return ConceptBank(
        extractor=extractor.spec.name,
        feature_dim=extractor.spec.feature_dim,
        centres={k: concepts.centres.cpu().numpy() for k, concepts in fitted.items()},
        classes={k: default_classes(k, concepts.glass_last) for k, concepts in fitted.items()},
        mpp=mpp,
        source=source,
        provenance=_provenance(tags, inputs, seed),
    )


def _provenance(tags: np.ndarray, inputs: Sequence[SampledInput], seed: int) -> Provenance | None:
    if not inputs or tags.shape[1] != len(WINDOW_COLUMNS):
        return None
    return Provenance(tuple(inputs), sampled_subset(tags, seed=seed))


def provenance_reservoir(capacity: int, dim: int, seed: int = 0) -> Reservoir:
    """A reservoir that keeps each vector's input and level-0 window."""
    return Reservoir(capacity, dim, seed=seed, tag_columns=len(WINDOW_COLUMNS))


def _distinct_rows(sample: np.ndarray) -> int:
    """How many different vectors ``sample`` holds (k-means on fewer than k gives
    duplicate concepts). Rows are told apart by a random projection: equal rows
    project equally, different ones all but surely not."""
    direction = np.random.default_rng(0).standard_normal(sample.shape[1]).astype(np.float32)
    return len(np.unique(sample @ direction))


def _spread(tiles: list[Tile], limit: int) -> list[Tile]:
    """At most ``limit`` tiles spread evenly over the list (deterministic)."""
    if len(tiles) <= limit:
        return tiles
    picks = np.linspace(0, len(tiles) - 1, limit).round().astype(int)
    return [tiles[i] for i in np.unique(picks)]


def _window_boxes(
    plan: SlidePlan, tile: Tile, shape: tuple[int, int], window_px: int
) -> np.ndarray:
    """(rows, cols, 4) level-0 boxes (x, y, width, height) of a tile's windows,
    in the slide's own level 0; a window at the slide's edge keeps its full size."""
    rows, cols = shape
    ds = plan.resolution.target_downsample
    ys = (tile.core_y + np.arange(rows) * window_px) * ds
    xs = (tile.core_x + np.arange(cols) * window_px) * ds
    boxes = np.empty((rows, cols, 4), np.int64)
    boxes[..., 0] = np.round(xs)[None, :]
    boxes[..., 1] = np.round(ys)[:, None]
    boxes[..., 2:] = max(1, round(window_px * ds))
    return boxes


def _useful_windows(
    plan: SlidePlan, tile: Tile, shape: tuple[int, int], window_px: int
) -> np.ndarray:
    """Windows that start inside the slide and lie mostly on tissue, as a (r, c) mask."""
    rows, cols = shape
    ys = tile.core_y + np.arange(rows) * window_px
    xs = tile.core_x + np.arange(cols) * window_px
    inside = (ys[:, None] < plan.grid.height) & (xs[None, :] < plan.grid.width)
    if not plan.tissue_detected:
        return inside
    ds = plan.resolution.target_downsample
    mask = plan.tissue
    covered = np.zeros(shape, bool)
    for r, y in enumerate(ys):
        for c, x in enumerate(xs):
            covered[r, c] = _tissue_fraction(mask, x * ds, y * ds, window_px * ds) >= (
                MIN_TISSUE_IN_WINDOW
            )
    return inside & covered


def _tissue_fraction(mask: object, x0: float, y0: float, size: float) -> float:
    ds = mask.downsample
    r0, c0 = int(y0 // ds), int(x0 // ds)
    r1, c1 = math.ceil((y0 + size) / ds), math.ceil((x0 + size) / ds)
    block = mask.mask[r0:r1, c0:c1]
    # Divided by the whole window: the part beyond the slide's edge is padding, not tissue.
    area = (r1 - r0) * (c1 - c0)
    return float(block.sum()) / area if area > 0 else 0.0
