"""Reading slides and images: formats, resolution, levels, tissue, and bad input."""

from __future__ import annotations

import dataclasses
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import shared
from fseg_server.errors import FailedPrecondition, InvalidInput, NotFound
from fseg_server.extract import extractor_spec
from fseg_server.pipeline.options import SegmentOptions
from fseg_server.pipeline.plan import plan_slide
from fseg_server.pipeline.stream import read_tile
from fseg_server.slide.reader import open_slide
from fseg_server.slide.tiles import choose_resolution, plan_tiles
from fseg_server.slide.tissue import detect_tissue, full_mask, pixels_near, restrict_to_polygons


def test_aperio_slide_reports_geometry_and_calibration(cmu_slide):
    with open_slide(cmu_slide) as slide:
        assert slide.info.dimensions == (2220, 2967)
        assert slide.info.mpp == (0.499, 0.499)
        assert slide.info.vendor == "aperio" and not slide.info.is_plain_image
        region = slide.read(0, 1000, 1000, 64, 32)
        assert region.shape == (32, 64, 3) and region.dtype == np.uint8


@pytest.mark.parametrize(
    "name", ["boxes.tiff", "boxes_0.dcm", "small.svs", "tcga-cr-7395-01a-01-ts1.svs"]
)
def test_every_shared_slide_format_opens(name):
    with open_slide(shared(f"slides/{name}")) as slide:
        thumbnail, downsample = slide.thumbnail(64)
        assert thumbnail.ndim == 3 and max(thumbnail.shape[:2]) <= 64
        assert downsample >= 1.0


def test_reads_outside_the_slide_repeat_its_edge(cmu_slide):
    with open_slide(cmu_slide) as slide:
        inside = slide.read(0, 0, 0, 8, 8)
        straddling = slide.read(0, -4, -4, 12, 12)
        assert np.array_equal(straddling[4:, 4:], inside)
        assert np.array_equal(straddling[0, 4:], inside[0])  # replicated, not black
        assert slide.read(0, -100, -100, 10, 10).shape == (10, 10, 3)


def test_plain_images_are_single_level_slides(he_like_image):
    with open_slide(he_like_image) as slide:
        assert slide.info.is_plain_image and slide.info.level_dimensions == ((300, 260),)
        assert slide.info.mpp is None
        assert slide.read(0, 290, 250, 20, 20).shape == (20, 20, 3)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])  # LA: grey plus alpha
def test_transparent_pixels_of_plain_images_read_as_white_glass(tmp_path, mode):
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., :3] = (120, 60, 150)
    rgba[:, :10, 3] = 255  # opaque tissue
    rgba[:, 10:20, 3] = 128  # half covered: halfway to white
    path = tmp_path / f"{mode}.png"  # columns 20+ stay fully transparent
    Image.fromarray(rgba, "RGBA").convert(mode).save(path)
    with open_slide(path) as slide:
        pixels = slide.read(0, 0, 0, 30, 20).astype(int)
    colour_mode = mode.removesuffix("A")  # RGB or L (grey)
    opaque = np.asarray(Image.fromarray(rgba[:, :10, :3]).convert(colour_mode).convert("RGB"))
    assert np.array_equal(pixels[:, :10], opaque)
    assert np.all(np.abs(pixels[:, 10:20] - (opaque[0, 0].astype(int) + 255) / 2) <= 1)
    assert (pixels[:, 20:] == 255).all()


def test_the_read_level_is_the_finest_not_finer_than_needed():
    info = open_slide(shared("slides/tcga-cr-7395-01a-01-ts1.svs")).info
    half = choose_resolution(info, 1.0, 0.5)  # needs downsample 2: level 1 (2.0005) serves
    assert half.level == 1 and half.scale == 1.0
    quarter = choose_resolution(info, 2.0, 0.5)
    assert quarter.level == 1 and 1.99 < quarter.scale < 2.0
    full = choose_resolution(info, 0.6, 0.5)
    assert full.level == 0 and full.scale == pytest.approx(1.2)


def test_pixel_sides_come_from_mpp_x_and_mpp_y_unless_mpp_is_given(cmu_slide):
    # Areas are px² times mpp-x times mpp-y, as QuPath measures them; --mpp is square.
    with open_slide(cmu_slide) as slide:
        info = dataclasses.replace(slide.info, mpp=(0.25, 0.3))
    assert choose_resolution(info, 1.0, None).level0_mpp_xy == (0.25, 0.3)
    assert choose_resolution(info, 1.0, 0.5).level0_mpp_xy == (0.5, 0.5)


