"""The atlas as one PNG picture: a row per concept, its legend on the left."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw

from ..pipeline.render import legend_font
from .content import AtlasContent, ConceptEntry

THUMB_PX = 112  # each window's picture in the mosaic
COLUMNS = 8  # windows per concept row
GAP = 6
LEGEND_PX = 300  # width of the legend column
FONT_PX = 16
HEADER_PX = 56


def atlas_png(content: AtlasContent) -> bytes:
    """The mosaic: title, then per concept its colour, index, name, share and windows."""
    row_px = THUMB_PX + 2 * GAP
    width = LEGEND_PX + COLUMNS * (THUMB_PX + GAP) + GAP
    height = HEADER_PX + row_px * len(content.concepts) + GAP
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.text((GAP * 2, 8), content.title, fill=(0, 0, 0), font=legend_font(FONT_PX + 4))
    draw.text((GAP * 2, 34), _fit(draw, content.subtitle, width - 4 * GAP), fill=(80, 80, 80),
              font=legend_font(FONT_PX - 3))  # fmt: skip
    for row, entry in enumerate(content.concepts):
        _draw_row(image, draw, entry, HEADER_PX + row * row_px)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _draw_row(image: Image.Image, draw: ImageDraw.ImageDraw, entry: ConceptEntry, top: int) -> None:
    font, small = legend_font(FONT_PX), legend_font(FONT_PX - 2)
    draw.rectangle((0, top, 5, top + THUMB_PX + 2 * GAP - 1), fill=entry.color)
    swatch = (GAP * 3, top + GAP + 2, GAP * 3 + 22, top + GAP + 24)
    draw.rectangle(swatch, fill=entry.color, outline=(0, 0, 0))
    text_left = swatch[2] + GAP * 2
    room = LEGEND_PX - text_left - GAP
    draw.text((text_left, top + GAP + 4), _fit(draw, f"#{entry.index}", room, font), fill=(0, 0, 0),
              font=font)  # fmt: skip
    draw.text((text_left, top + GAP + 26), _fit(draw, entry.name, room, font), fill=(0, 0, 0),
              font=font)  # fmt: skip
    share = "absent on these inputs" if entry.absent else f"{100 * entry.share:.1f}% of tissue"
    grey = (160, 0, 0) if entry.absent else (70, 70, 70)
    draw.text((text_left, top + GAP + 50), share, fill=grey, font=small)
    for column, window in enumerate(entry.windows[:COLUMNS]):
        left = LEGEND_PX + column * (THUMB_PX + GAP)
        thumb = window.picture.convert("RGB").resize((THUMB_PX, THUMB_PX), Image.Resampling.LANCZOS)
        image.paste(thumb, (left, top + GAP))


def _fit(draw: ImageDraw.ImageDraw, text: str, room: float, font: object = None) -> str:
    """``text`` cut with an ellipsis to fit ``room`` pixels."""
    font = font or legend_font(FONT_PX - 3)
    if draw.textlength(text, font=font) <= room:
        return text
    while text and draw.textlength(text + "…", font=font) > room:
        text = text[:-1]
    return text + "…"
