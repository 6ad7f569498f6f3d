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
_ID_NAMESPACE = uuid.UUID("5a1d1e7e-f5e9-4a11-9d1f-3b0c0a11f5e9")


def feature_collection(
    polygons: Mapping[int, Sequence[shapely.Polygon]],
    classes: Sequence[tuple[str, tuple[int, int, int]]],
    *,
    mpp: float | tuple[float, float] | None,
    split_regions: bool = False,
    metadata: Mapping[str, Any],
) -> dict[str, Any]:
    """The FeatureCollection as a dict (see :func:`feature_collection_json` for the arguments)."""
    return json.loads(
        feature_collection_json(
            polygons, classes, mpp=mpp, split_regions=split_regions, metadata=metadata
        )
    )


def feature_collection_json(
    polygons: Mapping[int, Sequence[shapely.Polygon]],
    classes: Sequence[tuple[str, tuple[int, int, int]]],
    *,
    mpp: float | tuple[float, float] | None,
    split_regions: bool = False,
    metadata: Mapping[str, Any],
) -> bytes:
    """The FeatureCollection as compact UTF-8 JSON, written without building it in Python.

    Geometries go straight from GEOS to text (``shapely.to_geojson``), so a
    slide with millions of vertices never becomes millions of Python floats.

    Args:
        polygons: class index -> polygons in level-0 pixels; empty classes are omitted.
        classes: ``(name, (r, g, b))`` per class index; colours are 0-255 ints.
        mpp: level-0 µm per pixel, one value or ``(x, y)``; areas are reported in
            µm² (``Area µm^2``, px² times mpp-x times mpp-y, as QuPath measures), or
            in px² (``Area px^2``) when it is None.
        split_regions: one Feature per polygon instead of one MultiPolygon Feature per class.
        metadata: run description (extractor, bank, k, mode, mpp, frame, ...), copied to
            the top-level ``fseg`` member and into every Feature's ``fseg`` property.
            Feature ids are derived from it, so the same job gives the same file.
    """
    um2_per_px2 = _pixel_area(mpp)
    parts = {int(i): _polygon_parts(polygons[i]) for i in sorted(polygons)}
    indices = [i for i in parts if parts[i].size > 0]
    flat = np.concatenate([parts[i] for i in indices]) if indices else np.empty(0, dtype=object)
    if flat.size and not np.isfinite(shapely.bounds(flat)).all():
        raise ValueError("polygon coordinates must be finite")
    areas = shapely.area(flat)
    shapes = _rounded(shapely.orient_polygons(flat, exterior_cw=False)) if flat.size else flat
    id_seed = json.dumps(dict(metadata), sort_keys=True, default=_plain)
    features: list[str] = []
    at = 0
    for index in indices:
        name, color = _class_entry(classes, index)
        n = parts[index].size
        spans = [(k, k + 1) for k in range(at, at + n)] if split_regions else [(at, at + n)]
        for lo, hi in spans:
            geometry = shapes[lo] if hi - lo == 1 else shapely.multipolygons(shapes[lo:hi])
            properties = _properties(
                name,
                color,
                float(areas[lo:hi].sum()),
                um2_per_px2,
                {**metadata, "class_index": index},
            )
            feature_id = uuid.uuid5(_ID_NAMESPACE, f"{id_seed}|{index}|{lo}")
            features.append(
                f'{{"type":"Feature","id":"{feature_id}","geometry":'
                f'{shapely.to_geojson(geometry)},"properties":{_compact(properties)}}}'
            )
        at += n
    head = f'{{"type":"FeatureCollection","fseg":{_compact(dict(metadata))},"features":['
    return (head + ",".join(features) + "]}").encode("utf-8")


def dumps(fc: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON (non-ASCII such as µ kept as is); NaN or infinity is an error."""
    return _compact(fc).encode("utf-8")


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


def _pixel_area(mpp: float | tuple[float, float] | None) -> float | None:
    """µm² per level-0 px² from µm per pixel (one value or (x, y)); None stays None."""
    if mpp is None:
        return None
    try:
        x, y = np.broadcast_to(np.asarray(mpp, dtype=float), 2)
    except ValueError:
        x = y = math.nan
    if not (math.isfinite(x) and math.isfinite(y) and x > 0 and y > 0):
        raise ValueError(f"mpp must be a positive number, a positive (x, y) or None, got {mpp}")
    return float(x * y)


def _properties(
    name: str, color: list[int], area_px2: float, um2_per_px2: float | None, fseg: dict[str, Any]
) -> dict[str, Any]:
    # QuPath 0.4+ reads measurements as a name -> value map.
    key, scale = ("Area px^2", 1.0) if um2_per_px2 is None else ("Area µm^2", um2_per_px2)
    return {
        "objectType": "annotation",
        "classification": {"name": name, "color": color},
        "isLocked": False,
        "measurements": {key: area_px2 * scale},
        "fseg": fseg,
    }


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


def _compact(value: Any) -> str:
    """Compact JSON text; non-ASCII kept, NaN and infinity refused, numpy values plain."""
    return json.dumps(
        value, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_plain
    )


def _plain(value: Any) -> Any:
    """JSON fallback for numpy scalars and arrays inside caller metadata."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
