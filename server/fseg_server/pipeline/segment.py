"""Segmenting one slide, top to bottom.

slide -> plan (resolution, tissue, tiles) -> tiles streamed through the
device (features, factorization, labels) -> stitched label grid ->
polygons -> GeoJSON, label PNG, overlay and summary. Nothing flows back.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..concepts.bank import ConceptBank
from ..concepts.kmeans import Reservoir
from ..errors import Cancelled
from ..extract import Extractor
from ..memory import trim
from ..slide.reader import Slide
from ..vectorize import feature_collection_json, vectorize_labels
from .canvas import NODATA, LabelCanvas
from .device_worker import DeviceWorker
from .feature_cache import FeatureCache
from .fit import fit_bank, sample_slide
from .labelling import label_tiles
from .options import SegmentOptions
from .plan import SlidePlan, plan_slide
from .progress import Progress
from .render import label_png, overlay_png
from .summary import build_summary, job_metadata, polygon_areas, shares_of, warnings_for
from .timings import Timings

RESERVOIR_SIZE = 50_000


@dataclass
class SegmentResult:
    """The outputs of one slide, ready to be written or streamed.

    ``files`` maps an output suffix (``geojson``, ``labels.png``,
    ``overlay.png``) to its bytes; ``summary`` is the JSON summary as a dict;
    ``labels`` the label grid and ``plan`` the regions it was computed in.
    """

    stem: str
    files: dict[str, bytes]
    summary: dict
    labels: object = field(repr=False, default=None)
    plan: SlidePlan | None = field(repr=False, default=None)


def segment_slide(
    slide: Slide,
    extractor: Extractor,
    bank: ConceptBank | None,
    options: SegmentOptions,
    worker: DeviceWorker,
    *,
    bank_name: str = "",
    name: str = "",
    cache: FeatureCache | None = None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> SegmentResult:
    """Segment ``slide`` with ``extractor`` against ``bank`` (fitted on the slide if None).

    ``name`` is the slide's file name as its user knows it (an uploaded
    slide is stored under its hash); it names the outputs and goes into their
    metadata. With a feature ``cache``, tiles seen before (same file,
    extractor, resolution and tiling) skip reading and extraction.
    """
    name = name or slide.info.path.name
    progress = progress or (lambda stage, done, total: None)
    timings = Timings()
    started = time.perf_counter()
    spec = extractor.spec
    thumbnail = (
        functools.partial(cache.thumbnail, slide, should_stop=should_stop) if cache else None
    )
    plan = None
    if bank is None:
        # The fitted bank's resolution is the one this plan uses, so fitting
        # and segmenting share one plan (one thumbnail, one tissue mask).
        with timings.time("plan"):
            plan = plan_slide(
                slide, spec, None, options, thumbnail, should_stop, extractor.block_sparse
            )
        with timings.time("fit"):
            bank = fit_on_slide(slide, extractor, options, worker, progress, should_stop, plan)
            bank_name = "fitted on this slide"
    bank.check_extractor(spec.name, spec.feature_dim)
    bank.concepts(options.k)  # refuse a missing k before any work
    if plan is None:
        with timings.time("plan"):
            plan = plan_slide(
                slide, spec, bank.mpp, options, thumbnail, should_stop, extractor.block_sparse
            )
    progress("plan", 1, 1)
    # One helper thread draws the pictures: the label PNG is encoded while the
    # polygons are traced, and the overlay (on the plan's picture of the slide),
    # whose legend gives the polygons' shares, while the GeoJSON is written (PNG
    # encoding and GEOS release the GIL).
    with ThreadPoolExecutor(1, thread_name_prefix="fseg-render") as pool:
        with timings.time("stream"):
            canvas, clocks = label_tiles(
                slide, extractor, bank, options, plan, worker,
                cache=cache, progress=progress, should_stop=should_stop,
            )  # fmt: skip
        trim()  # the streaming stage's freed buffers, before vectorizing needs its own
        classes = bank.classes[options.k]
        metadata = job_metadata(name, extractor, bank, bank_name, options, plan)
        labels_png = pool.submit(_timed, timings, label_png, canvas.labels, classes)
        with timings.time("vectorize"):
            _stop_if_asked(should_stop, "before its labels were vectorized")
            progress("vectorize", 0, 1)
            polygons = _polygons(canvas, plan, options)
            _stop_if_asked(should_stop, "while its labels were vectorized")
            areas_px2 = polygon_areas(polygons, len(classes))
            overlay = pool.submit(
                _timed, timings, overlay_png, plan.picture, plan.picture_downsample, canvas.labels,
                canvas.downsample, classes, shares=shares_of(areas_px2),
            )  # fmt: skip
            geojson = feature_collection_json(
                polygons,
                [(c.name, c.color) for c in classes],
                mpp=plan.level0_mpp_xy,
                split_regions=options.split_regions,
                metadata=metadata,
            )
            progress("vectorize", 1, 1)
        files = {
            "geojson": geojson,
            "labels.png": labels_png.result(),
            "overlay.png": overlay.result(),
        }
    timings.stages["read_threads"] = clocks.read
    timings.stages["extract"] = clocks.extract
    timings.stages["factorize"] = clocks.factorize
    timings.stages["total"] = time.perf_counter() - started
    summary = build_summary(
        slide, canvas, plan, classes, polygons, areas_px2, metadata, timings.stages
    )
    summary["tiles"]["from_feature_cache"] = clocks.cached_tiles
    tissue_found = summary["tissue"]["fraction_of_slide"] > 0
    summary["warnings"] = warnings_for(slide, options, tissue_found)
    return SegmentResult(name.rsplit(".", 1)[0], files, summary, canvas.labels, plan)


def _stop_if_asked(should_stop: Callable[[], bool], where: str) -> None:
    """Vectorizing a large slide takes seconds: a cancelled job stops between its steps."""
    if should_stop():
        raise Cancelled(f"the job was cancelled {where}")


def _polygons(canvas: LabelCanvas, plan: SlidePlan, options: SegmentOptions) -> dict[int, list]:
    """The label grid's polygons in the output frame, cut at the plan's extent."""
    cell_um2 = canvas.downsample**2 * (plan.level0_pixel_um2 or 1.0)
    return vectorize_labels(
        canvas.labels,
        cell_size=canvas.downsample,
        origin=plan.origin,
        simplify=options.simplify,
        # Regions under --min-area go (12 cells of 16 µm² are under 200 µm²);
        # the factor keeps a region of exactly that area from float noise.
        min_cells=math.ceil(options.min_area_um2 / cell_um2 * (1 - 1e-9)),
        nodata=NODATA,
        extent=plan.extent,
    )


def _timed(timings: Timings, draw: Callable[..., bytes], *args: object, **kwargs: object) -> bytes:
    """One picture, its seconds added to the ``render`` stage."""
    with timings.time("render"):
        return draw(*args, **kwargs)


def fit_on_slide(
    slide: Slide,
    extractor: Extractor,
    options: SegmentOptions,
    worker: DeviceWorker,
    progress: Progress,
    should_stop: Callable[[], bool],
    plan: SlidePlan | None = None,
) -> ConceptBank:
    """The embedded default: a bank fitted on this slide's own tissue.

    ``plan``: the slide's plan at the extractor's (or ``--target-mpp``)
    resolution when the caller has one already; made here otherwise.
    """
    reservoir = Reservoir(min(RESERVOIR_SIZE, options.fit_samples), extractor.spec.feature_dim)
    sample_slide(
        slide, extractor, worker, reservoir, options,
        should_stop=should_stop, progress=progress, plan=plan,
    )  # fmt: skip
    mpp = options.target_mpp or extractor.spec.mpp
    return fit_bank(reservoir, [options.k], extractor, mpp, f"fitted on {slide.info.path.name}")
