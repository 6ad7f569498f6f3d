"""The whole-slide pipeline on real H&E: valid, non-overlapping polygons that cover the tissue,
no seams between tiles, and the outputs a user relies on.

Runs the pipeline in-process (the same code the server runs) on the shared
CMU-1-Small-Region.svs (Aperio, 0.499 µm/px).
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
from types import SimpleNamespace

import numpy as np
import pytest
import shapely
import torch
from PIL import Image
from shapely.geometry import shape

from conftest import shared
from fseg_server.errors import Cancelled
from fseg_server.extract import create_extractor
from fseg_server.pipeline.device_worker import DeviceWorker
from fseg_server.pipeline.options import SegmentOptions, TissueDetection
from fseg_server.pipeline.plan import plan_slide
from fseg_server.pipeline.seams import measure_seams
from fseg_server.pipeline.segment import fit_on_slide, segment_slide
from fseg_server.pipeline.summary import warnings_for
from fseg_server.slide.reader import open_slide
from fseg_server.vectorize import label_polygons


@pytest.fixture(scope="module")
def engine():
    extractor = create_extractor("stain")
    with DeviceWorker(torch.device("cpu")) as worker:
        yield extractor, worker


@pytest.fixture(scope="module")
def cmu(engine):
    extractor, worker = engine
    with open_slide(shared("slides/CMU-1-Small-Region.svs")) as slide:
        bank = fit_on_slide(
            slide, extractor, SegmentOptions(), worker, lambda *a: None, lambda: False
        )
        result = segment_slide(slide, extractor, bank, SegmentOptions(), worker)
        plan = plan_slide(slide, extractor.spec, bank.mpp, SegmentOptions())
    return result, plan, bank


def geometries(result) -> dict[str, shapely.Geometry]:
    collection = json.loads(result.files["geojson"])
    return {
        f["properties"]["classification"]["name"]: shape(f["geometry"])
        for f in collection["features"]
    }


def test_every_geometry_parses_and_is_valid(cmu):
    result, _, _ = cmu
    shapes = geometries(result)
    assert len(shapes) >= 4
    assert all(g.is_valid and not g.is_empty for g in shapes.values())


def test_classes_do_not_overlap(cmu):
    result, _, _ = cmu
    for (a, ga), (b, gb) in itertools.combinations(geometries(result).items(), 2):
        overlap = ga.intersection(gb).area
        assert overlap < 1e-3 * min(ga.area, gb.area), (a, b, overlap)


def test_polygons_cover_the_detected_tissue_within_two_percent(cmu):
    result, plan, _ = cmu
    union = shapely.union_all(list(geometries(result).values()))
    mask = plan.tissue
    tissue = shapely.union_all(label_polygons(mask.mask.astype(np.uint8), nodata=0)[1])
    tissue = shapely.affinity.scale(tissue, mask.downsample, mask.downsample, origin=(0, 0))
    assert union.symmetric_difference(tissue).area < 0.02 * tissue.area


def test_features_follow_qupath_import_rules(cmu):
    result, _, bank = cmu
    collection = json.loads(result.files["geojson"])
    assert collection["type"] == "FeatureCollection"
    assert collection["fseg"]["frame"] == "bounds" and collection["fseg"]["extractor"] == "stain"
    names = {c.name: list(c.color) for c in bank.classes[8]}
    for feature in collection["features"]:
        properties = feature["properties"]
        assert properties["objectType"] == "annotation"
        assert names[properties["classification"]["name"]] == properties["classification"]["color"]
        assert properties["measurements"]["Area µm^2"] > 0
        assert properties["fseg"]["k"] == 8 and properties["fseg"]["mode"] == "project"


def test_summary_reports_areas_tiles_resolution_and_timings(cmu):
    result, plan, _ = cmu
    summary = result.summary
    fractions = [c["fraction_of_tissue"] for c in summary["classes"]]
    assert sum(fractions) == pytest.approx(1.0)
    assert summary["mpp"] == 0.499 and summary["working_mpp"] == 1.0  # not 0.9999999999999999
    tiles = summary["tiles"]
    assert tiles["processed"] == len(plan.tiles) > 0
    assert tiles["model_px"] == sum(t.input_w * t.input_h for t in plan.tiles)
    assert tiles["tissue_px"] > 0
    assert tiles["model_px_per_tissue_px"] == pytest.approx(
        tiles["model_px"] / tiles["tissue_px"], rel=1e-3
    )
    stages = ("plan", "stream", "vectorize", "render", "extract", "factorize")
    for stage in (*stages, "total"):
        assert summary["timings_s"][stage] >= 0
    tissue_um2 = summary["tissue"]["area_um2"]
    assert sum(c["label_grid_area_um2"] for c in summary["classes"]) == pytest.approx(tissue_um2)
    # The polygons merge regions under --min-area and drop tissue islands that small.
    assert sum(c["area_um2"] for c in summary["classes"]) == pytest.approx(tissue_um2, rel=0.01)


def test_the_label_png_is_the_grid_the_summary_describes(cmu):
    result, _, _ = cmu
    labels = result.summary["labels"]
    image = Image.open(io.BytesIO(result.files["labels.png"]))
    assert image.mode == "P" and image.size == (labels["width"], labels["height"])
    assert labels["width"] * labels["downsample"] == pytest.approx(2220, abs=labels["downsample"])
    values = set(np.unique(np.asarray(image)).tolist())
    assert values <= set(range(8)) | {255}
    overlay = Image.open(io.BytesIO(result.files["overlay.png"]))
    assert overlay.mode == "RGB" and max(overlay.size) <= 1536


def test_an_roi_restricts_the_work_to_its_polygon(engine, cmu):
    extractor, worker = engine
    whole, _, bank = cmu
    roi = shapely.box(600, 900, 1400, 1900)  # level-0 px, bounds frame (CMU has no bounds)
    with open_slide(shared("slides/CMU-1-Small-Region.svs")) as slide:
        result = segment_slide(slide, extractor, bank, SegmentOptions(roi=(roi,)), worker)
    union = shapely.union_all(list(geometries(result).values()))
    # Cut at the ROI's edge exactly (up to the 1/1000 px rounding of the GeoJSON),
    # so that QuPath's region import adds nothing outside the region ...
    assert union.difference(roi).area < 1e-6 * roi.area
    # ... and covering what the whole-slide run found inside it, edge cells included.
    inside_whole = shapely.union_all(list(geometries(whole).values())).intersection(roi)
    assert union.area == pytest.approx(inside_whole.area, rel=0.02)
    assert union.area > 0.2 * roi.area
    # labels.png holds the cells the ROI touches (and a few within a fraction of a cell).
    labels = np.asarray(Image.open(io.BytesIO(result.files["labels.png"])))
    cell = result.summary["labels"]["downsample"]
    rows, cols = np.nonzero(labels != 255)
    cells = shapely.box(cols * cell, rows * cell, (cols + 1) * cell, (rows + 1) * cell)
    assert shapely.distance(cells, roi).max() <= 0.25 * cell
    # The tissue measured is the tissue inside the ROI, not the edge cells reaching past it.
    tissue_um2 = result.summary["tissue"]["area_um2"]
    assert tissue_um2 == pytest.approx(union.area * result.summary["mpp"] ** 2, rel=0.01)
    assert tissue_um2 < 0.5 * whole.summary["tissue"]["area_um2"]


def test_polygons_stop_at_the_edge_of_the_image(engine, cmu):
    # At 1 µm/px a 4-px stain cell is 8.016 level-0 px of this 0.499 µm/px scan, which
    # does not divide its 2220 x 2967 px: the last cells reach past the image.
    extractor, worker = engine
    _, _, bank = cmu
    options = SegmentOptions(tissue=TissueDetection.OFF)
    with open_slide(shared("slides/CMU-1-Small-Region.svs")) as slide:
        result = segment_slide(slide, extractor, bank, options, worker)
    image = shapely.box(0, 0, 2220, 2967)
    union = shapely.union_all(list(geometries(result).values()))
    assert union.difference(image).area < 1e-6 * image.area
    assert union.area > 0.99 * image.area


@pytest.fixture(scope="module")
def split(engine, cmu):
    """CMU with one feature per region, no simplification, --min-area 200."""
    extractor, worker = engine
    _, _, bank = cmu
    options = SegmentOptions(split_regions=True, simplify=0.0, min_area_um2=200.0)
    with open_slide(shared("slides/CMU-1-Small-Region.svs")) as slide:
        return segment_slide(slide, extractor, bank, options, worker)


def test_no_region_under_min_area_survives(split):
    # 200 µm² is 12.4 cells of 4.016 x 4.016 µm: a 12-cell region is under it and goes.
    features = json.loads(split.files["geojson"])["features"]
    # Also none that the image's edge cut down: a cut sliver joins its neighbour.
    areas = [f["properties"]["measurements"]["Area µm^2"] for f in features]
    assert len(areas) > 10 and min(areas) >= 200.0


def test_split_regions_gives_one_valid_feature_per_region(split):
    features = json.loads(split.files["geojson"])["features"]
    assert len(features) == sum(c["regions"] for c in split.summary["classes"])
    assert all(shape(f["geometry"]).geom_type == "Polygon" for f in features)


def test_tiles_with_context_margins_leave_no_seams(engine, cmu):
    """Label disagreement with a whole-slide reference is no higher along region borders
    than inside, with the default margin; without a margin the same measure shows seams.
    Region sides that face only glass get one block of context, and the tissue's edge
    keeps the reference's labels there too."""
    extractor, worker = engine
    _, _, bank = cmu
    options = SegmentOptions(min_area_um2=0)
    with open_slide(shared("slides/CMU-1-Small-Region.svs")) as slide:
        margin = extractor.spec.margin
        with_context = measure_seams(
            slide, extractor, bank, options, worker, tile_size=256, margin=margin
        )
        without = measure_seams(slide, extractor, bank, options, worker, tile_size=256, margin=0)
    assert with_context.border_pixels > 1000 and with_context.interior_pixels > 1000
    # No seam: at most a stray pixel or two where two classes tie to float precision
    # (features of a small region and of the whole slide round differently).
    assert with_context.border_disagreement <= with_context.interior_disagreement + 5e-4
    assert without.border_disagreement > 20 * max(with_context.border_disagreement, 1e-3)
    assert with_context.glass_edge_pixels > 100
    assert with_context.glass_edge_disagreement < 0.01


