"""Polygons -> QuPath GeoJSON: structure, properties, areas, rounding, serialisation."""

from __future__ import annotations

import json
import math
import uuid

import numpy as np
import pytest
import shapely
from scipy import ndimage
from shapely.geometry import Polygon, box, shape

from fseg_server.vectorize import (
    dumps,
    feature_collection,
    feature_collection_json,
    vectorize_labels,
)

CLASSES = [("Tumour", (200, 0, 0)), ("Stroma", (0, 150, 0)), ("Fat µ", (10, 20, 250))]
META = {
    "extractor": "uni2",
    "bank": "default",
    "k": 3,
    "mode": "factorize",
    "mpp": 0.25,
    "frame": {"level": 0, "cell_size": [16.0, 16.0], "origin": [-32.0, 8.0]},
}


@pytest.fixture(scope="module")
def polygons() -> dict[int, list[Polygon]]:
    """Class 0 in several pieces, class 1 in one, class 2 absent; glass around."""
    rng = np.random.default_rng(0)
    fields = ndimage.gaussian_filter(rng.standard_normal((2, 30, 40)), (0, 2.5, 2.5))
    grid = fields.argmax(axis=0).astype(np.uint8)
    grid[:, :3] = 255
    out = vectorize_labels(grid, cell_size=16.0, origin=(-32.0, 8.0))
    assert len(out[0]) > 1
    out[1] = [max(out[1], key=lambda p: p.area)]
    return out


def test_one_feature_per_non_empty_class(polygons):
    fc = feature_collection({**polygons, 2: []}, CLASSES, mpp=0.25, metadata=META)
    assert fc["type"] == "FeatureCollection"
    assert fc["fseg"] == META and fc["fseg"] is not META
    names = [f["properties"]["classification"]["name"] for f in fc["features"]]
    assert names == ["Tumour", "Stroma"]  # class 2 has no polygon: omitted
    kinds = [f["geometry"]["type"] for f in fc["features"]]
    assert kinds == ["MultiPolygon", "Polygon"]
    assert len(fc["features"][0]["geometry"]["coordinates"]) == len(polygons[0])


def test_feature_properties_follow_qupath_conventions(polygons):
    fc = feature_collection(polygons, CLASSES, mpp=0.25, metadata=META)
    ids = [f["id"] for f in fc["features"]]
    assert len(set(ids)) == len(ids)
    for index, feature in zip([0, 1], fc["features"], strict=True):
        assert feature["type"] == "Feature"
        assert uuid.UUID(feature["id"]).version == 5
        props = feature["properties"]
        assert props["objectType"] == "annotation"
        assert props["isLocked"] is False
        name, color = CLASSES[index]
        assert props["classification"] == {"name": name, "color": list(color)}
        assert all(type(c) is int for c in props["classification"]["color"])
        area_px2 = sum(p.area for p in polygons[index])
        assert props["measurements"] == {"Area µm^2": pytest.approx(area_px2 * 0.25**2)}
        assert props["fseg"] == {**META, "class_index": index}


def test_area_in_px2_without_mpp(polygons):
    fc = feature_collection(polygons, CLASSES, mpp=None, metadata={})
    measurements = fc["features"][1]["properties"]["measurements"]
    assert measurements == {"Area px^2": pytest.approx(polygons[1][0].area)}


def test_split_regions_gives_one_polygon_feature_per_polygon(polygons):
    fc = feature_collection(polygons, CLASSES, mpp=0.5, split_regions=True, metadata=META)
    assert len(fc["features"]) == len(polygons[0]) + len(polygons[1])
    assert {f["geometry"]["type"] for f in fc["features"]} == {"Polygon"}
    tumour = [f for f in fc["features"] if f["properties"]["fseg"]["class_index"] == 0]
    areas = sorted(f["properties"]["measurements"]["Area µm^2"] for f in tumour)
    assert areas == pytest.approx(sorted(p.area * 0.25 for p in polygons[0]))


def test_dumps_round_trips_and_geometries_are_valid(polygons):
    fc = feature_collection(polygons, CLASSES, mpp=0.25, metadata=META)
    raw = dumps(fc)
    assert isinstance(raw, bytes)
    assert "µ".encode() in raw and b"\\u00b5" not in raw  # UTF-8, not escaped
    assert b": " not in raw and b", " not in raw  # compact
    assert json.loads(raw) == fc
    geoms = [shape(f["geometry"]) for f in json.loads(raw)["features"]]
    assert all(g.is_valid for g in geoms)
    # Shared edges survive rounding: the classes still form a valid coverage.
    parts = np.concatenate([shapely.get_parts(g) for g in geoms])
    assert shapely.coverage_is_valid(parts)
    assert shapely.union_all(parts).area == pytest.approx(
        sum(p.area for v in polygons.values() for p in v), rel=1e-9
    )


