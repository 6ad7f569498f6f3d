"""Pictures of a result: the label PNG and the overlay a person looks at."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..concepts.bank import ConceptClass
from .canvas import NODATA
from .plan import PICTURE_MAX

OVERLAY_MAX = PICTURE_MAX  # px, long side of the overlay: the plan's picture of the slide
OVERLAY_ALPHA = 0.45  # share of the class colour in tissue pixels
GLASS_COLOR = (255, 255, 255)
LEGEND_FONT_PX = 14  # at least; a large overlay gets a font 1/64 of its height


def label_png(labels: np.ndarray, classes: Sequence[ConceptClass]) -> bytes:
    """A palette PNG whose pixel values are the class indices (255: no label).

    Palette PNGs keep the index exact (evaluation reads it back) while image
    viewers show the class colours.
    """
    image = Image.fromarray(labels, mode="P") if labels.size else Image.new("P", (1, 1), NODATA)
    palette = np.zeros((256, 3), np.uint8)
    palette[NODATA] = GLASS_COLOR
    for index, concept in enumerate(classes):
        palette[index] = concept.color
    image.putpalette(palette.ravel().tolist())
    return _png(image, transparency=NODATA)


def overlay_png(
    thumbnail: np.ndarray,
    thumbnail_downsample: float,
    labels: np.ndarray,
    labels_downsample: float,
    classes: Sequence[ConceptClass],
    *,
    legend: bool = True,
    shares: Sequence[float] | None = None,
) -> bytes:
    """The thumbnail with every labelled pixel tinted by its class colour.

    Both grids start at level-0 (0, 0); the downsamples (level-0 pixels per
    thumbnail pixel, per label pixel) place each label on the thumbnail. The
    label grid may overhang the slide (its edge tiles are whole cells). With
    ``legend``, a panel to the right names each class present, with its
    colour and its share of the tissue: ``shares`` (one fraction per class;
    the pipeline gives the polygons', which QuPath will show), else the
    thumbnail's labels'.
    """
    image = Image.fromarray(thumbnail)
    if max(image.size) > OVERLAY_MAX:
        image.thumbnail((OVERLAY_MAX, OVERLAY_MAX), Image.Resampling.BOX)
    thumbnail_downsample *= thumbnail.shape[1] / image.size[0]
    base = np.asarray(image).astype(np.uint16)
    height, width = base.shape[:2]
    step = thumbnail_downsample / labels_downsample  # label pixels per thumbnail pixel
    rows = np.minimum((np.arange(height) + 0.5) * step, labels.shape[0] - 1).astype(int)
    cols = np.minimum((np.arange(width) + 0.5) * step, labels.shape[1] - 1).astype(int)
    resampled = labels[np.ix_(rows, cols)]
    colors = np.zeros((256, 3), np.uint16)
    for index, concept in enumerate(classes):
        colors[index] = concept.color
    # Blending in 1/256ths on whole arrays: a few integer passes, no float copy.
    alpha = round(OVERLAY_ALPHA * 256)
    weight = np.where(resampled != NODATA, alpha, 0).astype(np.uint16)[..., None]
    blended = (base * (256 - weight) + colors[resampled] * weight + 128) >> 8
    picture = Image.fromarray(blended.astype(np.uint8))
    if legend:
        if shares is None:
            counts = np.bincount(resampled.ravel(), minlength=256)[: len(classes)]
            shares = counts / max(int(counts.sum()), 1)
        picture = _with_legend(picture, shares, classes)
    # A photograph-like picture barely compresses: the fastest level is as small.
    return _png(picture, compress_level=1)


def _with_legend(
    picture: Image.Image, shares: Sequence[float], classes: Sequence[ConceptClass]
) -> Image.Image:
    """``picture`` with a legend panel on its right: each class with a share above 0."""
    present = [i for i in range(len(classes)) if shares[i] > 0]
    lines = [f"{classes[i].name}  {100 * shares[i]:.0f}%" for i in present]
    title = "classes (share of tissue)" if present else "no tissue found"
    font_px = max(LEGEND_FONT_PX, picture.height // 64)
    font = legend_font(font_px)
    measure = ImageDraw.Draw(picture)
    text_px = max(measure.textlength(t, font=font) for t in [title, *lines])
    row, pad, swatch = round(font_px * 1.6), round(font_px * 0.7), font_px
    width = int(pad + swatch + pad + text_px + pad)
    height = max(picture.height, 2 * pad + row * (len(lines) + 1))
    panel = Image.new("RGB", (picture.width + width, height), GLASS_COLOR)
    panel.paste(picture, (0, 0))
    draw = ImageDraw.Draw(panel)
    left = picture.width + pad
    draw.text((left, pad), title, fill=(0, 0, 0), font=font)
    for j, (index, line) in enumerate(zip(present, lines, strict=True), start=1):
        top = pad + j * row
        box = (left, top, left + swatch, top + swatch)
        draw.rectangle(box, fill=tuple(classes[index].color), outline=(0, 0, 0))
        draw.text((left + swatch + pad, top), line, fill=(0, 0, 0), font=font)
    return panel


def legend_font(size_px: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's built-in font at ``size_px`` (a fixed bitmap font without FreeType)."""
    try:
        return ImageFont.load_default(size=size_px)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def _png(image: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, **options)
    return buffer.getvalue()