def test_a_coarser_pyramid_level_is_read_when_it_serves(engine, cmu):
    extractor, worker = engine
    _, _, bank = cmu
    with open_slide(shared("slides/tcga-cr-7395-01a-01-ts1.svs")) as slide:
        options = SegmentOptions(slide_mpp=0.25)  # 1 µm/px wanted: downsample 4, level 1 is 2
        result = segment_slide(slide, extractor, bank, options, worker)
    assert result.summary["level_read"] == 1


def test_the_summarys_class_areas_are_those_of_the_geojson(cmu):
    """What the summary (and the batch CSV) reports is what QuPath imports."""
    result, _, _ = cmu
    features = json.loads(result.files["geojson"])["features"]
    imported = {f["properties"]["classification"]["name"]: f for f in features}
    for entry in result.summary["classes"]:
        feature = imported.get(entry["name"])
        geojson_area = feature["properties"]["measurements"]["Area µm^2"] if feature else 0.0
        assert entry["area_um2"] == pytest.approx(geojson_area, rel=1e-6, abs=1e-6)
    assert sum(c["fraction_of_tissue"] for c in result.summary["classes"]) == pytest.approx(1.0)


def test_a_slide_without_tissue_says_so(engine, cmu, tmp_path):
    # Empty outputs are a correct answer for glass, but never a silent one.
    extractor, worker = engine
    _, _, bank = cmu
    glass = tmp_path / "glass.png"
    Image.fromarray(np.full((600, 600, 3), 245, np.uint8)).save(glass)
    options = SegmentOptions(tissue=TissueDetection.ON)
    with open_slide(glass) as slide:
        result = segment_slide(slide, extractor, bank, options, worker)
    assert json.loads(result.files["geojson"])["features"] == []
    assert result.summary["warnings"] == [
        "no tissue was found, so the outputs hold no class; for an image that is all tissue, "
        "pass --tissue off"
    ]


