"""The ROI's rings, checked before any server is asked (the client has no geometry library).

A ring of fewer than four positions, or one that does not end where it
starts, is a mistake in the file, caught here with its place in the file so
that the batch stops at once with exit code 2. Whether rings cross is left to
the server, which has GEOS. The walk over the document mirrors the server's
``parse_roi`` on purpose rather than sharing it: the client is stricter (it
refuses an unclosed ring, which shapely would close), and the server stays the
judge for every other client.
"""

from __future__ import annotations

import math

_POLYGONAL = {"Polygon": 1, "MultiPolygon": 2}  # nesting depth of the rings


def ring_problem(document: object) -> str | None:
    """Why the GeoJSON ``document``'s polygon rings are malformed, or None if they are not."""
    for where, geometry in _geometries(document, "the file"):
        depth = _POLYGONAL.get(geometry.get("type"))
        if depth is None:
            continue
        polygons = geometry.get("coordinates")
        polygons = [polygons] if depth == 1 else polygons
        if not isinstance(polygons, list):
            return f"{where} has no coordinates"
        for p, rings in enumerate(polygons):
            for r, ring in enumerate(rings if isinstance(rings, list) else [None]):
                problem = _ring_problem(ring)
                if problem:
                    polygon = f"polygon {p + 1}, " if depth == 2 else ""
                    return f"{where}, {polygon}ring {r + 1} {problem}"
    return None


def _ring_problem(ring: object) -> str | None:
    if not isinstance(ring, list) or not all(_is_position(xy) for xy in ring):
        return "is not a list of [x, y] positions"
    if len(ring) < 4:
        return f"has {len(ring)} positions; a ring needs at least 4, the last equal to the first"
    if ring[0][:2] != ring[-1][:2]:
        return "does not end where it starts"
    return None


def _is_position(value: object) -> bool:
    return (
        isinstance(value, list)
        and len(value) in (2, 3)
        and all(isinstance(v, int | float) and math.isfinite(v) for v in value)
    )


def _geometries(document: object, where: str) -> list[tuple[str, dict]]:
    """(where it is, geometry) for every geometry in a GeoJSON document; others skipped."""
    if isinstance(document, list):
        return [g for i, item in enumerate(document) for g in _geometries(item, f"item {i + 1}")]
    if not isinstance(document, dict):
        return []
    kind = document.get("type")
    if kind == "FeatureCollection" and isinstance(document.get("features"), list):
        features = document["features"]
        return [g for i, f in enumerate(features) for g in _geometries(f, f"feature {i + 1}")]
    if kind == "Feature":
        return _geometries(document.get("geometry"), where)
    if kind == "GeometryCollection" and isinstance(document.get("geometries"), list):
        return [g for item in document["geometries"] for g in _geometries(item, where)]
    return [(where, document)]
