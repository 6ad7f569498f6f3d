"""The JTS checker itself: it accepts what QuPath imports and rejects what QuPath cannot.

Every rule of ``tests/jts/GeoJsonCheck.java`` is shown failing here on a small
GeoJSON broken in exactly one way, so a passing check on fseg's real output
(``test_qupath_geojson.py``) means something.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from jts_check import JtsViolation, check_with_jts, run_geojson_checker

SQUARE_WITH_HOLE = [
    [[0.0, 0.0], [100.0, 0.0], [100.0, 100.0], [0.0, 100.0], [0.0, 0.0]],
    [[40.0, 40.0], [40.0, 60.0], [60.0, 60.0], [60.0, 40.0], [40.0, 40.0]],
]
TRIANGLE = [[[200.0, 0.0], [300.0, 0.0], [250.0, 80.5], [200.0, 0.0]]]


def feature(name: str, color: list, geometry: dict, uuid: str) -> dict:
    return {
        "type": "Feature",
        "id": uuid,
        "geometry": geometry,
        "properties": {
            "objectType": "annotation",
            "classification": {"name": name, "color": color},
            "isLocked": False,
            "measurements": {"Area µm^2": 1234.5},
        },
    }


def valid_collection() -> dict:
    """Two classes the way fseg writes them: a MultiPolygon with a hole, and a Polygon."""
    document = {
        "type": "FeatureCollection",
        "fseg": {"frame": "bounds", "frame_offset": [0.0, 0.0]},
        "features": [
            feature(
                "F-SEG k2 #0",
                [230, 159, 0],
                {"type": "MultiPolygon", "coordinates": [SQUARE_WITH_HOLE, TRIANGLE]},
                "d6b6cd0d-9a7e-58d8-83a4-4fa43c57468b",
            ),
            feature(
                "Stroma µ",
                [0, 114, 178],
                {"type": "Polygon", "coordinates": [[[0, 200], [50, 200], [50, 250], [0, 200]]]},
                "92cf1053-0759-5936-bf5e-bf2a05330b58",
            ),
        ],
    }
    return copy.deepcopy(document)  # cases mutate it; the constants above stay intact


def write(tmp_path: Path, document: object, name: str = "case.geojson") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    return path


def test_a_valid_collection_passes_and_is_counted(tmp_path):
    [line] = check_with_jts([write(tmp_path, valid_collection())])
    assert line.endswith("case.geojson: 2 features, 3 polygons")


def test_an_array_of_features_is_accepted_like_qupath_does(tmp_path):
    [line] = check_with_jts([write(tmp_path, valid_collection()["features"])])
    assert "2 features" in line


def test_every_file_is_checked_and_the_first_bad_one_named(tmp_path):
    good = write(tmp_path, valid_collection(), "good.geojson")
    broken = valid_collection()
    broken["features"][1]["properties"]["objectType"] = "detection"
    bad = write(tmp_path, broken, "bad.geojson")
    assert len(check_with_jts([good, good])) == 2
    with pytest.raises(JtsViolation, match=r"bad\.geojson: feature 1 has objectType \"detection\""):
        check_with_jts([good, bad, good])


def _set(path: list, value: object) -> Callable[[dict], None]:
    def apply(document: dict) -> None:
        target = document
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = copy.deepcopy(value)

    return apply


def _delete(path: list) -> Callable[[dict], None]:
    def apply(document: dict) -> None:
        target = document
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return apply


FIRST = ["features", 0]
PROPS = [*FIRST, "properties"]
GEOMETRY = [*FIRST, "geometry"]
BOWTIE = {"type": "Polygon", "coordinates": [[[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]]}
# 0.004 px wide: snapped onto the 0.01 px grid it collapses to nothing.
SLIVER = {"type": "Polygon", "coordinates": [[[0, 0], [50, 0], [50, 0.004], [0, 0.004], [0, 0]]]}
# 0.016 px wide: it survives the 0.01 px grid, but with 25% more area.
THIN = {"type": "Polygon", "coordinates": [[[0, 0], [50, 0], [50, 0.016], [0, 0.016], [0, 0]]]}
UNCLOSED = {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 10]]]}
TWO_POINT_RING = {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [0, 0]]]}
# A U whose arms are 0.01 px apart far out on a large slide: valid, and still on the
# 0.01 px grid, but 32-bit floats (spacing 1/32 px there) put both arms on one line.
FAR_U = {
    "type": "Polygon",
    "coordinates": [
        [
            [300000, 0], [300010, 0], [300010, 10], [300005.01, 10], [300005.01, 2],
            [300005, 2], [300005, 10], [300000, 10], [300000, 0],
        ]
    ],
}  # fmt: skip
# Two squares of one MultiPolygon that overlap: each is fine, together invalid.
OVERLAPPING = {
    "type": "MultiPolygon",
    "coordinates": [
        [[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]],
        [[[5, 5], [15, 5], [15, 15], [5, 15], [5, 5]]],
    ],
}

BROKEN = {
    "top level is a Feature": (
        lambda d: d.update(valid_collection()["features"][0]),
        "not a FeatureCollection",
    ),
    "features missing": (_delete(["features"]), 'no "features" array'),
    "objectType detection": (_set([*PROPS, "objectType"], "detection"), 'not "annotation"'),
    "objectType missing": (_delete([*PROPS, "objectType"]), 'not "annotation"'),
    "no classification": (_delete([*PROPS, "classification"]), 'no "classification" object'),
    "classification a string": (_set([*PROPS, "classification"], "Tumour"), "classification"),
    "empty class name": (_set([*PROPS, "classification", "name"], " "), "non-empty string"),
    "two colour channels": (_set([*PROPS, "classification", "color"], [1, 2]), "three integers"),
    "colour above 255": (_set([*PROPS, "classification", "color", 2], 256), "0-255"),
    "negative colour": (_set([*PROPS, "classification", "color", 0], -1), "0-255"),
    "fractional colour": (_set([*PROPS, "classification", "color", 1], 12.5), "0-255"),
    "colour as text": (_set([*PROPS, "classification", "color", 1], "12"), "0-255"),
    "id not a uuid": (_set([*FIRST, "id"], "class-0"), "not a UUID"),
    "measurement not a number": (
        _set([*PROPS, "measurements", "Area µm^2"], "big"),
        "not a finite number",
    ),
    "no geometry": (_set(GEOMETRY, None), "no geometry"),
    "a line, not an area": (
        _set(GEOMETRY, {"type": "LineString", "coordinates": [[0, 0], [1, 1]]}),
        "Polygon or MultiPolygon",
    ),
    "coordinate as text": (
        _set([*GEOMETRY, "coordinates", 0, 0, 1, 0], "100"),
        "not a finite number",
    ),
    "position with one number": (
        _set([*GEOMETRY, "coordinates", 1, 0, 2], [250.0]),
        "fewer than two numbers",
    ),
    "self-intersecting ring": (_set(GEOMETRY, BOWTIE), "Self-intersection"),
    "overlapping parts": (_set(GEOMETRY, OVERLAPPING), "not valid"),
    "unclosed ring": (_set(GEOMETRY, UNCLOSED), "JTS cannot read the geometry"),
    "ring of two distinct points": (_set(GEOMETRY, TWO_POINT_RING), "Too few distinct points"),
    "vanishes on the 0.01 px grid": (_set(GEOMETRY, SLIVER), "vanishes on a 0.01 px grid"),
    "area changes on the 0.01 px grid": (_set(GEOMETRY, THIN), "area changes by"),
    "invalid with float coordinates": (_set(GEOMETRY, FAR_U), "32-bit float coordinates"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_each_broken_rule_fails_the_check_with_a_clear_message(tmp_path, case):
    document = valid_collection()
    mutate, message = BROKEN[case]
    mutate(document)
    path = write(tmp_path, document)
    assert check_with_jts([write(tmp_path, valid_collection(), "ok.geojson")])  # sanity
    with pytest.raises(JtsViolation) as failure:
        check_with_jts([path])
    assert message in str(failure.value)
    assert str(failure.value).startswith(f"GeoJSON check failed: {path}: ")


def test_nan_coordinates_are_refused_as_not_finite(tmp_path):
    path = tmp_path / "nan.geojson"
    path.write_text(json.dumps(valid_collection()).replace("100.0", "NaN", 1), encoding="utf-8")
    with pytest.raises(JtsViolation, match="coordinates must be finite"):
        check_with_jts([path])


def test_text_that_is_not_utf8_is_refused(tmp_path):
    path = tmp_path / "latin1.geojson"
    path.write_bytes(json.dumps(valid_collection(), ensure_ascii=False).encode("latin-1"))
    with pytest.raises(JtsViolation, match="not UTF-8"):
        check_with_jts([path])


def test_the_checker_exits_1_on_a_violation_and_2_without_files(tmp_path):
    document = valid_collection()
    document["features"][0]["geometry"] = BOWTIE
    assert run_geojson_checker([write(tmp_path, document)]).returncode == 1
    assert run_geojson_checker([]).returncode == 2