def test_a_16_bit_image_is_segmented_as_its_8_bit_self_with_a_warning(engine, he_like_image):
    """16-bit RGB is read at its full range in 8 bits (not refused), and never silently."""
    import tifffile

    extractor, worker = engine
    rgb = np.asarray(Image.open(he_like_image).convert("RGB"))
    shallow, deep = he_like_image.with_suffix(".8.tif"), he_like_image.with_suffix(".16.tif")
    tifffile.imwrite(shallow, rgb, photometric="rgb")
    tifffile.imwrite(deep, rgb.astype(np.uint16) * 257, photometric="rgb")
    results = []
    for path in (shallow, deep):
        with open_slide(path) as slide:
            bank = fit_on_slide(
                slide, extractor, SegmentOptions(), worker, lambda *a: None, lambda: False
            )
            results.append(segment_slide(slide, extractor, bank, SegmentOptions(), worker))
    eight, sixteen = results
    assert sixteen.files["labels.png"] == eight.files["labels.png"]
    assert eight.summary["warnings"] == []
    assert sixteen.summary["warnings"] == [
        "the image stores 16 bits per colour channel and was read as 8-bit RGB, its full range "
        "(0 to 65,535) mapped onto 0 to 255, as the models see 8-bit images; an image whose "
        "values fill only part of that range (12-bit camera data, say) was read darker than "
        "it is, so rescale it to the full range first"
    ]


