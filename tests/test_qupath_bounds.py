"""A slide with bounds: fseg's polygons land on the tissue in the frame QuPath shows.

QuPath's OpenSlide image server shows a slide cropped to OpenSlide's bounds
(``openslide.bounds-x/-y/-width/-height``): its pixel (x, y) is OpenSlide's
level-0 pixel (x + bounds-x, y + bounds-y). Bio-Formats shows level 0 as it is.
``fseg segment --frame bounds`` and ``--frame level0`` produce the two frames,
and the QuPath script picks one from the image server in use.

The slide is made here: a tiled TIFF whose tiles outside a tissue block are
absent (zero bytes), as scanners write sparse slides. OpenSlide (4.0, generic
TIFF) reports the box of the tiles present as the slide's bounds, so the block
sits at a known place in both frames.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import openslide
import pytest
import shapely
import tifffile
from jts_check import check_with_jts
from scipy import ndimage
from shapely.affinity import translate
from shapely.geometry import box, shape
from test_e2e_support import real_server

from fseg_server.slide.reader import open_slide
from servers import ServerProcess

pytestmark = pytest.mark.slow

TILE = 256
WIDTH, HEIGHT = 2048, 1536  # level 0: 8 x 6 tiles
MPP = 0.5
BLOCK = (700, 400, 1300, 1000)  # the tissue, level-0 x0, y0, x1, y1
# The tiles the block touches: columns 2-5 and rows 1-3, so OpenSlide's bounds are
BOUNDS = (512, 256, 1024, 768)  # x, y, width, height
# One label cell at fseg's working resolution is about 8 level-0 pixels here.
CELL = 8


def write_sparse_slide(path: Path) -> np.ndarray:
    """A tiled RGB TIFF with an H&E-like block; tiles without tissue are zero bytes long."""
    rng = np.random.default_rng(7)
    image = np.full((HEIGHT, WIDTH, 3), 255, np.uint8)
    x0, y0, x1, y1 = BLOCK
    field = ndimage.gaussian_filter(rng.standard_normal((y1 - y0, x1 - x0)), 12)
    pink, purple = np.array((225, 140, 190)), np.array((120, 60, 150))
    tissue = np.where((field > 0)[..., None], purple, pink) + rng.normal(0, 8, (*field.shape, 3))
    image[y0:y1, x0:x1] = np.clip(tissue, 0, 255).astype(np.uint8)
    tifffile.imwrite(
        path, image, tile=(TILE, TILE), photometric="rgb", metadata=None,
        resolution=(1e4 / MPP, 1e4 / MPP), resolutionunit="CENTIMETER",
    )  # fmt: skip
    columns = -(-WIDTH // TILE)
    with tifffile.TiffFile(path, mode="r+b") as tiff:
        tag = tiff.pages[0].tags["TileByteCounts"]
        counts = list(tag.value)
        for index in range(len(counts)):
            row, column = divmod(index, columns)
            tile = image[row * TILE : (row + 1) * TILE, column * TILE : (column + 1) * TILE]
            if (tile == 255).all():
                counts[index] = 0  # a missing tile: OpenSlide paints it transparent
        tag.overwrite(tuple(counts))
    return image


def bounds_of(slide: openslide.OpenSlide) -> tuple[int, int, int, int]:
    keys = ("x", "y", "width", "height")
    return tuple(int(slide.properties[f"openslide.bounds-{key}"]) for key in keys)


def qupath_openslide_view(path: Path) -> np.ndarray:
    """The pixels QuPath's OpenSlide server shows: level 0 cropped to the bounds (RGBA)."""
    with openslide.OpenSlide(str(path)) as slide:
        x, y, width, height = bounds_of(slide)
        return np.asarray(slide.read_region((x, y), 0, (width, height)))


def level0_view(path: Path) -> np.ndarray:
    """The pixels Bio-Formats shows: all of level 0 (RGBA; missing tiles transparent)."""
    with openslide.OpenSlide(str(path)) as slide:
        return np.asarray(slide.read_region((0, 0), 0, slide.dimensions))


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """The sparse slide and the level-0 pixels it was written from."""
    path = tmp_path_factory.mktemp("slides") / "sparse.tif"
    return path, write_sparse_slide(path)


@pytest.fixture(scope="module")
def slide(written) -> Path:
    return written[0]


@pytest.fixture(scope="module")
def server(slide, tmp_path_factory) -> ServerProcess:
    with real_server(
        tmp_path_factory.mktemp("server"), "--slide-root", str(slide.parent)
    ) as process:
        yield process


