"""ROIs as QuPath and other tools write them: what the server accepts and what it refuses."""

from __future__ import annotations

import json

import pytest

from fseg_server.errors import InvalidInput
from fseg_server.serve.requests import parse_roi

SQUARE = [[0, 0], [100, 0], [100, 100], [0, 100], [0, 0]]


def test_a_polygon_with_z_coordinates_is_read_flat():
    ring = [[x, y, 7.5] for x, y in SQUARE]
    [polygon] = parse_roi(json.dumps({"type": "Polygon", "coordinates": [ring]}))
    assert not polygon.has_z and polygon.area == 100 * 100


def test_features_and_collections_give_their_polygons():
    feature = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [SQUARE]}}
    collection = {"type": "FeatureCollection", "features": [feature, feature]}
    assert len(parse_roi(json.dumps(collection))) == 2


def test_json_nested_too_deeply_is_invalid_input_not_a_crash():
    with pytest.raises(InvalidInput, match="nested too deeply"):
        parse_roi("[" * 5000 + "]" * 5000)


@pytest.mark.parametrize("huge", [1e308, -1e308, 2e7])
def test_coordinates_far_beyond_any_slide_are_refused_in_one_sentence(huge):
    ring = [[0, 0], [huge, 0], [huge, 100], [0, 100], [0, 0]]
    with pytest.raises(InvalidInput, match="must lie within ±10,000,000"):
        parse_roi(json.dumps({"type": "Polygon", "coordinates": [ring]}))


def test_an_roi_as_large_as_the_largest_slides_is_accepted():
    ring = [[0, 0], [250_000, 0], [250_000, 200_000], [0, 200_000], [0, 0]]
    [polygon] = parse_roi(json.dumps({"type": "Polygon", "coordinates": [ring]}))
    assert polygon.area == 250_000 * 200_000
