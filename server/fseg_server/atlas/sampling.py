"""The atlas's one pass over the inputs: plan each, read its sampled tiles once, score windows.

Which tiles are read, at most ``tiles_per_input`` per input: on an input the
bank's provenance knows (by content fingerprint), the tiles holding the most
windows k-means saw there, and those windows are the candidates; on any other
input, tissue tiles drawn with a seeded generator, and the candidates are the
tiles' windows of the bank's ``concept_window``. Every tile goes through the
extractor once; nothing else of a slide is read (a cohort is not segmented
again). Tissue shares are counted on the cells read, and each input's
counts are scaled up to its whole tissue area.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..concepts.bank import ConceptBank
from ..concepts.provenance import file_fingerprint
from ..errors import FailedPrecondition
from ..extract import Extractor, ExtractorSpec
from ..pipeline.device_worker import DeviceWorker
from ..pipeline.options import SegmentOptions, batch_pixels
from ..pipeline.plan import SlidePlan, plan_slide
from ..pipeline.progress import Progress
from ..pipeline.stream import pixels_with, stream_tiles
from ..slide.reader import Slide, open_slide
from ..slide.tiles import Tile
from .recipe import ShareRecipe
from .windows import CandidatePool, window_shares


@dataclass(frozen=True)
class AtlasInput:
    """One slide or image of the atlas: its file, its name as the user knows it, options."""

    path: Path
    name: str
    options: SegmentOptions

    def open(self) -> Slide:
        """The slide, opened under the job's limit on plain images' pixels."""
        return open_slide(self.path, self.options.limits.max_image_pixels)


@dataclass
class InputPlan:
    """What is read of one input.

    Attributes:
        plan: the slide's plan at the bank's resolution.
        tiles: the grid tiles to read.
        windows: (n, 4) level-0 provenance boxes on this input, or None: the
            tiles' own windows are the candidates.
    """

    source: AtlasInput
    plan: SlidePlan
    tiles: list[Tile]
    windows: np.ndarray | None


@dataclass
class SampledTissue:
    """The pass's result: candidate windows and the cells won by each concept.

    ``won`` is per concept the tissue cells it labels, each input's count
    scaled to the input's whole tissue area (cells).
    """

    pool: CandidatePool
    won: np.ndarray
    tiles_read: int = 0
    from_provenance: list[bool] = field(default_factory=list)


def plan_inputs(
    inputs: list[AtlasInput],
    extractor: Extractor,
    bank: ConceptBank,
    tiles_per_input: int,
    seed: int,
    progress: Progress,
) -> list[InputPlan]:
    """Plan every input (a thumbnail each, no tile read) and choose its tiles.

    Raises:
        FailedPrecondition: an input holds no tissue; nothing has been extracted yet.
    """
    plans = []
    for index, source in enumerate(inputs):
        with source.open() as slide:
            plan = plan_slide(slide, extractor.spec, bank.mpp, source.options)
        if not plan.tiles or not plan.tissue.mask.any():
            raise FailedPrecondition(
                f"{source.name} holds no tissue that fseg can find; leave it out of the atlas"
            )
        known = None
        if bank.provenance is not None:
            known = bank.provenance.windows_of(file_fingerprint(source.path))
        rng = np.random.default_rng([seed, index])
        if known is not None and len(known):
            tiles = _tiles_holding(plan, known, tiles_per_input, rng)
            plans.append(InputPlan(source, plan, tiles, known))
        else:
            tiles = _drawn(list(plan.grid.tiles(plan.tissue)), tiles_per_input, rng)
            plans.append(InputPlan(source, plan, tiles, None))
        progress("plan", index + 1, len(inputs))
    return plans


def sample_inputs(
    plans: list[InputPlan],
    extractor: Extractor,
    bank: ConceptBank,
    k: int,
    count: int,
    worker: DeviceWorker,
    progress: Progress,
    should_stop: Callable[[], bool],
) -> SampledTissue:
    """Read and extract every planned tile once; score its candidate windows."""
    spec = extractor.spec
    sampled = SampledTissue(CandidatePool(k, count), np.zeros(k))
    total = sum(len(p.tiles) for p in plans)
    concepts = torch.from_numpy(bank.concepts(k)).to(worker.device)
    for index, item in enumerate(plans):
        plan = item.plan
        recipe = ShareRecipe(
            extractor=extractor,
            concepts=concepts,
            bank_id=bank.digest or "atlas",
            margin_cells=plan.grid.margin // spec.stride,
            batch_pixels=batch_pixels(spec, item.source.options),
        )
        won, read_cells = np.zeros(k), 0
        with item.source.open() as slide:
            stream = stream_tiles(
                item.tiles, pixels_with(slide, plan.grid, recipe), worker, should_stop=should_stop
            )
            for tile, shares in stream:
                tissue = _tissue_cells(plan, tile, shares.shape[1:], spec.stride)
                labels = shares.argmax(0)[tissue & (shares.sum(0) > 0)]
                won += np.bincount(labels, minlength=k)
                read_cells += int(tissue.sum())
                boxes, cells = _candidates(plan, tile, shares.shape[1:], spec, item.windows)
                means, useful = window_shares(shares, tissue, cells)
                useful &= _inside(boxes, slide.info.dimensions)
                sampled.pool.add(index, boxes[useful], means[useful])
                sampled.tiles_read += 1
                progress("sample", sampled.tiles_read, total)
        # Cells of the whole tissue, as the plan measured it, over the cells read.
        tissue_cells = plan.tissue_px / spec.stride**2
        sampled.won += won * (tissue_cells / read_cells if read_cells else 0.0)
        sampled.from_provenance.append(item.windows is not None)
    return sampled


def _drawn(tiles: list[Tile], limit: int, rng: np.random.Generator) -> list[Tile]:
    """At most ``limit`` of ``tiles``, drawn without replacement, in grid order."""
    if len(tiles) <= limit:
        return tiles
    return [tiles[i] for i in np.sort(rng.choice(len(tiles), limit, replace=False))]


def _tiles_holding(
    plan: SlidePlan, boxes: np.ndarray, limit: int, rng: np.random.Generator
) -> list[Tile]:
    """At most ``limit`` grid tiles whose cores hold the centres of the level-0 ``boxes``:
    those holding the most (ties in a seeded order), in grid order."""
    grid = plan.grid
    size = grid.tile_size * plan.resolution.target_downsample  # level-0 px
    centres = boxes[:, :2] + boxes[:, 2:] / 2
    rows, cols = (centres[:, 1] // size).astype(np.int64), (centres[:, 0] // size).astype(np.int64)
    inside = (rows >= 0) & (rows < grid.rows) & (cols >= 0) & (cols < grid.cols)
    cells, held = np.unique(rows[inside] * grid.cols + cols[inside], return_counts=True)
    order = rng.permutation(len(cells))
    best = order[np.argsort(-held[order], kind="stable")][:limit]
    return [grid.tile(int(c) // grid.cols, int(c) % grid.cols) for c in np.sort(cells[best])]


def _tissue_cells(plan: SlidePlan, tile: Tile, shape: tuple[int, int], stride: int) -> np.ndarray:
    """(rows, cols) bool: the core's cells inside the slide whose centre is on tissue."""
    rows, cols = shape
    ds = plan.resolution.target_downsample
    ys = (tile.core_y + (np.arange(rows) + 0.5) * stride) * ds  # level-0 px
    xs = (tile.core_x + (np.arange(cols) + 0.5) * stride) * ds
    width, height = plan.grid.width * ds, plan.grid.height * ds
    mask = plan.tissue
    r = np.clip((ys / mask.downsample).astype(np.int64), 0, mask.mask.shape[0] - 1)
    c = np.clip((xs / mask.downsample).astype(np.int64), 0, mask.mask.shape[1] - 1)
    inside = (ys < height)[:, None] & (xs < width)[None, :]
    return inside & mask.mask[r[:, None], c[None, :]]