def test_a_working_resolution_finer_than_level_0_enlarges_level_0(tmp_path):
    # A 2 µm/px image read for a 1 µm/px extractor: every level-0 pixel
    # becomes 2 x 2 target pixels, so an edge at level-0 x = 100 is at target x = 200.
    pixels = np.full((160, 240, 3), 230, np.uint8)
    pixels[:, 100:] = (120, 40, 140)
    Image.fromarray(pixels).save(tmp_path / "coarse.png")
    with open_slide(tmp_path / "coarse.png") as slide:
        resolution = choose_resolution(slide.info, 1.0, 2.0)
        assert resolution.target_downsample == 0.5 and resolution.scale == 0.5
        grid = plan_tiles(slide.info, resolution, 512, 0)
        assert (grid.width, grid.height) == (480, 320)
        tile = read_tile(slide, grid, grid.tile(0, 0))
    assert (tile[:320, 195] == 230).all()
    assert (tile[:320, 205] == (120, 40, 140)).all()


def test_a_slide_without_mpp_is_refused_naming_the_option():
    info = open_slide(shared("slides/tcga-cr-7395-01a-01-ts1.svs")).info
    assert info.mpp is None
    with pytest.raises(FailedPrecondition, match=r"no openslide.mpp-x.*pass --mpp"):
        choose_resolution(info, 1.0, None)
    with pytest.raises(InvalidInput, match="positive"):
        choose_resolution(info, 1.0, -0.25)


def test_an_implausible_level_0_resolution_is_refused_not_enlarged_for_ever(cmu_slide):
    # 72 dpi in a TIFF tag reads as 352.8 µm/px: a 1 µm/px extractor would need
    # level 0 enlarged 353 times (and the same for --mpp 40 given by mistake).
    with open_slide(shared("slides/boxes.tiff")) as slide:
        boxes = slide.info
    assert boxes.mpp is not None and boxes.mpp[0] > 300
    with pytest.raises(FailedPrecondition, match=r"metadata says .* enlarged 353 times.*--mpp"):
        choose_resolution(boxes, 1.0, None)
    with open_slide(cmu_slide) as slide:
        cmu = slide.info
    with pytest.raises(FailedPrecondition, match=r"--mpp says .* 40 µm/px.*enlarged 40 times"):
        choose_resolution(cmu, 1.0, 40.0)
    assert choose_resolution(cmu, 0.5, 2.0).scale == 0.25  # 4 times is still allowed


def test_a_working_resolution_far_coarser_than_every_level_is_refused(cmu_slide):
    # Each tile is read whole at a level first: 1000 µm/px from a single 0.5 µm/px
    # level would read 200,000-pixel squares.
    with open_slide(cmu_slide) as slide:
        cmu = slide.info
    with pytest.raises(InvalidInput, match=r"no level near 1000 µm/px.*finer --target-mpp"):
        choose_resolution(cmu, 1000.0, None)
    assert choose_resolution(cmu, 7.9, None).scale < 16


def test_uncalibrated_plain_images_keep_their_pixels(he_like_image):
    resolution = choose_resolution(open_slide(he_like_image).info, 1.0, None)
    assert (resolution.mpp, resolution.target_downsample, resolution.scale) == (None, 1.0, 1.0)


def test_tiles_cover_the_slide_with_margins(cmu_slide):
    info = open_slide(cmu_slide).info
    grid = plan_tiles(info, choose_resolution(info, 1.0, None), 512, 32)
    assert grid.width == 1108 and grid.height == 1481  # 0.499 -> 1.0 µm/px: 2220 / 2.004
    assert (grid.rows, grid.cols) == (3, 3)
    tile = grid.tile(1, 2)
    assert (tile.core_x, tile.core_y) == (1024, 512)
    assert tile.source_x == pytest.approx((1024 - 32) * grid.resolution.scale)
    left, top, width, height = tile.read_box()
    assert left <= tile.source_x and left + width >= tile.source_x + tile.source_w
    assert top <= tile.source_y and top + height >= tile.source_y + tile.source_h


def test_tissue_detection_finds_tissue_and_leaves_glass(cmu_slide):
    with open_slide(cmu_slide) as slide:
        thumbnail, downsample = slide.thumbnail(600)
    tissue = detect_tissue(thumbnail, downsample, 0.499)
    assert 0.25 < tissue.fraction < 0.5  # a strip of skin on mostly empty glass
    assert not tissue.mask[:20, :20].any()  # the top-left corner is glass
    bright = thumbnail.mean(axis=2) > 235
    assert (tissue.mask & bright).sum() < 0.05 * tissue.mask.sum()


