"""Bits per colour channel as a file stores them.

fseg reads every image as 8-bit RGB, and both of its readers reduce a 16-bit RGB
file to 8 bits without saying so (OpenSlide's libtiff and Pillow alike). These
read the depth from the file's header, so a summary can say so.
"""

from __future__ import annotations

import struct
from pathlib import Path

from PIL import Image

_TIFF_BITS_PER_SAMPLE = 258
_SHORT = 3  # the TIFF type of BitsPerSample's values
# First four bytes -> (byte order, BigTIFF?).
_TIFF_MAGIC = {
    b"II*\x00": ("<", False),
    b"MM\x00*": (">", False),
    b"II+\x00": ("<", True),
    b"MM\x00+": (">", True),
}
_MAX_ENTRIES = 4096  # tags read from one directory at most: a crafted count is not followed
_MAX_SAMPLES = 16  # values of BitsPerSample read at most


def decoded_bits(image: Image.Image) -> int:
    """Bits per channel of a Pillow image as stored, before :meth:`Image.load`: Pillow's
    "RGB" mode holds 8 bits, but its raw mode says what the file had ("RGB;16B")."""
    if not image.tile:
        return 8
    args = image.tile[0].args
    raw_mode = args if isinstance(args, str) else (args[0] if args else "")
    return 16 if isinstance(raw_mode, str) and ";16" in raw_mode else 8


def tiff_bits(path: Path) -> int:
    """The largest BitsPerSample of a TIFF's first image; 8 for any other file, or
    when the header cannot be read."""
    try:
        with open(path, "rb") as file:
            return _first_image_bits(file) or 8
    except (OSError, struct.error, ValueError):
        return 8


def _first_image_bits(file) -> int | None:
    head = file.read(16)
    layout = _TIFF_MAGIC.get(head[:4])
    if layout is None:
        return None
    order, big = layout
    # Classic TIFF: 4-byte offsets, 12-byte entries, 2-byte entry count; BigTIFF: 8, 20, 8.
    offset_format, count_format, entry_bytes = ("Q", "Q", 20) if big else ("I", "H", 12)
    (directory,) = struct.unpack(order + offset_format, head[8:16] if big else head[4:8])
    file.seek(directory)
    count_bytes = struct.calcsize(count_format)
    (count,) = struct.unpack(order + count_format, file.read(count_bytes))
    entries = file.read(entry_bytes * min(count, _MAX_ENTRIES))
    value_at = 4 + struct.calcsize(offset_format)  # tag, type, count, then value or offset
    for start in range(0, len(entries) - entry_bytes + 1, entry_bytes):
        entry = entries[start : start + entry_bytes]
        tag, kind, values = struct.unpack(order + "HH" + offset_format, entry[:value_at])
        if tag != _TIFF_BITS_PER_SAMPLE:
            continue
        if kind != _SHORT or not 0 < values <= _MAX_SAMPLES:
            return None
        data = entry[value_at : value_at + 2 * values]
        if len(data) < 2 * values:  # not inline: the entry holds their offset
            (where,) = struct.unpack(order + offset_format, entry[value_at:])
            file.seek(where)
            data = file.read(2 * values)
        return max(struct.unpack(f"{order}{values}H", data))
    return None