def _inside(boxes: np.ndarray, dimensions: tuple[int, int]) -> np.ndarray:
    """Which level-0 boxes lie wholly on the slide: a window hanging off its edge
    was seen through padding, and would be shown half empty."""
    width, height = dimensions
    return (
        (boxes[:, 0] >= 0)
        & (boxes[:, 1] >= 0)
        & (boxes[:, 0] + boxes[:, 2] <= width)
        & (boxes[:, 1] + boxes[:, 3] <= height)
    )


def _candidates(
    plan: SlidePlan,
    tile: Tile,
    shape: tuple[int, int],
    spec: ExtractorSpec,
    known: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The tile's candidate windows: (n, 4) level-0 boxes and (n, 4) cell ranges in its core.

    With ``known`` provenance boxes, those whose centre lies in this core;
    otherwise the core's windows of ``concept_window`` pixels.
    """
    rows, cols = shape
    ds, stride = plan.resolution.target_downsample, spec.stride
    if known is None:
        step = max(1, spec.concept_window // stride)
        r0, c0 = np.meshgrid(np.arange(0, rows, step), np.arange(0, cols, step), indexing="ij")
        r0, c0 = r0.ravel(), c0.ravel()
        cells = np.column_stack([r0, c0, np.minimum(r0 + step, rows), np.minimum(c0 + step, cols)])
        x = (tile.core_x + c0 * stride) * ds
        y = (tile.core_y + r0 * stride) * ds
        edge = np.full(len(x), max(1, round(step * stride * ds)))
        return np.column_stack([np.round(x), np.round(y), edge, edge]).astype(np.int64), cells
    # Provenance boxes in target px, relative to this core, as cell ranges.
    x = known[:, 0] / ds - tile.core_x
    y = known[:, 1] / ds - tile.core_y
    w, h = known[:, 2] / ds, known[:, 3] / ds
    cx, cy = x + w / 2, y + h / 2
    mine = (cx >= 0) & (cx < tile.core_w) & (cy >= 0) & (cy < tile.core_h)
    x, y, w, h = x[mine], y[mine], w[mine], h[mine]
    cells = np.column_stack(
        [
            np.clip(np.floor(y / stride), 0, rows),
            np.clip(np.floor(x / stride), 0, cols),
            np.clip(np.ceil((y + h) / stride), 0, rows),
            np.clip(np.ceil((x + w) / stride), 0, cols),
        ]
    ).astype(np.int64)
    return known[mine], cells
