"""Polygons -> a GeoJSON FeatureCollection that QuPath (0.5, 0.6) imports as annotations.

Coordinates are level-0 pixels (x right, y down), exactly as
``vectorize_labels`` returns them; QuPath reads GeoJSON in that frame.

Rounding: coordinates are written rounded to ``DECIMALS`` (1/1000 px). A vertex
shared by two polygons has one float value, so it rounds to one value and shared
edges stay shared. Rounding could in principle fold a thin spike onto itself,
so the rounded geometries are checked with GEOS; if any one is invalid, the
whole collection is written at full float precision instead (never a mix, which
would break shared edges between rounded and unrounded neighbours).
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import shapely

DECIMALS = 3


def feature_collection(
    polygons: Mapping[int, Sequence[shapely.Polygon]],
    classes: Sequence[tuple[str, tuple[int, int, int]]],
    *,
    mpp: float | None,
    split_regions: bool = False,
    metadata: Mapping[str, Any],
) -> dict[str, Any]:
    """Build the FeatureCollection dict.

    Args:
        polygons: class index -> polygons in level-0 pixels; empty classes are omitted.
        classes: ``(name, (r, g, b))`` per class index; colours are 0-255 ints.
        mpp: level-0 µm per pixel; areas are reported in µm² (``Area µm^2``), or in
            px² (``Area px^2``) when it is None.
        split_regions: one Feature per polygon instead of one MultiPolygon Feature per class.
        metadata: run description (extractor, bank, k, mode, mpp, frame, ...), copied to
            the top-level ``fseg`` member and into every Feature's ``fseg`` property.
    """
    if mpp is not None and not (math.isfinite(mpp) and mpp > 0):
        raise ValueError(f"mpp must be a positive number or None, got {mpp}")
    parts = {int(i): _polygon_parts(polygons[i]) for i in sorted(polygons)}
    indices = [i for i in parts if parts[i].size > 0]
    flat = np.concatenate([parts[i] for i in indices]) if indices else np.empty(0, dtype=object)
    areas = shapely.area(flat)
    coords = _coordinates(flat)
    features: list[dict[str, Any]] = []
    at = 0
    for index in indices:
        name, color = _class_entry(classes, index)
        n = parts[index].size
        spans = [(k, k + 1) for k in range(at, at + n)] if split_regions else [(at, at + n)]
        for lo, hi in spans:
            geometry = _geometry(coords[lo:hi])
            area = float(areas[lo:hi].sum())
            fseg = {**metadata, "class_index": index}
            properties = _properties(name, color, area, mpp, fseg)
            features.append(_feature(geometry, properties))
        at += n
    return {"type": "FeatureCollection", "features": features, "fseg": dict(metadata)}


def dumps(fc: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON (non-ASCII such as µ kept as is); NaN or infinity is an error."""
    text = json.dumps(
        fc, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_plain
    )
    return text.encode("utf-8")


def _polygon_parts(geoms: Sequence[shapely.Geometry]) -> np.ndarray:
    """Polygons of one class, MultiPolygons split into their parts, empties dropped."""
    arr = np.empty(len(geoms), dtype=object)
    arr[:] = list(geoms)
    parts = shapely.get_parts(arr)
    parts = parts[~shapely.is_empty(parts)]
    kinds = shapely.get_type_id(parts)
    if (kinds != shapely.GeometryType.POLYGON).any():
        raise ValueError("feature_collection takes polygons (or multipolygons) only")
    return parts


def _class_entry(
    classes: Sequence[tuple[str, tuple[int, int, int]]], index: int
) -> tuple[str, list[int]]:
    if not 0 <= index < len(classes):
        raise ValueError(f"class index {index} has no name and colour ({len(classes)} classes)")
    name, color = classes[index]
    rgb = [int(c) for c in color]
    if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
        raise ValueError(f"colour of class {name!r} must be three ints 0-255, got {color}")
    return str(name), rgb


def _properties(
    name: str, color: list[int], area_px2: float, mpp: float | None, fseg: dict[str, Any]
) -> dict[str, Any]:
    # QuPath 0.4+ reads measurements as a name -> value map.
    key, scale = ("Area px^2", 1.0) if mpp is None else ("Area µm^2", mpp * mpp)
    return {
        "objectType": "annotation",
        "classification": {"name": name, "color": color},
        "isLocked": False,
        "measurements": {key: area_px2 * scale},
        "fseg": fseg,
    }


def _feature(geometry: dict[str, Any], properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "Feature",
        "id": str(uuid.uuid4()),
        "geometry": geometry,
        "properties": properties,
    }


def _geometry(polygon_coords: list[list[list[list[float]]]]) -> dict[str, Any]:
    if len(polygon_coords) == 1:
        return {"type": "Polygon", "coordinates": polygon_coords[0]}
    return {"type": "MultiPolygon", "coordinates": polygon_coords}


def _coordinates(polygons: np.ndarray) -> list[list[list[list[float]]]]:
    """Nested coordinate lists (polygon -> ring -> [x, y]), rounded when that stays valid.

    Exteriors are written counter-clockwise in (x, y) as RFC 7946 asks.
    """
    if polygons.size == 0:
        return []
    oriented = shapely.orient_polygons(polygons, exterior_cw=False)
    rounded = _rounded(oriented)
    rings, owner = shapely.get_rings(rounded, return_index=True)
    xy, ring_of_point = shapely.get_coordinates(rings, return_index=True)
    if not np.isfinite(xy).all():
        raise ValueError("polygon coordinates must be finite")
    ends = np.cumsum(np.bincount(ring_of_point, minlength=rings.size)).tolist()
    points = xy.tolist()  # one conversion, then cheap list slices per ring
    out: list[list[list[list[float]]]] = [[] for _ in range(polygons.size)]
    start = 0
    for end, p in zip(ends, owner.tolist(), strict=True):
        out[p].append(points[start:end])
        start = end
    return out


def _rounded(polygons: np.ndarray) -> np.ndarray:
    """``polygons`` rounded to ``DECIMALS``, or unchanged if any would become invalid."""
    rounded = shapely.set_precision(polygons, 10.0**-DECIMALS, mode="pointwise")
    before, owner = shapely.get_coordinates(polygons, return_index=True)
    after = shapely.get_coordinates(rounded)
    if after.shape != before.shape:
        return polygons
    # Only polygons whose coordinates moved need a (costly) validity check.
    moved = np.unique(owner[np.any(before != after, axis=1)])
    candidates = rounded[moved]
    if np.all(shapely.is_valid(candidates) & ~shapely.is_empty(candidates)):
        return rounded
    return polygons


def _plain(value: Any) -> Any:
    """JSON fallback for numpy scalars and arrays inside caller metadata."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
