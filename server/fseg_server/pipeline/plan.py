"""Planning a job on one slide: resolution, tissue, ROI, tiles and output frame."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import shapely.affinity
from PIL import Image

from ..errors import FailedPrecondition, InvalidInput
from ..extract import ExtractorSpec
from ..limits import CostLimits
from ..slide.reader import Slide
from ..slide.regions import RegionGeometry, block_size, plan_regions, tissue_blocks
from ..slide.sparse_regions import plan_sparse_regions
from ..slide.tiles import Resolution, Tile, TileGrid, choose_resolution, plan_tiles
from ..slide.tissue import TissueMask, detect_tissue, full_mask, restrict_to_polygons
from .options import Frame, SegmentOptions, TissueDetection

#: ``max_size`` -> (RGB thumbnail, level-0 px per thumbnail px), as Slide.thumbnail.
Thumbnail = Callable[[int], tuple[np.ndarray, float]]

TISSUE_MPP = 8.0  # µm per thumbnail pixel for tissue detection
THUMBNAIL_MAX = 8192  # px, long side
THUMBNAIL_MIN = 512  # px, long side, for slides too small or uncalibrated
#: px, long side of the picture kept for the overlay (render draws on it): one
#: thumbnail read serves tissue detection and the overlay, before any tile is
#: read, so that it takes no CPU from the readers while the device works.
PICTURE_MAX = 1536
DARK_BACKGROUND = 0.25  # median thumbnail brightness below which a slide is not brightfield


@dataclass(frozen=True)
class SlidePlan:
    """Everything decided before the first tile is read.

    Attributes:
        grid: the square tile grid at the working resolution (and the level
            read, ``resolution``); fitting samples its tiles.
        tissue: tissue (restricted to the ROI) on a level-0-aligned grid.
        tiles: the tissue regions to segment (see ``slide/regions.py``),
            row-major: disjoint rectangles covering every block with tissue,
            each with the grid's margin of context.
        block: edge of the blocks regions are made of, target pixels.
        frame_offset: level-0 pixels subtracted from coordinates for the output frame.
        upsample: label pixels per feature cell.
        tissue_detected: whether tissue detection ran.
        extent: where output polygons may lie, in the output frame (level-0
            pixels): the image as QuPath shows it (the scanned bounds in the
            bounds frame), cut to the ROI when there is one. Label cells
            straddle its edge; the polygons are cut at it exactly.
        roi: the ROI in level-0 pixels (the slide's own frame), None without one.
        picture: an RGB thumbnail of the slide, at most PICTURE_MAX px on its
            long side, for the overlay.
        picture_downsample: level-0 pixels per ``picture`` pixel.
    """

    grid: TileGrid
    tissue: TissueMask
    tiles: list[Tile]
    block: int
    frame_offset: tuple[float, float]
    upsample: int
    tissue_detected: bool
    extent: shapely.Geometry
    roi: shapely.Geometry | None = None
    picture: np.ndarray | None = None
    picture_downsample: float = 1.0

    @property
    def resolution(self) -> Resolution:
        """The level read and its resampling to the working resolution."""
        return self.grid.resolution

    @property
    def model_px(self) -> int:
        """Target pixels that go through the model: every region's core and margins."""
        return sum(tile.input_pixels for tile in self.tiles)

    @property
    def tissue_px(self) -> float:
        """Tissue in target pixels (the tissue mask, restricted to the ROI)."""
        per_mask_px = self.tissue.downsample / self.resolution.target_downsample
        return float(self.tissue.mask.sum()) * per_mask_px**2

    @property
    def origin(self) -> tuple[float, float]:
        """Level-0 pixel position of the label grid's corner in the output frame."""
        return (0.0 - self.frame_offset[0], 0.0 - self.frame_offset[1])  # 0.0, never -0.0

    @property
    def level0_mpp(self) -> float | None:
        """µm per level-0 pixel along x (``--mpp`` or the slide's), None if unknown."""
        return self.grid.resolution.level0_mpp

    @property
    def level0_mpp_xy(self) -> tuple[float, float] | None:
        """(x, y) µm per level-0 pixel, None if unknown."""
        return self.grid.resolution.level0_mpp_xy

    @property
    def level0_pixel_um2(self) -> float | None:
        """µm² per level-0 pixel (mpp-x times mpp-y, as QuPath measures), None if unknown."""
        xy = self.level0_mpp_xy
        return None if xy is None else xy[0] * xy[1]


def plan_slide(
    slide: Slide,
    spec: ExtractorSpec,
    bank_mpp: float | None,
    options: SegmentOptions,
    thumbnail: Thumbnail | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    block_sparse: bool = False,
) -> SlidePlan:
    """Decide how ``slide`` is read and which tiles go to the extractor.

    ``thumbnail(max_size)`` gives the slide's thumbnail as ``Slide.thumbnail``
    does (a feature cache keeps it for re-runs); by default the slide's own.
    ``block_sparse``: the extractor computes tissue blocks alone
    (``Extractor.block_sparse``), so regions are block-sparse windows
    (``slide/sparse_regions.py``) unless ``options`` ask for whole rectangles or
    labels finer than a cell (those are guided by the rectangle's colours).

    Raises:
        InvalidInput: the slide or its work is beyond ``options.limits``.
        Cancelled: ``should_stop()`` turned true while the thumbnail was read
            or the regions were planned.
    """
    info = slide.info
    # Plain images get a label per pixel; slides one byte per feature cell,
    # so that memory stays bounded for 150,000-pixel scans.
    upsample = options.label_upsample or (spec.stride if info.is_plain_image else 1)
    if spec.stride % upsample:  # also refuses more labels per cell than pixels
        divisors = ", ".join(str(d) for d in range(1, spec.stride + 1) if spec.stride % d == 0)
        raise InvalidInput(
            f"label upsample must divide {spec.name}'s stride of {spec.stride} px "
            f"(one of {divisors}), not {upsample}"
        )
    resolution = choose_resolution(
        info, options.target_mpp or bank_mpp or spec.mpp, options.slide_mpp
    )
    _refuse_impossible_size(slide, resolution.level0_mpp_xy, options.limits)
    width_t = math.ceil(info.dimensions[0] / resolution.target_downsample)
    height_t = math.ceil(info.dimensions[1] / resolution.target_downsample)
    # Small images need no tile larger than themselves.
    largest = _round_up(max(width_t, height_t), spec.stride)
    tile_size = min(_round_up(spec.tile_size, spec.stride), largest)
    region_size = min(_round_up(options.tile_size or spec.region, spec.stride), largest)
    margin = spec.margin if options.margin is None else _round_up(options.margin, spec.stride, 0)
    grid = plan_tiles(info, resolution, tile_size, margin)
    detect = options.tissue is TissueDetection.ON or (
        options.tissue is TissueDetection.AUTO and not info.is_plain_image
    )
    read = thumbnail or functools.partial(slide.thumbnail, should_stop=should_stop)
    tissue, picture, picture_downsample = _tissue(
        slide, resolution.level0_mpp, detect, read, options.limits
    )
    offset = _frame_offset(slide, options.frame)
    extent, roi = _image_extent(slide, options.frame), None
    if options.roi:
        shifted = [shapely.affinity.translate(p, offset[0], offset[1]) for p in options.roi]
        _refuse_roi_off_the_slide(slide, shifted, offset, options.frame)
        # A label cell the ROI touches has its centre within half its diagonal of it.
        cell = resolution.target_downsample * spec.stride / upsample  # level-0 px
        tissue = restrict_to_polygons(tissue, shifted, reach=cell * math.sqrt(0.5))
        union = shapely.union_all(options.roi)  # output frame
        extent = shapely.intersection(extent, union)
        roi = shapely.affinity.translate(union, offset[0], offset[1])
    block = block_size(spec.stride, resolution.mpp, region_size)
    glass = (
        block if options.glass_margin is None else _round_up(options.glass_margin, spec.stride, 0)
    )
    # Whole blocks: a region may pass region_size by less than a block.
    geometry = RegionGeometry(block, -(-region_size // block), margin, glass, spec.stride)
    occupied = tissue_blocks(tissue, grid, block)
    # The blocks alone bound the regions' pixels from below: refuse before cutting.
    _refuse_costly_model_work(slide, int(occupied.sum()) * block * block, options.limits)
    if block_sparse and options.block_sparse and upsample == 1:
        tiles = plan_sparse_regions(occupied, grid, geometry, should_stop)
    else:
        tiles = plan_regions(occupied, grid, geometry, should_stop)
    _refuse_costly_model_work(slide, sum(tile.input_pixels for tile in tiles), options.limits)
    return SlidePlan(
        grid=grid,
        tissue=tissue,
        tiles=tiles,
        block=block,
        frame_offset=offset,
        upsample=upsample,
        tissue_detected=detect,
        extent=extent,
        roi=roi,
        picture=picture,
        picture_downsample=picture_downsample,
    )


def _tissue(
    slide: Slide,
    level0_mpp: float | None,
    detect: bool,
    thumbnail: Thumbnail,
    limits: CostLimits,
) -> tuple[TissueMask, np.ndarray, float]:
    """The tissue mask, and the picture kept for the overlay with its downsample."""
    width, height = slide.info.dimensions
    long_side = max(width, height)
    wanted = long_side * level0_mpp / TISSUE_MPP if level0_mpp else THUMBNAIL_MIN
    max_size = int(min(max(wanted, THUMBNAIL_MIN), THUMBNAIL_MAX, long_side))
    read_size = min(max(max_size, PICTURE_MAX), long_side)
    _refuse_costly_thumbnail(slide, read_size, limits)
    image, downsample = thumbnail(read_size)
    picture, picture_downsample = _shrunk(image, downsample, PICTURE_MAX)
    image, downsample = _shrunk(image, downsample, max_size)
    _refuse_dark_field(slide, image)
    if not detect:
        return full_mask(slide.info.dimensions, downsample), picture, picture_downsample
    return detect_tissue(image, downsample, level0_mpp), picture, picture_downsample


def _shrunk(image: np.ndarray, downsample: float, max_size: int) -> tuple[np.ndarray, float]:
    """``image`` (level-0 px per pixel: ``downsample``) at most ``max_size`` px on its long side."""
    height, width = image.shape[:2]
    if max(width, height) <= max_size:
        return image, downsample
    scale = max(width, height) / max_size
    size = (max(1, round(width / scale)), max(1, round(height / scale)))
    small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX))
    return small, downsample * width / size[0]


def _refuse_impossible_size(
    slide: Slide, mpp_xy: tuple[float, float] | None, limits: CostLimits
) -> None:
    """A slide larger than any glass slide is a lie (a crafted header) or a wrong ``--mpp``:
    planning and its thumbnail would take hours over pixels that are not there."""
    width, height = slide.info.dimensions
    name = slide.info.path.name
    if mpp_xy is not None:
        width_mm, height_mm = width * mpp_xy[0] / 1000, height * mpp_xy[1] / 1000
        if max(width_mm, height_mm) > limits.max_slide_mm:
            raise InvalidInput(
                f"{name} declares {width:,} x {height:,} px at {mpp_xy[0]:g} µm/px, "
                f"{width_mm:,.0f} x {height_mm:,.0f} mm, larger than any glass slide "
                f"(this server's limit is {limits.max_slide_mm:g} mm); check --mpp or the file"
            )
    elif max(width, height) > limits.max_uncalibrated_px:
        raise InvalidInput(
            f"{name} declares {width:,} x {height:,} px, more than the "
            f"{limits.max_uncalibrated_px:,} px a side that this server reads from an image "
            "without a µm per pixel"
        )


def _refuse_costly_thumbnail(slide: Slide, read_size: int, limits: CostLimits) -> None:
    """A slide without a pyramid is read whole for its thumbnail: refuse one whose
    thumbnail would be made from more pixels than the server allows."""
    level_w, level_h = slide.thumbnail_source(read_size)
    mpx = level_w * level_h / 1e6
    if mpx > limits.max_thumbnail_mpx:
        raise InvalidInput(
            f"{slide.info.path.name} has no level coarser than {level_w:,} x {level_h:,} px "
            f"({mpx:,.0f} Mpx) to make its thumbnail from, more than this server's limit of "
            f"{limits.max_thumbnail_mpx:,.0f} Mpx; save it with a pyramid (e.g. vips tiffsave "
            "--tile --pyramid)"
        )


def _refuse_costly_model_work(slide: Slide, model_px: int, limits: CostLimits) -> None:
    mpx = model_px / 1e6
    if mpx > limits.max_model_mpx:
        raise InvalidInput(
            f"{slide.info.path.name} would put {mpx:,.0f} Mpx through the model at the working "
            f"resolution, more than this server's limit of {limits.max_model_mpx:,.0f} Mpx per "
            "slide; segment it at a coarser --target-mpp or within an ROI"
        )


def _refuse_dark_field(slide: Slide, thumbnail: np.ndarray) -> None:
    brightness = float(np.median(thumbnail.mean(axis=2))) / 255.0
    if brightness < DARK_BACKGROUND:
        raise FailedPrecondition(
            f"{slide.info.path.name} has a dark background (median brightness "
            f"{brightness:.2f}): it looks like a fluorescence or dark-field image, and fseg "
            "segments brightfield H&E"
        )


def _refuse_roi_off_the_slide(
    slide: Slide, roi: list, offset: tuple[float, float], frame: Frame
) -> None:
    """An ROI that misses the slide is a mistake (often the wrong frame), not an empty result.

    ``roi`` is in level-0 pixels of the slide; messages give both extents in
    the caller's frame, where the ROI was drawn.
    """
    width, height = slide.info.dimensions
    polygons = np.asarray(roi, dtype=object)
    # Per polygon, not their union: the answer is the same, without merging them all.
    overlap = shapely.area(shapely.intersection(polygons, shapely.box(0, 0, width, height)))
    if overlap.sum() > 0:
        return  # touching an edge is not enough: no pixel would be segmented
    x0, y0, x1, y1 = (round(v) for v in shapely.total_bounds(polygons))
    ox, oy = round(offset[0]), round(offset[1])
    raise InvalidInput(
        f"the ROI lies outside {slide.info.path.name}: it spans x {x0 - ox} to {x1 - ox} and "
        f"y {y0 - oy} to {y1 - oy}, and the slide x {-ox} to {width - ox} and y {-oy} to "
        f"{height - oy} (level-0 px, {frame.value} frame)"
    )


def _image_extent(slide: Slide, frame: Frame) -> shapely.Polygon:
    """The image in the output frame (level-0 pixels), as QuPath shows it."""
    bounds = slide.info.bounds
    if frame is Frame.BOUNDS and bounds is not None:
        return shapely.box(0, 0, bounds[2], bounds[3])
    return shapely.box(0, 0, *slide.info.dimensions)


def _frame_offset(slide: Slide, frame: Frame) -> tuple[float, float]:
    bounds = slide.info.bounds
    if frame is Frame.BOUNDS and bounds is not None:
        return (float(bounds[0]), float(bounds[1]))
    return (0.0, 0.0)


def _round_up(value: int, multiple: int, least: int | None = None) -> int:
    """``value`` rounded up to a multiple of ``multiple``, and at least ``least`` (default: one)."""
    return max(multiple if least is None else least, -(-value // multiple) * multiple)
