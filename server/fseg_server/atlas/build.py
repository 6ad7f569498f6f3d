"""A concept atlas from a bank, one k and some inputs: plan, one pass, choose, draw.

The cost is one plan per input (a thumbnail), one read and extraction of the
sampled tiles, and one small read per window shown; no input is segmented.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..concepts.bank import ConceptBank
from ..errors import InvalidInput
from ..extract import Extractor
from ..pipeline.device_worker import DeviceWorker
from ..pipeline.progress import Progress
from ..pipeline.timings import Timings
from .content import AtlasContent, ConceptEntry, ShownWindow
from .crops import window_picture
from .mosaic import atlas_png
from .names import names_template
from .page import atlas_html
from .sampling import AtlasInput, InputPlan, SampledTissue, plan_inputs, sample_inputs
from .windows import Candidates, choose_windows

#: Windows shown per concept: the issue's range, and the default.
MIN_WINDOWS, MAX_WINDOWS, DEFAULT_WINDOWS = 12, 24, 16
DEFAULT_TILES_PER_INPUT = 16


@dataclass(frozen=True)
class AtlasSettings:
    """What the caller chose: k, windows per concept, tiles per input without
    provenance, the seed, and how the bank is called on the page."""

    k: int
    windows: int = DEFAULT_WINDOWS
    tiles_per_input: int = DEFAULT_TILES_PER_INPUT
    seed: int = 0
    bank_label: str = "a bank sent with the request"

    def check(self) -> None:
        if not MIN_WINDOWS <= self.windows <= MAX_WINDOWS:
            raise InvalidInput(
                f"an atlas shows {MIN_WINDOWS} to {MAX_WINDOWS} windows per concept, "
                f"not {self.windows}"
            )
        if not 1 <= self.tiles_per_input <= 1024:
            raise InvalidInput(f"tiles per input must be 1 to 1024, not {self.tiles_per_input}")


@dataclass
class AtlasResult:
    """The three files by name, and a summary (shares, inputs, timings)."""

    files: dict[str, bytes]
    summary: dict
    timings: dict[str, float] = field(default_factory=dict)


def file_names(k: int) -> tuple[str, str, str]:
    """The page, the mosaic and the names template of an atlas for ``k``."""
    return f"atlas-k{k}.html", f"atlas-k{k}.png", f"names-k{k}.json"


def make_atlas(
    inputs: list[AtlasInput],
    extractor: Extractor,
    bank: ConceptBank,
    settings: AtlasSettings,
    worker: DeviceWorker,
    progress: Progress,
    should_stop: Callable[[], bool] = lambda: False,
) -> AtlasResult:
    """The atlas of ``bank``'s concepts for ``settings.k`` on ``inputs``."""
    settings.check()
    bank.check_extractor(extractor.spec.name, extractor.spec.feature_dim)
    bank.concepts(settings.k)  # refuses a k the bank lacks, naming those it has
    if not inputs:
        raise InvalidInput("an atlas needs at least one slide or image")
    timings = Timings()
    started = time.perf_counter()
    with timings.time("plan"):
        plans = plan_inputs(
            inputs, extractor, bank, settings.tiles_per_input, settings.seed, progress
        )
    with timings.time("sample"):
        sampled = sample_inputs(
            plans, extractor, bank, settings.k, settings.windows, worker, progress, should_stop
        )
    with timings.time("crops"):
        entries = _entries(plans, sampled, bank, settings, progress)
    content = AtlasContent(
        bank=settings.bank_label,
        extractor=extractor.spec.name,
        k=settings.k,
        frame=inputs[0].options.frame.value,
        inputs=[p.source.name for p in plans],
        concepts=entries,
        window_um=_window_um(plans, extractor),
        provenance=sum(sampled.from_provenance),
    )
    page, mosaic, names = file_names(settings.k)
    with timings.time("render"):
        files = {
            page: atlas_html(content, names),
            mosaic: atlas_png(content),
            names: names_template(bank.classes[settings.k]),
        }
    clock = {**timings.stages, "total": time.perf_counter() - started}
    return AtlasResult(files, _summary(content, plans, sampled, clock), clock)


def _entries(
    plans: list[InputPlan],
    sampled: SampledTissue,
    bank: ConceptBank,
    settings: AtlasSettings,
    progress: Progress,
) -> list[ConceptEntry]:
    """One entry per concept; a concept that labels no tissue gets no windows."""
    classes = bank.classes[settings.k]
    total = sampled.won.sum()
    shares = sampled.won / total if total > 0 else np.zeros_like(sampled.won)
    pool = sampled.pool.candidates()
    chosen = {
        c: choose_windows(pool, c, settings.windows, settings.seed) if shares[c] > 0 else []
        for c in range(settings.k)
    }
    pictures = _read_windows(plans, pool, chosen, bank, settings.k, progress)
    return [
        ConceptEntry(
            index=c,
            name=classes[c].name,
            color=tuple(classes[c].color),
            share=float(shares[c]),
            windows=[pictures[(c, r)] for r in chosen[c]],
        )
        for c in range(settings.k)
    ]


def _read_windows(
    plans: list[InputPlan],
    pool: Candidates,
    chosen: dict[int, list[int]],
    bank: ConceptBank,
    k: int,
    progress: Progress,
) -> dict[tuple[int, int], ShownWindow]:
    """The pictures of the chosen windows by (concept, row), each input opened once."""
    jobs = sorted((int(pool.inputs[r]), c, r) for c, rows in chosen.items() for r in rows)
    pictures: dict[tuple[int, int], ShownWindow] = {}
    for input_index, group in itertools.groupby(jobs, key=lambda job: job[0]):
        item = plans[input_index]
        dx, dy = item.plan.frame_offset  # level-0 px from the slide's frame to QuPath's
        with item.source.open() as slide:
            for _, c, r in group:
                x, y, w, h = (int(v) for v in pool.boxes[r])
                pictures[(c, r)] = ShownWindow(
                    slide=item.source.name,
                    x=round(x - dx), y=round(y - dy), width=w, height=h,
                    share=float(pool.shares[r, c]),
                    picture=window_picture(slide, (x, y, w, h), bank.classes[k][c].color),
                )  # fmt: skip
                progress("crops", len(pictures), len(jobs))
    return pictures


def _window_um(plans: list[InputPlan], extractor: Extractor) -> float | None:
    mpp = plans[0].plan.resolution.mpp if plans else None
    return None if mpp is None else round(extractor.spec.concept_window * mpp, 1)


def _summary(
    content: AtlasContent, plans: list[InputPlan], sampled: SampledTissue, clock: dict
) -> dict:
    return {
        "k": content.k,
        "extractor": content.extractor,
        "frame": content.frame,
        "inputs": [
            {"name": p.source.name, "tiles_read": len(p.tiles), "provenance": used}
            for p, used in zip(plans, sampled.from_provenance, strict=True)
        ],
        "tiles_read": sampled.tiles_read,
        "concepts": [
            {
                "index": e.index,
                "name": e.name,
                "color": e.hex_color,
                "share_of_tissue": round(e.share, 6),
                "absent": e.absent,
                "windows": [_window_json(w) for w in e.windows],
            }
            for e in content.concepts
        ],
        "timings_s": {name: round(seconds, 3) for name, seconds in clock.items()},
    }


def _window_json(window: ShownWindow) -> dict:
    return {
        "slide": window.slide,
        "x": window.x,
        "y": window.y,
        "width": window.width,
        "height": window.height,
        "share": round(window.share, 4),
    }
