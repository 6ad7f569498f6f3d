"""Planning the tiles of a slide at a working resolution.

Three pixel frames meet here, and every value says which one it is in:

* level-0 pixels of the slide (OpenSlide's frame);
* *target* pixels at the extractor's working resolution (``mpp``), so one
  target pixel is ``target_downsample`` level-0 pixels;
* pixels of the pyramid level that is read, the coarsest level that is
  still at least as fine as needed, so a target pixel is ``scale`` level
  pixels (scale >= 1, except when the working resolution is finer than
  level 0: then level 0 is read and enlarged, scale < 1).

A tile's *core* is a ``tile_size`` square of target pixels; it is read with
``margin`` target pixels of context on every side so cells near its edge see
their neighbours, and only the core's labels are kept, which is why the
stitched label grid has no seams.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import FailedPrecondition, InvalidInput
from .reader import SlideInfo
from .tissue import TissueMask

# Level downsamples are stored with rounding noise (2.0005 for an exact 2).
_SNAP_TOLERANCE = 0.01
_LEVEL_TOLERANCE = 1 + _SNAP_TOLERANCE
#: Most a slide's level 0 is enlarged to reach the working resolution (a 10x
#: scan read for a 0.5 µm/px model is 2x). More means a wrong µm/px, such as a
#: 72-dpi screen resolution in a TIFF tag, and tiles the size of a building.
MAX_ENLARGEMENT = 4.0
#: Most a read level is shrunk: each tile is read whole at that level first.
MAX_SHRINKING = 16.0


@dataclass(frozen=True)
class Resolution:
    """Where a slide is read from to reach a working resolution.

    Attributes:
        mpp: working resolution, µm per target pixel (None: native pixels of a
            plain image that has no calibration).
        target_downsample: level-0 pixels per target pixel.
        level: pyramid level that is read.
        scale: level pixels per target pixel (1 means no resizing; below 1
            only when the working resolution is finer than level 0).
        level0_mpp: µm per level-0 pixel along x (``--mpp`` or the slide's
            mpp-x), None if unknown. Tiles are resampled by it along both axes.
        level0_mpp_y: µm per level-0 pixel along y (``--mpp`` or the slide's mpp-y).
    """

    mpp: float | None
    target_downsample: float
    level: int
    scale: float
    level0_mpp: float | None = None
    level0_mpp_y: float | None = None

    @property
    def level0_mpp_xy(self) -> tuple[float, float] | None:
        """(x, y) µm per level-0 pixel, None if unknown."""
        if self.level0_mpp is None:
            return None
        return (self.level0_mpp, self.level0_mpp_y or self.level0_mpp)


@dataclass(frozen=True)
class BlockMask:
    """The blocks of a region's input rectangle that go through the model.

    A block-sparse region (``slide/sparse_regions.py``) reads its whole rectangle but
    computes only these blocks; the others are glass.

    Attributes:
        block: block edge, target pixels; the rectangle is whole blocks.
        rows, cols: the rectangle's size in blocks.
        bits: the (rows, cols) bool array, row-major, packed 8 to a byte
            (bytes, so that a tile stays hashable).
    """

    block: int
    rows: int
    cols: int
    bits: bytes

    @classmethod
    def of(cls, occupied: np.ndarray, block: int) -> BlockMask:
        rows, cols = occupied.shape
        return cls(block, rows, cols, np.packbits(occupied, axis=None).tobytes())

    def array(self) -> np.ndarray:
        """(rows, cols) bool."""
        flat = np.unpackbits(np.frombuffer(self.bits, np.uint8), count=self.rows * self.cols)
        return flat.reshape(self.rows, self.cols).astype(bool)

    @property
    def count(self) -> int:
        """Blocks that go through the model."""
        return int(np.unpackbits(np.frombuffer(self.bits, np.uint8)).sum())


@dataclass(frozen=True)
class Tile:
    """One tile (or tissue region): its core in target pixels and the area read for it.

    Attributes:
        row, col: top-left of the core in units of the planner's step (tile
            size for square tiles, block size for regions); names a tile in
            caches and orders tiles row-major.
        core_x, core_y: top-left of the core, target pixels.
        core_w, core_h: size of the core, target pixels (multiples of the
            extractor's stride).
        margins: context read on each side of the core (left, top, right,
            bottom), target pixels; a region's side that faces only glass
            needs less context than one that faces more tissue.
        scale: level pixels per target pixel of the level being read.
        blocks: for a block-sparse region, the blocks of the area read that go
            through the model (the rest is glass); None: all of it does.

    The area read is the core grown by its margins, as the exact rectangle
    ``source_*`` in pixels of the level being read (floats): target pixel t
    covers level pixels [t * scale, (t + 1) * scale). Resampling this exact
    rectangle makes every tile sample the same global grid, so overlapping
    tiles see identical pixels.
    """

    row: int
    col: int
    core_x: int
    core_y: int
    core_w: int
    core_h: int
    margins: tuple[int, int, int, int]
    scale: float
    blocks: BlockMask | None = None

    @property
    def input_w(self) -> int:
        """Width of the image given to the extractor (core and margins), target px."""
        return self.margins[0] + self.core_w + self.margins[2]

    @property
    def input_h(self) -> int:
        """Height of the image given to the extractor (core and margins), target px."""
        return self.margins[1] + self.core_h + self.margins[3]

    @property
    def input_pixels(self) -> int:
        """Target pixels that go through the model for this tile."""
        if self.blocks is not None:
            return self.blocks.count * self.blocks.block**2
        return self.input_w * self.input_h

    @property
    def source_x(self) -> float:
        return (self.core_x - self.margins[0]) * self.scale

    @property
    def source_y(self) -> float:
        return (self.core_y - self.margins[1]) * self.scale

    @property
    def source_w(self) -> float:
        return self.input_w * self.scale

    @property
    def source_h(self) -> float:
        return self.input_h * self.scale

    def read_box(self) -> tuple[int, int, int, int]:
        """The integer level-pixel rectangle (left, top, width, height) holding the source."""
        left, top = math.floor(self.source_x), math.floor(self.source_y)
        right = math.ceil(self.source_x + self.source_w)
        bottom = math.ceil(self.source_y + self.source_h)
        return left, top, right - left, bottom - top


def choose_resolution(info: SlideInfo, mpp: float | None, user_mpp: float | None) -> Resolution:
    """Pick the level to read and the resampling for a working resolution.

    Args:
        info: the slide.
        mpp: working resolution in µm per pixel (extractor or bank default).
        user_mpp: µm per level-0 pixel given by the user (``--mpp``), which
            overrides the slide's metadata; required when the slide has none.
    """
    if user_mpp is not None and user_mpp <= 0:
        raise InvalidInput(f"--mpp must be a positive number of µm per pixel, not {user_mpp}")
    base = user_mpp if user_mpp is not None else (info.mpp[0] if info.mpp else None)
    if base is None:
        if info.is_plain_image:
            return Resolution(None, 1.0, 0, 1.0)
        raise FailedPrecondition(
            f"{info.path.name} does not record its resolution (no openslide.mpp-x); "
            "pass --mpp with the µm per pixel of its level 0"
        )
    target_downsample = (mpp or base) / base
    _check_enlargement(info, base, mpp or base, user_mpp is not None)
    level = max(
        (
            i
            for i, d in enumerate(info.level_downsamples)
            if d <= target_downsample * _LEVEL_TOLERANCE
        ),
        key=lambda i: info.level_downsamples[i],
        default=0,
    )
    scale = target_downsample / info.level_downsamples[level]
    if abs(scale - 1.0) < _SNAP_TOLERANCE:
        # Within 1% of a pyramid level (0.499 µm/px scans read for 1 µm/px):
        # read that level as it is, with no resampling, at its own resolution.
        target_downsample, scale = info.level_downsamples[level], 1.0
    if scale > MAX_SHRINKING:
        raise InvalidInput(
            f"{info.path.name} has no level near {mpp:g} µm/px (the nearest finer one is "
            f"{base * info.level_downsamples[level]:g} µm/px, {_times(scale)} times finer); "
            f"fseg shrinks a level at most {MAX_SHRINKING:g} times: choose a finer --target-mpp"
        )
    base_y = user_mpp if user_mpp is not None else info.mpp[1]
    return Resolution(base * target_downsample, target_downsample, level, scale, base, base_y)


def _check_enlargement(info: SlideInfo, base: float, mpp: float, from_user: bool) -> None:
    """Refuse a working resolution far finer than level 0 (µm/px ``base``)."""
    enlargement = base / mpp
    if enlargement <= MAX_ENLARGEMENT:
        return
    source = "--mpp says" if from_user else "its metadata says"
    hint = (
        "check --mpp (0.25 at 40x, 0.5 at 20x)"
        if from_user
        else "if that is a screen resolution (72 dpi) rather than the scan's, pass --mpp"
    )
    raise FailedPrecondition(
        f"{info.path.name}: {source} level 0 is {base:g} µm/px, which would have to be "
        f"enlarged {_times(enlargement)} times to reach the working {mpp:g} µm/px "
        f"(at most {MAX_ENLARGEMENT:g}); {hint}"
    )


def _times(factor: float) -> str:
    """A factor as a person reads it: 20, 1,234, or 1e+300 (not its 301 digits)."""
    return f"{factor:,.0f}" if factor < 1e9 else f"{factor:.3g}"


@dataclass(frozen=True)
class TileGrid:
    """The tiles covering a slide at one resolution.

    Attributes:
        resolution: how the slide is read.
        tile_size: core edge, target pixels.
        margin: context on each side, target pixels.
        rows, cols: tile grid size.
        width, height: slide size in target pixels.
    """

    resolution: Resolution
    tile_size: int
    margin: int
    rows: int
    cols: int
    width: int
    height: int

    def tile(self, row: int, col: int) -> Tile:
        """The square tile at (row, col) of the grid."""
        size = self.tile_size
        return Tile(
            row=row,
            col=col,
            core_x=col * size,
            core_y=row * size,
            core_w=size,
            core_h=size,
            margins=(self.margin,) * 4,
            scale=self.resolution.scale,
        )

    def tiles(self, tissue: TissueMask | None = None) -> Iterator[Tile]:
        """Tiles in row-major order, only those whose core holds tissue."""
        ds = self.resolution.target_downsample
        for row in range(self.rows):
            for col in range(self.cols):
                tile = self.tile(row, col)
                x0, y0 = tile.core_x * ds, tile.core_y * ds
                x1, y1 = x0 + self.tile_size * ds, y0 + self.tile_size * ds
                if tissue is None or tissue.any_in(x0, y0, x1, y1):
                    yield tile


def plan_tiles(info: SlideInfo, resolution: Resolution, tile_size: int, margin: int) -> TileGrid:
    """Cover the whole slide with tiles of ``tile_size`` target pixels."""
    width0, height0 = info.dimensions
    width = math.ceil(width0 / resolution.target_downsample)
    height = math.ceil(height0 / resolution.target_downsample)
    return TileGrid(
        resolution=resolution,
        tile_size=tile_size,
        margin=margin,
        rows=math.ceil(height / tile_size),
        cols=math.ceil(width / tile_size),
        width=width,
        height=height,
    )
