"""Turning protocol messages into the pipeline's options, checking each field."""

from __future__ import annotations

import json
import math

import shapely
import shapely.errors
from shapely.geometry import shape

from fseg_proto import fseg_pb2

from ..errors import InvalidInput
from ..factorize import Mode
from ..limits import DEFAULT_LIMITS, MAX_ROI_COORDINATE, CostLimits
from ..pipeline.options import Frame, SegmentOptions, TissueDetection
from ..vectorize import DEFAULT_SIMPLIFY

MODES = {
    fseg_pb2.MODE_UNSPECIFIED: Mode.PROJECT,
    fseg_pb2.MODE_PROJECT: Mode.PROJECT,
    fseg_pb2.MODE_CLASSIFY: Mode.CLASSIFY,
    fseg_pb2.MODE_CLUSTER: Mode.CLUSTER,
}
FRAMES = {
    fseg_pb2.FRAME_UNSPECIFIED: Frame.BOUNDS,
    fseg_pb2.FRAME_BOUNDS: Frame.BOUNDS,
    fseg_pb2.FRAME_LEVEL0: Frame.LEVEL0,
}
TISSUE = {
    fseg_pb2.TISSUE_UNSPECIFIED: TissueDetection.AUTO,
    fseg_pb2.TISSUE_ON: TissueDetection.ON,
    fseg_pb2.TISSUE_OFF: TissueDetection.OFF,
}
DEFAULT_K = 8
DEFAULT_COMPONENTS = 8
DEFAULT_MIN_AREA_UM2 = 200.0
MAX_ROI_BYTES = 8 << 20
#: Polygons in one ROI: planning and clipping take about half a millisecond per
#: polygon, so 8 MB of tiny squares (150,000) held a job for minutes on a small image.
MAX_ROI_POLYGONS = 10_000


def segment_options(
    request: fseg_pb2.SegmentRequest, limits: CostLimits = DEFAULT_LIMITS
) -> SegmentOptions:
    """The pipeline options of a Segment call under the server's ``limits``; bad values
    raise InvalidInput."""
    vectorize = request.vectorize
    given_mpp, given_by = slide_mpp(request.slide, request.slide_mpp)
    return SegmentOptions(
        k=request.k or DEFAULT_K,
        mode=lookup(MODES, request.mode, "mode"),
        components=request.components or DEFAULT_COMPONENTS,
        slide_mpp=given_mpp,
        slide_mpp_from=given_by,
        target_mpp=checked_mpp(request.target_mpp, "target_mpp (--target-mpp)"),
        frame=lookup(FRAMES, request.frame, "frame"),
        roi=parse_roi(request.roi_geojson, limits.max_roi_vertices)
        if request.roi_geojson
        else None,
        tissue=lookup(TISSUE, request.tissue, "tissue"),
        simplify=vectorize.simplify if vectorize.HasField("simplify") else DEFAULT_SIMPLIFY,
        min_area_um2=vectorize.min_area_um2
        if vectorize.HasField("min_area_um2")
        else DEFAULT_MIN_AREA_UM2,
        split_regions=vectorize.split_regions,
        label_upsample=vectorize.label_upsample or None,
        limits=limits,
    )


def requested_outputs(request: fseg_pb2.SegmentRequest) -> set[str]:
    """Output suffixes to stream; none asked means all of them."""
    wanted = request.outputs
    chosen = {
        name
        for name, flag in (
            ("geojson", wanted.geojson),
            ("labels.png", wanted.labels),
            ("overlay.png", wanted.overlay),
        )
        if flag
    }
    return chosen or {"geojson", "labels.png", "overlay.png"}