@pytest.mark.parametrize(
    "content,error,message",
    [
        (b"", InvalidInput, "is empty"),
        (
            b"this is a text file, not a slide\n" * 20,
            InvalidInput,
            "not a slide OpenSlide can read",
        ),
        (
            bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
            InvalidInput,
            "not a slide OpenSlide can read",
        ),
    ],
)
def test_files_that_are_not_slides_get_one_sentence(tmp_path, content, error, message):
    path = tmp_path / "slide.svs"
    path.write_bytes(content)
    with pytest.raises(error, match=message):
        open_slide(path)


def test_a_truncated_slide_is_refused(tmp_path, cmu_slide):
    path = tmp_path / "truncated.svs"
    path.write_bytes(cmu_slide.read_bytes()[:200_000])
    with pytest.raises(InvalidInput, match="damaged, truncated"), open_slide(path) as slide:
        slide.thumbnail(256)
        slide.read(0, 0, 0, 2220, 2967)


def test_missing_and_directory_paths(tmp_path):
    with pytest.raises(NotFound):
        open_slide(tmp_path / "absent.svs")
    with pytest.raises(InvalidInput, match="not a file"):
        open_slide(tmp_path)


def test_a_16_bit_multichannel_image_is_refused_as_not_brightfield(tmp_path):
    path = tmp_path / "fluorescence.tif"
    Image.fromarray(np.zeros((32, 32), np.uint16)).save(path)
    with pytest.raises(FailedPrecondition, match=r"is a 16-bit greyscale image; .* brightfield"):
        open_slide(path)


# Plain (Pillow) and tiled (OpenSlide's generic TIFF) files; BigTIFF in both byte orders.
SIXTEEN_BIT_LAYOUTS = [
    pytest.param({}, "image", id="plain"),
    pytest.param({"compression": "zlib"}, "image", id="plain-deflate"),
    pytest.param({"tile": (64, 64)}, "generic-tiff", id="tiled"),
    pytest.param({"tile": (64, 64), "bigtiff": True}, "generic-tiff", id="bigtiff"),
    pytest.param(
        {"tile": (64, 64), "bigtiff": True, "byteorder": ">"}, "generic-tiff", id="bigtiff-msb"
    ),
]


@pytest.mark.parametrize("layout,vendor", SIXTEEN_BIT_LAYOUTS)
def test_a_16_bit_rgb_tiff_reads_as_its_full_range_in_8_bits_and_says_it_had_16(
    tmp_path, he_like_image, layout, vendor
):
    """Its 8-bit self times 257 (65,535 / 255) reads back as that 8-bit self, and the
    slide says the file stored 16 bits, for the summary to warn."""
    import tifffile

    rgb = np.asarray(Image.open(he_like_image).convert("RGB"))
    path = tmp_path / "deep.tif"
    tifffile.imwrite(path, rgb.astype(np.uint16) * 257, photometric="rgb", **layout)
    with open_slide(path) as slide:
        assert (slide.info.vendor, slide.info.bits_per_channel) == (vendor, 16)
        assert np.array_equal(slide.read(0, 0, 0, rgb.shape[1], rgb.shape[0]), rgb)
    tifffile.imwrite(path, rgb, photometric="rgb", **layout)
    with open_slide(path) as slide:
        assert slide.info.bits_per_channel == 8


def test_a_16_bit_rgb_png_says_it_had_16_bits(tmp_path, he_like_image):
    import imagecodecs

    rgb = np.asarray(Image.open(he_like_image).convert("RGB"))
    path = tmp_path / "deep.png"
    path.write_bytes(imagecodecs.png_encode(rgb.astype(np.uint16) * 257))
    with open_slide(path) as slide:
        assert slide.info.bits_per_channel == 16
        assert np.array_equal(slide.read(0, 0, 0, rgb.shape[1], rgb.shape[0]), rgb)


def test_the_shared_slides_store_8_bits(cmu_slide):
    with open_slide(cmu_slide) as slide:
        assert slide.info.bits_per_channel == 8