@pytest.fixture(scope="module")
def results(slide, server, tmp_path_factory) -> dict[str, Path]:
    """``fseg segment --frame F`` for both frames: {frame: the GeoJSON file}."""
    files = {}
    for frame in ("bounds", "level0"):
        out = tmp_path_factory.mktemp(frame)
        command = [sys.executable, "-m", "fseg_client", "segment", str(slide), "--out", str(out),
                   "--frame", frame, "--server", server.address, "--quiet"]  # fmt: skip
        run = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr + server.log_text()[-2000:]
        files[frame] = out / "sparse.geojson"
    return files


def document(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def union(path: Path):
    """All the polygons of a result, as one shapely geometry."""
    return shapely.union_all([shape(f["geometry"]) for f in document(path)["features"]])


def tissue_fraction(view: np.ndarray, region) -> float:
    """The fraction of pixels inside ``region`` (a shapely area, view pixels) that are tissue."""
    ys, xs = np.mgrid[0 : view.shape[0] : 4, 0 : view.shape[1] : 4]
    inside = shapely.contains_xy(region, xs + 0.5, ys + 0.5)
    pixels = view[ys[inside], xs[inside]]
    is_tissue = (pixels[:, 3] == 255) & (pixels[:, :3].min(axis=1) < 235)
    return float(is_tissue.mean())


def test_openslide_reports_the_tiles_present_as_the_bounds(slide):
    with openslide.OpenSlide(str(slide)) as opened:
        assert opened.properties["openslide.vendor"] == "generic-tiff"
        assert opened.dimensions == (WIDTH, HEIGHT)
        if "openslide.bounds-x" not in opened.properties:
            pytest.fail(
                f"OpenSlide {openslide.__library_version__} gives a sparse generic TIFF no bounds "
                "(OpenSlide 4.0 does): this slide cannot show the offset"
            )
        assert bounds_of(opened) == BOUNDS
    # QuPath crops when both sides differ from level 0 (OpenslideImageServer):
    assert BOUNDS[2] != WIDTH and BOUNDS[3] != HEIGHT


def test_missing_tiles_read_as_white_glass_and_tissue_keeps_its_colours(written):
    # OpenSlide paints an absent tile transparent black; fseg must see glass there,
    # or tissue detection and the extractor would take it for dark tissue.
    slide, truth = written
    with open_slide(slide) as fseg_slide:
        pixels = fseg_slide.read(0, 0, 0, WIDTH, HEIGHT)
    assert (level0_view(slide)[..., 3] == 0).any(), "the slide should have missing tiles"
    assert np.array_equal(pixels, truth)


def test_the_result_says_which_frame_it_is_in(results):
    bounds, level0 = document(results["bounds"])["fseg"], document(results["level0"])["fseg"]
    assert (bounds["frame"], bounds["frame_offset"]) == ("bounds", [BOUNDS[0], BOUNDS[1]])
    assert (level0["frame"], level0["frame_offset"]) == ("level0", [0, 0])


def test_bounds_frame_polygons_land_on_the_block_in_qupaths_openslide_view(slide, results):
    segmented = union(results["bounds"])
    block_in_view = translate(box(*BLOCK), -BOUNDS[0], -BOUNDS[1])
    assert segmented.intersection(block_in_view).area / segmented.union(block_in_view).area > 0.95
    assert np.allclose(segmented.bounds, block_in_view.bounds, atol=CELL)
    view = qupath_openslide_view(slide)
    assert view.shape[:2] == (BOUNDS[3], BOUNDS[2])
    assert tissue_fraction(view, segmented) > 0.97  # under the polygons: tissue
    glass = box(0, 0, BOUNDS[2], BOUNDS[3]).difference(segmented.buffer(2 * CELL))
    assert tissue_fraction(view, glass) < 0.01  # elsewhere: glass or missing tiles


def test_level0_frame_polygons_land_on_the_block_in_level0(slide, results):
    segmented = union(results["level0"])
    block = box(*BLOCK)
    assert segmented.intersection(block).area / segmented.union(block).area > 0.95
    assert np.allclose(segmented.bounds, block.bounds, atol=CELL)
    assert tissue_fraction(level0_view(slide), segmented) > 0.97


def test_the_two_frames_differ_by_exactly_the_bounds_offset(results):
    moved = translate(union(results["bounds"]), BOUNDS[0], BOUNDS[1])
    level0 = union(results["level0"])
    assert moved.symmetric_difference(level0).area < 1e-6 * level0.area


def test_both_frames_are_importable_by_qupath(results):
    assert len(check_with_jts([results["bounds"], results["level0"]])) == 2