def positions(coordinates: list) -> list[list[float]]:
    """All [x, y] positions of a Polygon or MultiPolygon coordinate list."""
    if isinstance(coordinates[0], float):
        return [coordinates]
    return [xy for part in coordinates for xy in positions(part)]


def test_coordinates_are_plain_finite_rounded_floats(polygons):
    odd = {**polygons, 2: [box(0.1234567, -3.0000004, 1.98765432, 1)]}
    fc = feature_collection(odd, CLASSES, mpp=0.25, metadata=META)
    xy = [p for f in fc["features"] for p in positions(f["geometry"]["coordinates"])]
    assert len(xy) == sum(shapely.get_num_coordinates(p) for v in odd.values() for p in v)
    for x, y in xy:
        assert type(x) is float and type(y) is float
        assert math.isfinite(x) and math.isfinite(y)
        assert round(x, 3) == x and round(y, 3) == y
    assert {(0.123, -3.0), (1.988, 1.0)} <= {tuple(p) for p in xy}


def test_exteriors_are_counter_clockwise(polygons):
    fc = feature_collection(polygons, CLASSES, mpp=0.25, metadata=META)
    ring = fc["features"][1]["geometry"]["coordinates"][0]
    assert shapely.is_ccw(shapely.linearrings(ring))


def test_validates_with_the_geojson_package(polygons):
    geojson = pytest.importorskip("geojson")
    fc = feature_collection(polygons, CLASSES, mpp=0.25, split_regions=True, metadata=META)
    obj = geojson.loads(dumps(fc).decode("utf-8"))
    assert obj.is_valid, obj.errors()


def test_rounding_that_would_break_validity_keeps_full_precision():
    # Rounding would drop the notch vertex onto the bottom edge: a self-touching ring.
    notch = Polygon([(0, 0), (1, 0), (1, 1), (0.5, 0.0004), (0, 1)])
    neighbour = box(1, 0, 2, 1)
    assert notch.is_valid
    fc = feature_collection({0: [notch], 1: [neighbour]}, CLASSES, mpp=None, metadata={})
    coords = [tuple(xy) for f in fc["features"] for xy in f["geometry"]["coordinates"][0]]
    assert (0.5, 0.0004) in coords
    assert all(shape(f["geometry"]).is_valid for f in fc["features"])


def test_areas_use_both_pixel_sides_as_qupath_does():
    # A scanner may record mpp-x 0.25 and mpp-y 0.3: a 10 x 10 px square is 7.5 µm².
    square = {0: [box(0, 0, 10, 10)]}
    fc = feature_collection(square, CLASSES, mpp=(0.25, 0.3), metadata={})
    assert fc["features"][0]["properties"]["measurements"]["Area µm^2"] == pytest.approx(7.5)
    with pytest.raises(ValueError, match="positive"):
        feature_collection(square, CLASSES, mpp=(0.25, 0.0), metadata={})


def test_bad_inputs_are_rejected(polygons):
    with pytest.raises(ValueError):
        feature_collection(polygons, CLASSES[:1], mpp=0.25, metadata={})
    with pytest.raises(ValueError):
        feature_collection(polygons, [("a", (0, 0, 300)), ("b", (0, 0, 0))], mpp=1, metadata={})
    with pytest.raises(ValueError):
        feature_collection(polygons, CLASSES, mpp=0.0, metadata={})
    with pytest.raises(ValueError):
        dumps({"x": float("nan")})


def test_multipolygons_are_split_into_their_polygons():
    pair = shapely.MultiPolygon([box(0, 0, 1, 1), box(2, 0, 3, 1)])
    fc = feature_collection({0: [pair]}, CLASSES, mpp=None, split_regions=True, metadata={})
    assert len(fc["features"]) == 2
    with pytest.raises(ValueError):
        feature_collection({0: [box(0, 0, 1, 1).exterior]}, CLASSES, mpp=None, metadata={})


def test_numpy_values_in_metadata_serialise():
    fc = feature_collection({}, CLASSES, mpp=None, metadata={"k": np.int64(3), "v": np.ones(2)})
    assert fc["features"] == []
    assert json.loads(dumps(fc))["fseg"] == {"k": 3, "v": [1.0, 1.0]}


def test_the_same_job_writes_the_same_bytes(polygons):
    """Ids derive from the job's metadata, so a slide redone on another server is identical."""
    first = feature_collection_json(polygons, CLASSES, mpp=0.25, metadata=META)
    again = feature_collection_json(polygons, CLASSES, mpp=0.25, metadata=META)
    other = feature_collection_json(polygons, CLASSES, mpp=0.25, metadata={**META, "k": 99})
    assert first == again
    ids = {f["id"] for f in json.loads(first)["features"]}
    assert ids.isdisjoint(f["id"] for f in json.loads(other)["features"])