def test_zero_size_images_are_refused(tmp_path: Path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(InvalidInput):
        open_slide(path)


def test_random_bytes_named_like_an_image_are_refused(tmp_path):
    path = tmp_path / "picture.png"
    path.write_bytes(bytes(np.random.default_rng(1).integers(0, 256, 2048, dtype=np.uint8)))
    with pytest.raises(InvalidInput, match="neither a slide OpenSlide can read nor an image"):
        open_slide(path)


def test_a_roi_island_inside_a_rings_hole_is_kept_whatever_the_order():
    from shapely.geometry import Polygon, box

    ring = Polygon(box(0, 0, 400, 400).exterior, [box(100, 100, 300, 300).exterior])
    island = box(150, 150, 250, 250)
    tissue = full_mask((400, 400), 4.0)  # 4 level-0 px per mask pixel
    ring_first = restrict_to_polygons(tissue, [ring, island]).mask
    island_first = restrict_to_polygons(tissue, [island, ring]).mask
    assert (ring_first == island_first).all()
    assert ring_first[5, 5] and ring_first[50, 50]  # the ring and the island
    assert not ring_first[30, 30]  # the hole around the island
    # Pixels an edge passes through are kept: the hole (mask x 25 to 75) loses a row
    # on each side, 48 pixels across; the island (37.5 to 62.5) cuts pixels 37 and 62
    # in half, so 26 pixels across are touched.
    expected = 100 * 100 - 48 * 48 + 26 * 26
    assert abs(int(ring_first.sum()) - expected) < 0.02 * expected


def test_every_mask_pixel_an_roi_touches_is_kept():
    # The ROI's edge is applied to the polygons exactly; the coarse mask must not
    # lose tissue the ROI covers a little of. Box 0-5 px at 4 px per mask pixel
    # covers pixel (0, 0) and slivers of three more.
    from shapely.geometry import box

    tissue = full_mask((40, 40), 4.0)
    kept = restrict_to_polygons(tissue, [box(0, 0, 5, 5)]).mask
    assert kept[:2, :2].all() and int(kept.sum()) == 4
    # Grown by a reach of 4 px, the ROI reaches one pixel further, except diagonally:
    # pixel (2, 2) starts at (8, 8), 4.24 px from the box's corner.
    grown = restrict_to_polygons(tissue, [box(0, 0, 5, 5)], reach=4.0).mask
    assert grown[:3, :3].sum() == 8 and not grown[2, 2] and int(grown.sum()) == 8


def test_pixels_near_keeps_every_pixel_a_polygon_touches_and_little_else():
    # Random convex polygons on a grid of 8.016-px pixels (a stain cell at 0.499 µm/px).
    import shapely

    rng = np.random.default_rng(0)
    size, d = 40, 8.016
    rows, cols = np.mgrid[0:size, 0:size]
    pixels = shapely.box(cols * d, rows * d, (cols + 1) * d, (rows + 1) * d)
    for _ in range(50):
        polygon = shapely.MultiPoint(rng.uniform(10, 300, (6, 2))).convex_hull
        near = pixels_near((size, size), d, [polygon])
        touched = shapely.area(shapely.intersection(pixels, polygon)) > 1e-9
        assert not (touched & ~near).any()
        # The extra ones lie within half a pixel's diagonal of the polygon.
        assert (shapely.distance(pixels[near & ~touched], polygon) <= d * 0.71).all()


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG's signature and IHDR (8-bit RGB, width x height) and IEND, no pixel data:
    what its header declares is all a reader may look at before decoding."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


def test_a_plain_image_too_large_to_decode_is_refused_from_its_header(tmp_path):
    path = png_header_only(tmp_path / "huge.png", 50_000, 50_000)
    with pytest.raises(InvalidInput, match=r"50,000 x 50,000 px plain image \(2,500 Mpx\)"):
        open_slide(path)


def test_a_plain_image_at_the_limit_is_not_refused_for_its_size(tmp_path):
    # 10,000 x 10,000 px is allowed: this header-only file then fails as undecodable.
    path = png_header_only(tmp_path / "large.png", 10_000, 10_000)
    with pytest.raises(InvalidInput, match="neither a slide OpenSlide can read nor an image"):
        open_slide(path)


def test_an_image_declaring_billions_of_pixels_gets_the_same_sentence(tmp_path):
    path = png_header_only(tmp_path / "bomb.png", 100_000, 100_000)  # 10 Gpx
    with pytest.raises(InvalidInput, match=r"100,000 x 100,000 px plain image"):
        open_slide(path)


def test_a_slide_larger_than_any_glass_slide_is_refused_before_planning():
    # CMU-1-Small-Region is 2,220 px wide: at 100 µm/px it would span 222 mm.
    expected = r"222 x \d+ mm, larger than any glass slide"
    with (
        open_slide(shared("slides/CMU-1-Small-Region.svs")) as slide,
        pytest.raises(InvalidInput, match=expected),
    ):
        plan_slide(
            slide, extractor_spec("stain"), None, SegmentOptions(slide_mpp=100.0, target_mpp=100.0)
        )
