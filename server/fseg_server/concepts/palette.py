"""Default class names and colours for the concepts of a bank."""

from __future__ import annotations

import colorsys

# Distinct, colour-blind-aware hues first (Okabe-Ito and Tol's bright scheme),
# then generated hues for larger k.
_BASE = [
    (230, 159, 0),
    (86, 180, 233),
    (0, 158, 115),
    (240, 228, 66),
    (0, 114, 178),
    (213, 94, 0),
    (204, 121, 167),
    (102, 37, 6),
    (68, 119, 170),
    (238, 102, 119),
    (34, 136, 51),
    (204, 187, 68),
    (102, 204, 238),
    (170, 51, 119),
    (187, 187, 187),
    (136, 34, 85),
]
_GOLDEN = 0.618033988749895
# The concept a bank keeps for glass: a light grey, unlike every hue above.
GLASS_COLOR = (225, 225, 225)


def default_colors(k: int) -> list[tuple[int, int, int]]:
    """``k`` distinguishable RGB colours (0-255), the same for the same k."""
    colors = list(_BASE[:k])
    hue = 0.11
    while len(colors) < k:
        hue = (hue + _GOLDEN) % 1.0
        lightness = 0.45 + 0.15 * (len(colors) % 3) / 2
        r, g, b = colorsys.hls_to_rgb(hue, lightness, 0.75)
        colors.append((round(r * 255), round(g * 255), round(b * 255)))
    return colors


def default_names(k: int) -> list[str]:
    """Names that stay unique across banks of several k in one QuPath project."""
    return [f"F-SEG k{k} #{i}" for i in range(k)]


def glass_name(k: int) -> str:
    """The default name of the concept a bank of ``k`` keeps for glass."""
    return f"F-SEG k{k} glass"


def is_rgb(value: object) -> bool:
    """Whether ``value`` is three integers 0-255 (a list or tuple)."""
    return (
        isinstance(value, (list, tuple))
        and len(value) == 3
        and all(isinstance(c, int) and 0 <= c <= 255 for c in value)
    )


def parse_color(value: object) -> tuple[int, int, int]:
    """Accept ``[r, g, b]`` (0-255) or ``"#rrggbb"``; raise ValueError otherwise."""
    if isinstance(value, str) and value.startswith("#") and len(value) == 7:
        return tuple(int(value[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
    if is_rgb(value):
        return (value[0], value[1], value[2])  # type: ignore[index]
    raise ValueError(f"colour {value!r} is neither [r, g, b] with 0-255 integers nor '#rrggbb'")


def hex_color(rgb: tuple[int, int, int]) -> str:
    """``"#rrggbb"``, the form :func:`parse_color` reads and web pages show."""
    return "#" + bytes(rgb).hex()
