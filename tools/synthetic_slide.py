"""Make large pyramidal TIFF slides out of real H&E, for tests, benchmarks and the demo.

A square crop of a real slide is mirrored and repeated to any size, so the
result has real tissue texture (and real glass) at a known scale, and tiles
are generated on the fly, so a 40,000 x 40,000 slide is written with little
memory. Without a source slide, a procedural H&E-like pattern (pink stroma,
nuclei-dense purple epithelium, glass) stands in. Levels are separate TIFF
directories (JPEG-compressed tiles), which OpenSlide reads as a generic tiled
TIFF; the resolution tags carry µm/px.

    python tools/synthetic_slide.py OUT.tiff --size 40000 [--source REAL.svs]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from PIL import Image

TILE = 512


def pattern_from(source: Path, size: int) -> tuple[np.ndarray, float]:
    """A ``size`` x ``size`` crop from the middle of ``source`` and its µm/px."""
    import openslide

    slide = openslide.OpenSlide(str(source))
    width, height = slide.dimensions
    size = min(size, width, height)
    left, top = (width - size) // 2, (height - size) // 2
    region = np.asarray(slide.read_region((left, top), 0, (size, size)).convert("RGB"))
    mpp = float(slide.properties.get("openslide.mpp-x", 0.5))
    return region, mpp


def procedural_pattern(size: int, seed: int = 0) -> np.ndarray:
    """An H&E-like RGB pattern: glass, eosin-pink stroma, and purple epithelium with nuclei."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    fields = [
        ndimage.gaussian_filter(rng.standard_normal((size, size)), size / 16) for _ in range(2)
    ]
    tissue = fields[0] > -0.2 * fields[0].std()
    epithelium = tissue & (fields[1] > 0.3 * fields[1].std())
    image = np.empty((size, size, 3), np.float32)
    image[:] = (242, 240, 244)  # glass
    image[tissue] = (226, 150, 190)  # stroma
    image[epithelium] = (170, 110, 170)  # cytoplasm of epithelial cells
    nuclei = np.zeros((size, size), bool)
    centres = rng.integers(0, size, (size * size // 180, 2))
    nuclei[centres[:, 0], centres[:, 1]] = True
    nuclei = ndimage.binary_dilation(nuclei, iterations=3) & (
        epithelium | (tissue & (rng.random((size, size)) < 0.15))
    )
    image[nuclei] = (95, 55, 140)
    image += rng.normal(0, 6, image.shape)
    return np.clip(ndimage.gaussian_filter(image, (0.8, 0.8, 0)), 0, 255).astype(np.uint8)


def mirrored_indices(start: int, count: int, period: int) -> np.ndarray:
    """Indices into a pattern of ``period`` pixels, mirrored so repeats have no seams."""
    positions = (np.arange(start, start + count)) % (2 * period)
    return np.where(positions < period, positions, 2 * period - 1 - positions)


def level_tiles(pattern: np.ndarray, width: int, height: int):
    """Yield the tiles of one level, row by row, cut from the repeated pattern."""
    period = pattern.shape[0]
    for top in range(0, height, TILE):
        rows = mirrored_indices(top, TILE, period)
        for left in range(0, width, TILE):
            cols = mirrored_indices(left, TILE, period)
            yield pattern[np.ix_(rows, cols)]


def write_slide(
    out: Path, pattern: np.ndarray, size: int, mpp: float, levels: int = 4, quality: int = 85
) -> Path:
    """Write a ``size`` x ``size`` pyramidal TIFF with ``levels`` levels (downsample 2 each)."""
    import tifffile

    tmp = out.with_name(f".{out.name}.tmp")
    pixels_per_cm = 1e4 / mpp
    with tifffile.TiffWriter(tmp, bigtiff=True) as tiff:
        for level in range(levels):
            scale = 2**level
            side = math.ceil(size / scale)
            if side < TILE and level > 0:
                break
            period = max(16, pattern.shape[0] // scale)
            level_pattern = np.asarray(
                Image.fromarray(pattern).resize((period, period), Image.Resampling.BOX)
            )
            tiff.write(
                level_tiles(level_pattern, side, side),
                shape=(side, side, 3),
                dtype=np.uint8,
                tile=(TILE, TILE),
                photometric="rgb",
                compression="jpeg",
                compressionargs={"level": quality},
                resolution=(pixels_per_cm / scale, pixels_per_cm / scale),
                resolutionunit="CENTIMETER",
                subfiletype=1 if level else 0,
            )
    tmp.replace(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--source", type=Path, help="a real slide to take the tissue from")
    parser.add_argument("--size", type=int, default=40_000, help="edge in level-0 pixels")
    parser.add_argument("--pattern", type=int, default=2048, help="crop edge in pixels")
    args = parser.parse_args()
    if args.source:
        pattern, mpp = pattern_from(args.source, args.pattern)
    else:
        pattern, mpp = procedural_pattern(args.pattern), 0.5
    write_slide(args.out, pattern, args.size, mpp)
    print(f"wrote {args.out}: {args.size} x {args.size} px at {mpp} µm/px")


if __name__ == "__main__":
    main()
