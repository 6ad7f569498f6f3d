"""One way in to whole-slide images and plain images.

Coordinates: regions are given in pixels of the level being read, with the
origin at the top-left of the full scan as OpenSlide numbers it (level-0
pixel = level pixel x the level's downsample). Plain images (PNG, JPEG, TIFF that OpenSlide does not
take) are single-level slides whose level 0 is the image itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import Cancelled, FailedPrecondition, InvalidInput, NotFound
from ..limits import DEFAULT_LIMITS
from .bit_depth import decoded_bits, tiff_bits

# Plain images are checked against a pixel limit (CostLimits) from their header,
# before decoding, with a sentence that says what to do; Pillow's own guard would
# only warn into the log, or refuse in its words.
Image.MAX_IMAGE_PIXELS = None
_PLAIN_MODES = {"RGB", "RGBA", "L", "LA", "P"}
# Pillow's names for the image kinds fseg refuses, as a person would say them.
_MODE_WORDS = {
    "I;16": "16-bit greyscale",
    "I;16B": "16-bit greyscale",
    "I": "32-bit integer greyscale",
    "F": "32-bit float greyscale",
    "CMYK": "CMYK",
    "1": "black-and-white (1-bit)",
}
# Whole-slide formats: when OpenSlide refuses one of these, the file is damaged,
# and Pillow must not be asked, since it would read a truncated TIFF silently.
_SLIDE_ONLY_SUFFIXES = {
    ".svs", ".ndpi", ".scn", ".mrxs", ".vms", ".vmu", ".bif", ".svslide", ".dcm", ".czi",
}  # fmt: skip
THUMBNAIL_BAND_PIXELS = 4 << 20  # level pixels decoded at once for a thumbnail (12 MB)


@dataclass(frozen=True)
class SlideInfo:
    """Geometry and metadata of a slide.

    Attributes:
        path: the file.
        vendor: OpenSlide's vendor name, or ``image`` for plain images.
        level_dimensions: (width, height) in pixels of every level.
        level_downsamples: level-0 pixels per pixel of every level.
        mpp: (x, y) µm per level-0 pixel, or None when the file does not say.
        bounds: (x, y, width, height) in level-0 pixels of the scanned area
            (``openslide.bounds-*``), or None. QuPath's OpenSlide image server
            shows slides cropped to it.
        bits_per_channel: as the file stores them. Reads are 8-bit whatever
            this says: a 16-bit file's full range (0-65,535) maps onto 0-255.
    """

    path: Path
    vendor: str
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp: tuple[float, float] | None
    bounds: tuple[int, int, int, int] | None
    bits_per_channel: int = 8

    @property
    def dimensions(self) -> tuple[int, int]:
        """(width, height) of level 0 in pixels."""
        return self.level_dimensions[0]

    @property
    def is_plain_image(self) -> bool:
        return self.vendor == "image"


class Slide:
    """A slide opened for reading; safe to read from several threads at once."""

    def __init__(self, info: SlideInfo, backend: _Backend) -> None:
        self.info = info
        self._backend = backend

    def read(self, level: int, left: int, top: int, width: int, height: int) -> np.ndarray:
        """RGB pixels of a region.

        Args:
            level: pyramid level.
            left, top: top-left corner in pixels of ``level`` (may lie outside).
            width, height: size in pixels of ``level``.

        Returns:
            (height, width, 3) uint8. Out-of-slide areas are filled by
            repeating the nearest edge pixels, as the F-SEG reference pads
            tiles; transparent (unscanned) areas read as white glass.
        """
        level_w, level_h = self.info.level_dimensions[level]
        x0, y0 = max(left, 0), max(top, 0)
        x1, y1 = min(left + width, level_w), min(top + height, level_h)
        if x1 <= x0 or y1 <= y0:
            return np.full((height, width, 3), 255, np.uint8)
        inside = self._backend.read(level, x0, y0, x1 - x0, y1 - y0)
        pad = ((y0 - top, top + height - y1), (x0 - left, left + width - x1), (0, 0))
        if any(p for axis in pad for p in axis):
            inside = np.pad(inside, pad, mode="edge")
        return inside

    def thumbnail(
        self, max_size: int, should_stop: Callable[[], bool] = lambda: False
    ) -> tuple[np.ndarray, float]:
        """An RGB thumbnail no larger than ``max_size`` px on its long side.

        Returns:
            the (h, w, 3) uint8 image and its downsample (level-0 px per
            thumbnail px, the same along both axes).

        Raises:
            Cancelled: ``should_stop()`` turned true between the bands read.
        """
        image = self._backend.thumbnail(self._thumbnail_size(max_size), should_stop)
        return image, self.info.dimensions[0] / image.shape[1]

    def thumbnail_source(self, max_size: int) -> tuple[int, int]:
        """(width, height) in px of the level a ``max_size`` thumbnail is made from:
        what reading it costs."""
        return self._backend.thumbnail_source(self._thumbnail_size(max_size))

    def _thumbnail_size(self, max_size: int) -> tuple[int, int]:
        width, height = self.info.dimensions
        downsample = max(width / max_size, height / max_size, 1.0)
        return (max(1, round(width / downsample)), max(1, round(height / downsample)))

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_slide(path: str | Path, max_image_pixels: int = DEFAULT_LIMITS.max_image_pixels) -> Slide:
    """Open a whole-slide image (anything OpenSlide reads) or a plain image.

    A plain image is decoded whole, so one of more than ``max_image_pixels`` is
    refused from its header.

    Raises:
        NotFound: the file does not exist.
        InvalidInput: the file is empty, truncated, or not an image at all.
        FailedPrecondition: an image that is not brightfield RGB.
    """
    path = Path(path)
    if not path.exists():
        raise NotFound(f"{path} does not exist")
    if not path.is_file():
        raise InvalidInput(f"{path} is not a file")
    if path.stat().st_size == 0:
        raise InvalidInput(f"{path} is empty")
    backend = _OpenSlideBackend.try_open(path)
    if backend is None:
        if path.suffix.lower() in _SLIDE_ONLY_SUFFIXES:
            raise InvalidInput(
                f"{path} is not a slide OpenSlide can read (damaged, truncated, or not "
                f"really a {path.suffix} file)"
            )
        backend = _ImageBackend.open(path, max_image_pixels)
    return Slide(backend.info, backend)


class _Backend:
    info: SlideInfo

    def read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        raise NotImplementedError

    def thumbnail(self, size: tuple[int, int], should_stop: Callable[[], bool]) -> np.ndarray:
        raise NotImplementedError

    def thumbnail_source(self, size: tuple[int, int]) -> tuple[int, int]:
        return self.info.dimensions

    def close(self) -> None:
        pass


class _OpenSlideBackend(_Backend):
    """OpenSlide handles are thread-safe and its reads release the GIL."""

    def __init__(self, path: Path, handle: object) -> None:
        import openslide

        self._openslide = openslide
        self._handle = handle
        props = handle.properties
        self.info = SlideInfo(
            path=path,
            vendor=props.get("openslide.vendor", "unknown"),
            level_dimensions=tuple(handle.level_dimensions),
            level_downsamples=tuple(float(d) for d in handle.level_downsamples),
            mpp=_mpp_from(props),
            bounds=_bounds_from(props),
            bits_per_channel=tiff_bits(path),
        )

    @classmethod
    def try_open(cls, path: Path) -> _OpenSlideBackend | None:
        import openslide

        try:
            handle = openslide.OpenSlide(str(path))
        except openslide.OpenSlideUnsupportedFormatError:
            return None
        except openslide.OpenSlideError as exc:
            raise InvalidInput(f"{path} is a damaged or truncated slide ({exc})") from exc
        return cls(path, handle)

    def read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        ds = self.info.level_downsamples[level]
        location = (round(x * ds), round(y * ds))  # OpenSlide wants level-0 pixels
        try:
            region = self._handle.read_region(location, level, (width, height))
        except self._openslide.OpenSlideError as exc:
            raise InvalidInput(f"{self.info.path} cannot be read ({exc})") from exc
        return _to_rgb(region)

    def thumbnail_source(self, size: tuple[int, int]) -> tuple[int, int]:
        return self.info.level_dimensions[self._thumbnail_level(size)]

    def _thumbnail_level(self, size: tuple[int, int]) -> int:
        """The coarsest level at least as large as the thumbnail (never level 0
        when a coarser one serves)."""
        return self._handle.get_best_level_for_downsample(self.info.dimensions[0] / size[0])

    def thumbnail(self, size: tuple[int, int], should_stop: Callable[[], bool]) -> np.ndarray:
        # Read in bands so memory stays bounded even for single-level slides.
        level = self._thumbnail_level(size)
        level_w, level_h = self.info.level_dimensions[level]
        rows_per_band = max(1, THUMBNAIL_BAND_PIXELS // level_w)
        bands = []
        for top in range(0, level_h, rows_per_band):
            if should_stop():
                raise Cancelled("the job was cancelled while the slide's thumbnail was read")
            band_h = min(rows_per_band, level_h - top)
            out_top, out_bottom = (
                round(top * size[1] / level_h),
                round((top + band_h) * size[1] / level_h),
            )
            if out_bottom > out_top:
                band = Image.fromarray(self.read(level, 0, top, level_w, band_h))
                bands.append(
                    np.asarray(band.resize((size[0], out_bottom - out_top), Image.Resampling.BOX))
                )
        return np.concatenate(bands, axis=0)

    def close(self) -> None:
        self._handle.close()


class _ImageBackend(_Backend):
    """A decoded plain image held in memory; reads are array slices."""

    def __init__(self, path: Path, pixels: np.ndarray, bits_per_channel: int = 8) -> None:
        self._pixels = pixels
        height, width = pixels.shape[:2]
        self.info = SlideInfo(
            path=path,
            vendor="image",
            level_dimensions=((width, height),),
            level_downsamples=(1.0,),
            mpp=None,
            bounds=None,
            bits_per_channel=bits_per_channel,
        )

    @classmethod
    def open(cls, path: Path, max_pixels: int) -> _ImageBackend:
        try:
            with Image.open(path) as image:
                _refuse_too_many_pixels(path, image.size, max_pixels)
                bits = decoded_bits(image)  # before load(), which forgets how it decoded
                image.load()
                mode = image.mode
                if mode not in _PLAIN_MODES:
                    bands = len(image.getbands())
                    kind = _MODE_WORDS.get(mode, f"{mode} ({bands} channel{'s' * (bands > 1)})")
                    raise FailedPrecondition(
                        f"{path} is a {kind} image; fseg "
                        "segments brightfield RGB (H&E) images, not fluorescence or "
                        "multichannel data"
                    )
                pixels = _to_rgb(image)
        except (FailedPrecondition, InvalidInput):
            raise
        except Exception as exc:  # PIL raises many types for undecodable files
            raise InvalidInput(
                f"{path} is neither a slide OpenSlide can read nor an image ({exc})"
            ) from exc
        if pixels.shape[0] == 0 or pixels.shape[1] == 0:
            raise InvalidInput(f"{path} has zero size")
        return cls(path, pixels, bits)

    def read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        return self._pixels[y : y + height, x : x + width]

    def thumbnail(self, size: tuple[int, int], should_stop: Callable[[], bool]) -> np.ndarray:
        image = Image.fromarray(self._pixels)
        return np.asarray(image.resize(size, Image.Resampling.BOX))


def _refuse_too_many_pixels(path: Path, size: tuple[int, int], max_pixels: int) -> None:
    """A plain image is decoded whole: refuse one larger than ``max_pixels`` before
    decoding, from its header (a 7 MB PNG may declare 50,000 x 50,000 px)."""
    width, height = size
    if width * height > max_pixels:
        raise InvalidInput(
            f"{path.name} is a {width:,} x {height:,} px plain image ({width * height / 1e6:,.0f} "
            f"Mpx), and plain images are decoded whole, up to {max_pixels / 1e6:,.0f} Mpx on "
            "this server; "
            "save it as a tiled pyramidal TIFF (e.g. vips tiffsave --tile --pyramid) to have "
            "it read tile by tile"
        )


def _to_rgb(image: Image.Image) -> np.ndarray:
    if image.mode in ("LA", "P"):
        image = image.convert("RGBA")
    # Fully opaque, as tissue tiles nearly always are: Pillow drops the alpha
    # band in C, three times faster than slicing it off in NumPy.
    if image.mode != "RGBA" or image.getchannel("A").getextrema()[0] == 255:
        return np.asarray(image.convert("RGB"))
    return _rgba_on_white(np.asarray(image))


def _rgba_on_white(rgba: np.ndarray) -> np.ndarray:
    """Composite straight-alpha RGBA on white: unscanned areas read as glass."""
    alpha = rgba[..., 3:4].astype(np.uint16)
    rgb = (rgba[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255
    return rgb.astype(np.uint8)


def _mpp_from(props: object) -> tuple[float, float] | None:
    try:
        x, y = float(props["openslide.mpp-x"]), float(props["openslide.mpp-y"])
    except (KeyError, ValueError):
        return None
    return (x, y) if x > 0 and y > 0 else None


def _bounds_from(props: object) -> tuple[int, int, int, int] | None:
    keys = ("openslide.bounds-x", "openslide.bounds-y", "openslide.bounds-width")
    try:
        x, y, w = (int(props[k]) for k in keys)
        h = int(props["openslide.bounds-height"])
    except (KeyError, ValueError):
        return None
    return (x, y, w, h)