def parse_roi(
    text: str, max_vertices: int = CostLimits.max_roi_vertices
) -> tuple[shapely.Polygon, ...]:
    """Polygons of a GeoJSON geometry, Feature, FeatureCollection or list of Features,
    with at most ``max_vertices`` vertices in all.

    Raises:
        InvalidInput: not GeoJSON, no polygon, non-finite or invalid geometry.
    """
    if len(text) > MAX_ROI_BYTES:
        raise InvalidInput(f"the ROI is larger than {MAX_ROI_BYTES} bytes")
    try:
        document = json.loads(text)
        geometries = [shape(g) for g in _geometries(document)]
    except RecursionError:
        raise InvalidInput("the ROI is not valid GeoJSON (nested too deeply)") from None
    except (
        ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError,
        shapely.errors.ShapelyError,  # GEOS's own refusals: a hole in an empty shell
    ) as exc:  # fmt: skip
        raise InvalidInput(f"the ROI is not valid GeoJSON ({exc})") from None
    polygons: list[shapely.Polygon] = []
    for geometry in geometries:
        # QuPath's ROIs are flat; a z coordinate (valid GeoJSON) says nothing here.
        polygons.extend(shapely.get_parts(shapely.force_2d(geometry)).tolist())
    polygons = [p for p in polygons if isinstance(p, shapely.Polygon) and not p.is_empty]
    if not polygons:
        raise InvalidInput("the ROI holds no polygon (points and lines do not bound an area)")
    if len(polygons) > MAX_ROI_POLYGONS:
        raise InvalidInput(
            f"the ROI holds {len(polygons):,} polygons; at most {MAX_ROI_POLYGONS:,} "
            "(merge them in QuPath first)"
        )
    vertices = int(shapely.get_num_coordinates(polygons).sum())
    if vertices > max_vertices:
        raise InvalidInput(
            f"the ROI has {vertices:,} vertices, more than this server's limit of "
            f"{max_vertices:,}; simplify it in QuPath first"
        )
    for polygon in polygons:
        bounds = polygon.bounds
        if not all(math.isfinite(v) for v in bounds):
            raise InvalidInput("the ROI has non-finite coordinates")
        reach = max(abs(v) for v in bounds)
        if reach > MAX_ROI_COORDINATE:
            raise InvalidInput(
                f"the ROI has a coordinate of {reach:.3g}; ROI coordinates are level-0 pixels "
                f"and must lie within ±{MAX_ROI_COORDINATE:,}"
            )
        if not polygon.is_valid:
            reason = shapely.is_valid_reason(polygon)
            raise InvalidInput(f"the ROI polygon is not valid ({reason}); fix it in QuPath first")
    return tuple(polygons)


def _geometries(document: object) -> list[dict]:
    if isinstance(document, list):
        return [g for item in document for g in _geometries(item)]
    if not isinstance(document, dict):
        raise ValueError("expected a GeoJSON object")
    kind = document.get("type")
    if kind == "FeatureCollection":
        return [g for feature in document["features"] for g in _geometries(feature)]
    if kind == "Feature":
        return [document["geometry"]] if document.get("geometry") else []
    if kind in ("Polygon", "MultiPolygon", "GeometryCollection", "Point", "LineString"):
        return [document]
    raise ValueError(f"unknown GeoJSON type {kind!r}")


def slide_mpp(slide: fseg_pb2.SlideRef, request_mpp: float) -> tuple[float | None, str]:
    """µm per level-0 pixel given for one slide, and by what in the user's words: its
    own (a manifest's column) wins over the request's (--mpp); None leaves the slide's
    metadata in charge."""
    own = checked_mpp(slide.mpp, "the slide's mpp (manifest)")
    if own is not None:
        return own, "the manifest's mpp"
    return checked_mpp(request_mpp, "slide_mpp (--mpp)"), "--mpp"


def checked_mpp(value: float, name: str) -> float | None:
    if value == 0:
        return None
    if not math.isfinite(value) or value < 0:
        raise InvalidInput(f"{name} must be a positive number of µm per pixel, not {value}")
    return value


def lookup(table: dict, value: int, name: str) -> object:
    if value not in table:
        raise InvalidInput(f"unknown {name} {value}")
    return table[value]
