"""Reading the windows an atlas shows: each with some context, its outline drawn."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from ..slide.reader import Slide

#: Display pixels along each side of a window's picture.
PICTURE_PX = 160
#: Context around a window, as a fraction of its edge on each side.
CONTEXT = 0.75


def window_picture(
    slide: Slide, box: tuple[int, int, int, int], color: tuple[int, int, int]
) -> Image.Image:
    """The window ``box`` (level-0 px of the slide's own level 0) with context, outlined.

    Read from the coarsest pyramid level that still has a pixel per display
    pixel, so a large window costs no more than a small one.
    """
    x, y, width, height = box
    margin = round(CONTEXT * max(width, height))
    left, top = x - margin, y - margin
    span = max(width, height) + 2 * margin  # level-0 px, square
    level = _level_for(slide, span / PICTURE_PX)
    downsample = slide.info.level_downsamples[level]
    size = max(1, round(span / downsample))
    pixels = _read_on_white(slide, level, round(left / downsample), round(top / downsample), size)
    picture = Image.fromarray(pixels).resize((PICTURE_PX, PICTURE_PX), Image.Resampling.LANCZOS)
    scale = PICTURE_PX / span
    outline = (
        margin * scale,
        margin * scale,
        (margin + width) * scale - 1,
        (margin + height) * scale - 1,
    )
    draw = ImageDraw.Draw(picture)
    # The concept's colour inside a white line: visible on pink and on purple tissue.
    draw.rectangle(_grown(outline, 2), outline=(255, 255, 255), width=1)
    draw.rectangle(outline, outline=tuple(color), width=2)
    return picture


def _read_on_white(slide: Slide, level: int, left: int, top: int, size: int) -> np.ndarray:
    """A ``size`` square of ``level`` pixels; what lies beyond the slide is white.

    Reading pads with the edge's pixels (what an extractor should see); a person
    should see where the slide ends.
    """
    canvas = np.full((size, size, 3), 255, np.uint8)
    width, height = slide.info.level_dimensions[level]
    x0, y0 = max(left, 0), max(top, 0)
    x1, y1 = min(left + size, width), min(top + size, height)
    if x1 > x0 and y1 > y0:
        inside = slide.read(level, x0, y0, x1 - x0, y1 - y0)
        canvas[y0 - top : y1 - top, x0 - left : x1 - left] = inside
    return canvas


def _level_for(slide: Slide, wanted_downsample: float) -> int:
    """The coarsest level whose downsample is at most ``wanted_downsample``."""
    fine_enough = [
        (d, i) for i, d in enumerate(slide.info.level_downsamples) if d <= wanted_downsample
    ]
    return max(fine_enough)[1] if fine_enough else 0


def _grown(box: tuple[float, ...], by: float) -> tuple[float, ...]:
    return (box[0] - by, box[1] - by, box[2] + by, box[3] + by)
