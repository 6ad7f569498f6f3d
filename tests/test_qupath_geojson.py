"""fseg's GeoJSON, made by the real client and server, is what QuPath imports.

Every file here comes from ``fseg segment`` (the command a QuPath script runs)
against a real fseg server, on the shared slide and annotated patches, with one
feature per class and with one feature per region, and restricted to a region
of interest. Each file must pass the JTS checker (``tests/jts/GeoJsonCheck.java``):
QuPath's import rules, valid geometry, and still valid on QuPath 0.6's 0.01 px grid.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import shapely
from jts_check import check_with_jts
from shapely.geometry import Polygon, mapping, shape
from test_e2e_support import real_server

from conftest import shared
from servers import ServerProcess

pytestmark = pytest.mark.slow

PATCHES = ("00", "01", "02", "03")


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> ServerProcess:
    """One fseg server for the module, reading the shared slides and patches in place."""
    slides = shared("slides/CMU-1-Small-Region.svs").parent
    patches = shared("wsss4luad-val/images/00.png").parent
    with real_server(
        tmp_path_factory.mktemp("server"), "--slide-root", str(slides), "--slide-root", str(patches)
    ) as process:
        yield process


def segment(server: ServerProcess, out: Path, *arguments: str) -> list[Path]:
    """``fseg segment ARGUMENTS --out OUT --server ...``; returns the GeoJSON files written."""
    command = [sys.executable, "-m", "fseg_client", "segment", *arguments, "--out", str(out)]
    command += ["--server", server.address, "--quiet"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr + server.log_text()[-2000:]
    return sorted(out.glob("*.geojson"))


def features(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["features"]


def test_one_feature_per_class_on_a_whole_slide_is_importable(server, tmp_path):
    [geojson] = segment(server, tmp_path, str(shared("slides/CMU-1-Small-Region.svs")))
    [line] = check_with_jts([geojson])
    items = features(geojson)
    names = [f["properties"]["classification"]["name"] for f in items]
    assert len(names) == len(set(names)) >= 2  # one feature per class, several classes
    assert f"{len(items)} features" in line
    assert json.loads(geojson.read_text(encoding="utf-8"))["fseg"]["frame"] == "bounds"


def test_one_feature_per_region_is_importable(server, tmp_path):
    slide = str(shared("slides/CMU-1-Small-Region.svs"))
    [geojson] = segment(server, tmp_path, slide, "--split-regions")
    check_with_jts([geojson])
    items = features(geojson)
    classes = {f["properties"]["classification"]["name"] for f in items}
    assert len(items) > len(classes)
    assert {f["geometry"]["type"] for f in items} == {"Polygon"}


@pytest.mark.parametrize("split", [False, True], ids=["per-class", "per-region"])
def test_annotated_patches_are_importable(server, tmp_path, split):
    images = [str(shared(f"wsss4luad-val/images/{name}.png")) for name in PATCHES]
    files = segment(server, tmp_path, *images, *(["--split-regions"] if split else []))
    assert [f.stem for f in files] == list(PATCHES)
    assert len(check_with_jts(files)) == len(PATCHES)


def test_a_region_of_interest_result_is_importable_and_stays_inside_it(server, tmp_path):
    # A pentagon over part of the tissue, as fseg_segment.groovy writes the
    # union of the selected annotations (this slide has no bounds: both frames agree).
    roi = Polygon([(150, 950), (1300, 900), (1450, 1700), (900, 2300), (200, 1900)])
    roi_file = tmp_path / "roi.geojson"
    roi_file.write_text(json.dumps(mapping(shapely.MultiPolygon([roi]))))
    slide = str(shared("slides/CMU-1-Small-Region.svs"))
    [geojson] = segment(server, tmp_path / "out", slide, "--roi", str(roi_file))
    check_with_jts([geojson])
    segmented = shapely.union_all([shape(f["geometry"]) for f in features(geojson)])
    assert segmented.area > 0.2 * roi.area  # tissue was found inside the region
    # Polygons follow label cells (about 8 px here): nothing beyond a cell or two.
    assert segmented.difference(roi.buffer(20)).area < 1e-6 * roi.area
