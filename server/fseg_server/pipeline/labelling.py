"""The labelling stage: every planned tile through the device, into the label canvas.

Tiles whose features are in the feature cache skip the extractor (and
reading, unless labels finer than a cell need the tile's colours); the others
are read, and their features stored when a cache is on.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..concepts.bank import ConceptBank
from ..extract import Extractor
from ..extract.sparse import pack_blocks
from ..slide.reader import Slide
from ..slide.tiles import Tile
from .canvas import LabelCanvas
from .device_worker import DeviceWorker
from .feature_cache import FeatureCache
from .options import SegmentOptions, batch_pixels
from .plan import SlidePlan
from .progress import Progress
from .recipes import LabelRecipe, StageClock, block_layout
from .stream import ReadClock, read_tile, stream_tiles

#: Tiles a job keeps being read, queued for the device or waiting to be pasted:
#: enough for the readers to stay ahead of the device, bounded so that memory
#: does not grow with the slide.
IN_FLIGHT = 8


@dataclass
class LabellingClocks:
    """Seconds in reader threads (summed), the extractor and the factorizer."""

    read: float
    extract: float
    factorize: float
    cached_tiles: int


def label_tiles(
    slide: Slide,
    extractor: Extractor,
    bank: ConceptBank,
    options: SegmentOptions,
    plan: SlidePlan,
    worker: DeviceWorker,
    *,
    cache: FeatureCache | None = None,
    progress: Progress,
    should_stop: Callable[[], bool],
) -> tuple[LabelCanvas, LabellingClocks]:
    """Labels of every planned tile, pasted into a canvas restricted to the tissue."""
    spec = extractor.spec
    canvas = LabelCanvas.for_grid(plan.grid, spec.stride, plan.upsample)
    clock = StageClock()
    from_pixels = LabelRecipe(
        extractor=extractor,
        concepts=torch.from_numpy(bank.concepts(options.k)).to(worker.device),
        bank_id=bank.digest or f"memory-{uuid.uuid4()}",
        mode=options.mode,
        components=options.components,
        margin_cells=(plan.grid.margin // spec.stride,) * 4,
        upsample=plan.upsample,
        batch_pixels=batch_pixels(spec, options),
        keep_features=cache is not None,
        clock=clock,
    )
    from_features = replace(from_pixels, from_features=True, keep_features=False)
    key = FeatureCache.slide_key(slide.info.path, extractor, plan.grid) if cache else ""
    hits = [0]
    # One recipe per margin layout: tiles batch together only when their cores
    # sit at the same place in their inputs.
    layouts = {
        margins: (
            replace(from_pixels, margin_cells=margins),
            replace(from_features, margin_cells=margins),
        )
        for margins in {_margin_cells(tile, spec.stride) for tile in plan.tiles}
    }

    def prepare(tile: Tile) -> tuple[LabelRecipe, np.ndarray]:
        pixels_recipe, features_recipe = layouts[_margin_cells(tile, spec.stride)]
        cached = cache.get(key, tile) if cache else None
        if tile.blocks is not None:  # a batch of its own: its recipe carries its blocks
            layout = block_layout(tile)
            if cached is not None:
                hits[0] += 1
                return replace(features_recipe, layout=layout), cached
            pixels = pack_blocks(read_tile(slide, plan.grid, tile), layout)
            return replace(pixels_recipe, layout=layout), pixels
        if cached is not None:
            hits[0] += 1
            # Guided labels need the tile's colours, which the cache does not keep.
            pixels = read_tile(slide, plan.grid, tile) if features_recipe.guided else None
            return features_recipe, features_recipe.cached_item(cached, pixels)
        return pixels_recipe, read_tile(slide, plan.grid, tile)

    read_clock = ReadClock()
    stream = stream_tiles(
        plan.tiles,
        prepare,
        worker,
        in_flight=max(IN_FLIGHT, 3 * worker.readers.threads),
        ordered=False,  # pasting is the same in any order
        should_stop=should_stop,
        clock=read_clock,
    )
    for done, (tile, (block, features)) in enumerate(stream, start=1):
        canvas.paste(tile, block)
        if cache is not None and features is not None:
            cache.put(key, tile, features)
        progress("segment", done, len(plan.tiles))
    canvas.keep_only(plan.tissue)
    if plan.roi is not None:
        canvas.keep_touched_by(plan.roi)
    return canvas, LabellingClocks(read_clock.seconds, clock.extract, clock.factorize, hits[0])


def _margin_cells(tile: Tile, stride: int) -> tuple[int, ...]:
    """Context around the features a recipe is given, cells per side: a block-sparse
    region's features are its core's alone."""
    if tile.blocks is not None:
        return (0, 0, 0, 0)
    return tuple(m // stride for m in tile.margins)