def test_an_mpp_unlike_either_side_of_the_slides_own_is_a_warning():
    # A scanner may record 0.25 x 0.3 µm; a manifest's 0.25 matches x but not y. The
    # warning reads only the slide's info, so a stand-in slide carries CMU's, re-calibrated.
    with open_slide(shared("slides/CMU-1-Small-Region.svs")) as cmu_slide:
        info = cmu_slide.info
    slide = SimpleNamespace(info=dataclasses.replace(info, mpp=(0.25, 0.3)))
    options = SegmentOptions(slide_mpp=0.25, slide_mpp_from="the manifest's mpp")
    assert warnings_for(slide, options, tissue_found=True) == [
        "the manifest's mpp 0.25 µm/px overrides the 0.25 x 0.3 µm/px the slide records; "
        "areas and the working resolution follow the value given"
    ]
    square = SimpleNamespace(info=dataclasses.replace(info, mpp=(0.2502, 0.2498)))
    assert warnings_for(square, options, tissue_found=True) == []  # within 1%


def test_a_job_cancelled_while_vectorizing_stops_before_its_outputs(engine, cmu) -> None:
    """Vectorizing a large slide takes seconds; a cancelled job does not finish it."""
    extractor, worker = engine
    _, _, bank = cmu
    asked = []

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "vectorize":
            asked.append(stage)  # the labels are streamed: cancel now

    cmu_slide = open_slide(shared("slides/CMU-1-Small-Region.svs"))
    with cmu_slide as slide, pytest.raises(Cancelled, match="vectorized"):
        segment_slide(
            slide, extractor, bank, SegmentOptions(), worker,
            progress=progress, should_stop=lambda: bool(asked),
        )  # fmt: skip
