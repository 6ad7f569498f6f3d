"""What a segmentation job is asked to do, in one place."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from ..errors import InvalidInput
from ..extract import ExtractorSpec
from ..factorize import Mode
from ..limits import DEFAULT_LIMITS, CostLimits
from .canvas import NODATA

#: Labels are one byte per cell and NODATA (255) marks cells without one.
MAX_K = NODATA


class Frame(str, Enum):
    """The coordinate frame of the output polygons (level-0 pixel units either way).

    ``bounds``: origin at ``openslide.bounds-x/-y``, as QuPath's OpenSlide image
    server shows slides (it crops them to the scanned area). ``level0``: raw
    OpenSlide level-0 coordinates, as QuPath's Bio-Formats server shows them.
    The two differ only for slides that record bounds.
    """

    BOUNDS = "bounds"
    LEVEL0 = "level0"


class TissueDetection(str, Enum):
    """``auto``: detect tissue on slides, label every pixel of plain images."""

    AUTO = "auto"
    ON = "on"
    OFF = "off"


@dataclass(frozen=True)
class SegmentOptions:
    """Options of one segmentation job.

    Attributes:
        k: which of the bank's k to use.
        mode: project, classify or cluster.
        components: NMF rank in classify mode.
        slide_mpp: µm per level-0 pixel of the slide, overriding (or supplying)
            its metadata (``--mpp``, or a manifest's mpp column).
        slide_mpp_from: where ``slide_mpp`` came from, in the user's words.
        target_mpp: working resolution in µm per pixel (``--target-mpp``);
            default: the bank's fitted resolution, else the extractor's native one.
        frame: coordinate frame of the output.
        roi: polygons (shapely, level-0 pixel units, in ``frame``) to restrict
            the work to; None for the whole slide.
        tissue: tissue detection.
        simplify: polygon simplification tolerance in label pixels (0: none).
        min_area_um2: regions smaller than this (µm²; px² for uncalibrated
            images) are merged into their surroundings.
        split_regions: one GeoJSON feature per connected region instead of per class.
        label_upsample: label pixels per feature cell along each axis; None
            means pixel resolution for plain images and one label per cell for slides.
        batch_size: tiles of the extractor's tile size per forward pass (the
            batch's pixel budget); None for the extractor's default.
        fit_samples: window samples per slide when the bank is fitted on the job's
            own tissue (no bank given).
        tile_size: the longest side of a tissue region in target pixels;
            None for the extractor's default. Rounded to a multiple of its stride.
        margin: context around each region in target pixels; None for the
            extractor's default. Rounded to a multiple of its stride.
        glass_margin: context on the sides of a region that face only glass,
            target pixels; None for one block (see ``slide/regions.py``).
            The full margin there makes labels at the tissue's edge exactly
            those of a whole-slide pass, at the cost of reading glass.
        limits: what the job may cost (the server's ``--max-...`` options).
        block_sparse: whether a network that can (``extract/sparse.py``) computes
            the tissue's blocks alone; False computes whole rectangles, as
            every extractor does that cannot, and labels finer than a cell do.
    """

    k: int = 8
    mode: Mode = Mode.PROJECT
    components: int = 8
    slide_mpp: float | None = None
    slide_mpp_from: str = "--mpp"
    target_mpp: float | None = None
    frame: Frame = Frame.BOUNDS
    roi: tuple | None = None
    tissue: TissueDetection = TissueDetection.AUTO
    simplify: float = 1.0
    min_area_um2: float = 200.0
    split_regions: bool = False
    label_upsample: int | None = None
    batch_size: int | None = None
    fit_samples: int = 4000
    tile_size: int | None = None
    margin: int | None = None
    glass_margin: int | None = None
    limits: CostLimits = DEFAULT_LIMITS
    block_sparse: bool = True

    def __post_init__(self) -> None:
        for name, kind in (("mode", Mode), ("frame", Frame), ("tissue", TissueDetection)):
            value = getattr(self, name)
            try:
                object.__setattr__(self, name, kind(value))
            except ValueError:
                choices = ", ".join(member.value for member in kind)
                raise InvalidInput(f"{name} must be one of {choices}, not {value!r}") from None
        checks = [
            (self.k >= 1, f"k must be at least 1, not {self.k}"),
            (
                self.k <= MAX_K,
                f"k must be at most {MAX_K} (labels take one byte per cell), not {self.k}",
            ),
            (
                # The rank matters in classify mode alone; other modes ignore it.
                self.components >= 1
                and (
                    self.mode is not Mode.CLASSIFY or self.components <= self.limits.max_components
                ),
                f"components (the NMF rank per image in classify mode) must be between 1 and "
                f"{self.limits.max_components} (this server's limit), not {self.components}",
            ),
            (
                0 <= self.simplify < math.inf,
                f"simplify must be a finite number >= 0 label pixels, not {self.simplify}",
            ),
            (
                0 <= self.min_area_um2 < math.inf,
                f"min-area must be a finite number >= 0 µm², not {self.min_area_um2}",
            ),
            (self.tile_size is None or self.tile_size >= 1, "tile size must be positive"),
            (self.margin is None or self.margin >= 0, "margin must not be negative"),
            (
                self.glass_margin is None or self.glass_margin >= 0,
                "glass margin must not be negative",
            ),
            (
                self.label_upsample is None or self.label_upsample >= 1,
                f"label upsample must be at least 1, not {self.label_upsample}",
            ),
            (
                self.slide_mpp is None or self.slide_mpp > 0,
                f"--mpp must be a positive number of µm per pixel, not {self.slide_mpp}",
            ),
            (
                self.target_mpp is None or self.target_mpp > 0,
                f"--target-mpp must be a positive number of µm per pixel, not {self.target_mpp}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise InvalidInput(message)


def batch_pixels(spec: ExtractorSpec, options: SegmentOptions) -> int:
    """Input pixels per forward pass: ``batch_size`` of the extractor's tiles."""
    if options.batch_size is None:
        return spec.batch_pixels
    return options.batch_size * (spec.tile_size + 2 * spec.margin) ** 2
