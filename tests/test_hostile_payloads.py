"""Issue 16's campaign, part two: what a request carries (ROIs, concept banks sent
with it), uploads, slide-set manifests, atlases and fits, against one real server.

Generated with hypothesis (derandomized): ROIs with NaN, infinite, 1e308 and
subnormal coordinates, degenerate rings and thousands of vertices; banks of
every dtype and wrong shapes, non-finite or huge centres and broken metadata;
upload headers that lie; manifests with hostile paths. Each case gets its
status (see the oracles) and leaves the server unharmed (see hostile_support).
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
from hostile_support import (
    IMAGE,
    REFUSALS,
    UPLOAD_CAP,
    Code,
    campaign_for_module,
    examples,
    png_declaring,
    tiny_bank,
)
from hypothesis import given
from hypothesis import strategies as st
from safetensors.numpy import save

from fseg_proto import fseg_pb2
from fseg_server.extract.stain import STAIN_SPEC

INVALID, FAILED = Code.INVALID_ARGUMENT, Code.FAILED_PRECONDITION
DIM = STAIN_SPEC.feature_dim
MAX_ROI_COORDINATE = 10_000_000  # level-0 px, either sign (the server's documented bound)
UINT32 = st.integers(0, 2**32 - 1)
NAMES = st.one_of(st.text(max_size=30), st.sampled_from(["", "a.svs", "../x", "\n", "é" * 300]))


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    yield from campaign_for_module(tmp_path_factory, "hostile-payloads")


# -- ROIs ----------------------------------------------------------------------------

#: Subnormals come from the listed constants only: other tests in the same process set
#: flush-to-zero (torch.set_flush_denormal), and hypothesis then refuses to draw them.
COORDINATES = st.one_of(
    st.floats(-50, 330, allow_subnormal=False),  # on and around the 280 x 223 px image
    st.sampled_from([0.0, -0.0, 1e7, -1e8, 1e308, -1e308, 5e-324, math.nan, math.inf]),
    st.floats(allow_subnormal=False),
)


@st.composite
def star(draw) -> list[list[float]]:
    """A closed ring around a centre with sorted angles: simple unless the scale is extreme."""
    n = draw(st.integers(3, 5000))
    cx, cy = draw(COORDINATES), draw(COORDINATES)
    scale = draw(st.one_of(st.floats(1, 150), st.sampled_from([1e-9, 1e9, 1e300])))
    radii = np.random.default_rng(n).uniform(0.3, 1.0, n) * scale
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    ring = np.column_stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)]).tolist()
    return [*ring, ring[0]]


RINGS = st.one_of(star(), st.lists(st.lists(COORDINATES, min_size=2, max_size=2), max_size=12))


@st.composite
def roi_documents(draw) -> tuple[str, list[float]]:
    """(GeoJSON text, every coordinate in it): a Polygon or MultiPolygon, maybe wrapped."""
    polygons = draw(st.lists(st.lists(RINGS, min_size=1, max_size=2), min_size=1, max_size=3))
    geometry = (
        {"type": "Polygon", "coordinates": polygons[0]}
        if len(polygons) == 1
        else {"type": "MultiPolygon", "coordinates": polygons}
    )
    wrap = draw(st.sampled_from(["geometry", "feature", "collection", "list"]))
    feature = {"type": "Feature", "properties": {}, "geometry": geometry}
    document = {
        "geometry": geometry,
        "feature": feature,
        "collection": {"type": "FeatureCollection", "features": [feature]},
        "list": [feature],
    }[wrap]
    values = [v for poly in polygons for ring in poly for point in ring for v in point]
    return json.dumps(document), values


@pytest.mark.slow
@examples(40)
@given(document=roi_documents())
def test_rois_with_unusable_coordinates_are_refused(campaign, document):
    text, values = document
    outcome = campaign.segment(roi_geojson=text)
    if any(not math.isfinite(v) or abs(v) > MAX_ROI_COORDINATE for v in values):
        campaign.judge(outcome, {INVALID})
    else:  # a ring too short, self-crossing, off the image: refused; else it runs
        campaign.judge(outcome, {Code.OK, INVALID})


def _squares(count: int) -> str:
    side = math.isqrt(count)
    squares = [[[[i, j], [i + 0.5, j], [i + 0.5, j + 0.5], [i, j]]] for i in range(side)
               for j in range(side)]  # fmt: skip
    return json.dumps({"type": "MultiPolygon", "coordinates": squares})


def _circle(vertices: int) -> str:
    angles = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    ring = np.column_stack([140 + 100 * np.cos(angles), 110 + 100 * np.sin(angles)]).tolist()
    return json.dumps({"type": "Polygon", "coordinates": [[*ring, ring[0]]]})


ROIS = [
    pytest.param(
        '{"type":"Polygon","coordinates":[[[0,0],[1' + "0" * 400 + ',0],[1,1],[0,0]]]}',
        {INVALID}, "not valid GeoJSON", id="integer-beyond-float",
    ),
    pytest.param(_squares(40_000), {INVALID}, "at most 10,000", id="40000-polygons"),
    pytest.param(_circle(199_000), {Code.OK}, "", id="199000-vertices"),
    pytest.param(
        _circle(200_001), {INVALID}, "more than this server's limit of 200,000",
        id="200001-vertices",
    ),
    pytest.param("[" * 100_000 + "]" * 100_000, {INVALID}, "nested too deeply", id="deep-nesting"),
    pytest.param("x" * (9 << 20), {INVALID}, "larger than", id="9-MB"),
    pytest.param('{"type":"Point","coordinates":[1e308,1]}', {INVALID}, "no polygon", id="point"),
    pytest.param(
        '{"type":"Polygon","coordinates":[[[0,0],[NaN,0],[1,1],[0,0]]]}', {INVALID}, "",
        id="nan-token",
    ),
    pytest.param(
        '{"type":"Polygon","coordinates":[[["a","b"],[1,1],[2,0],["a","b"]]]}', {INVALID},
        "not valid GeoJSON", id="strings",
    ),
    pytest.param(
        json.dumps({"type": "GeometryCollection", "geometries": 5}), {INVALID},
        "not valid GeoJSON", id="collection-of-a-number",
    ),
    pytest.param("\udcff", {INVALID}, "", id="lone-surrogate"),
]  # fmt: skip


@pytest.mark.parametrize("text,allowed,fragment", ROIS)
def test_roi_extremes_are_refused_or_run(campaign, text, allowed, fragment):
    if text == "\udcff":  # protobuf strings are UTF-8: send the bytes a client could
        request = fseg_pb2.SegmentRequest(slide=fseg_pb2.SlideRef(path=IMAGE))
        raw = request.SerializeToString() + b"\x52\x03\xed\xb3\xbf"  # field 10, invalid UTF-8
        outcome = campaign.call(_raw_segment(campaign), raw)
    else:
        outcome = campaign.segment(roi_geojson=text)
    campaign.judge(outcome, allowed, fragment)


def _raw_segment(campaign):
    return campaign.server.channel().unary_stream("/fseg.v1.Segmentation/Segment")


# -- concept banks sent with a request ------------------------------------------------

DTYPES = st.sampled_from(["float32", "float16", "float64", "int8", "uint8", "int64", "bool"])
SHAPES = st.sampled_from(["right", "wide", "flat", "3d", "no rows", "extra row"])
FILLS = st.sampled_from(["random", "zero", "negative", "nan", "inf", "huge", "subnormal"])
METADATA_EDITS = st.sampled_from([
    None, ("format", "fseg-concept-bank/2"), ("extractor", "uni"), ("extractor", 5),
    ("feature_dim", str(DIM)), ("feature_dim", -1), ("feature_dim", 10**30), ("k", [5]),
    ("k", "4"), ("k", [4.0]), ("mpp", "x"), ("mpp", -1), ("mpp", 1e-300), ("mpp", None),
    ("classes", []), ("classes", {"4": "abcd"}), ("classes", {"x": []}),
    ("classes", {"4": [{"name": "a\nb", "color": [0, 0, 0]}] * 4}),
    ("classes", {"4": [{"name": f"c{i}", "color": [0, 0, 999]} for i in range(4)]}),
    ("classes", {"4": [{"name": "n" * 10_000, "color": [0, 0, 0]}] * 4}),
    ("source", {"a": 1}), ("provenance", 5), ("provenance", {"inputs": [], "windows": [[1]]}),
])  # fmt: skip
SHAPE_OF = {"right": (4, DIM), "wide": (4, DIM + 1), "flat": (DIM,), "3d": (4, DIM, 1),
            "no rows": (0, DIM), "extra row": (5, DIM)}  # fmt: skip
FILL_OF = {"random": 1.0, "zero": 0.0, "negative": -1.0, "nan": math.nan, "inf": math.inf,
           "huge": 3e38, "subnormal": 1e-45}  # fmt: skip


def _bank_bytes(dtype: str, shape: str, fill: str, edit: tuple | None) -> bytes:
    rng = np.random.default_rng(4)
    values = rng.random(SHAPE_OF[shape]) * FILL_OF[fill] if fill != "zero" else np.zeros(1)
    with np.errstate(invalid="ignore", over="ignore"):
        centres = np.broadcast_to(values, SHAPE_OF[shape]).astype(dtype)
    metadata = tiny_bank().metadata()
    if edit is not None:
        metadata[edit[0]] = edit[1]
    return save({"centres/4": np.ascontiguousarray(centres)}, {"fseg": json.dumps(metadata)})


@examples(40)
@given(dtype=DTYPES, shape=SHAPES, fill=FILLS, edit=METADATA_EDITS)
def test_banks_sent_with_a_request_are_refused_unless_usable(campaign, dtype, shape, fill, edit):
    outcome = campaign.segment(k=4, bank_safetensors=_bank_bytes(dtype, shape, fill, edit))
    float_fill_unusable = dtype.startswith("float") and fill in ("nan", "inf", "huge")
    if shape != "right" or float_fill_unusable:
        campaign.judge(outcome, {INVALID})
    else:  # int and bool centres are converted (a doubtful item of the issue, kept)
        campaign.judge(outcome, {Code.OK, INVALID})


@pytest.mark.parametrize(
    "data,fragment",
    [
        pytest.param(b"", "", id="empty-means-none"),
        pytest.param(b"\0" * 8, "not a concept bank", id="zero-header"),
        pytest.param((10**12).to_bytes(8, "little") + b"{}", "truncated", id="header-lie"),
        pytest.param(b'\x08\0\0\0\0\0\0\0{"a":1}', "not a concept bank", id="not-a-tensor"),
        pytest.param(np.random.default_rng(5).bytes(4096), "not a concept bank", id="random"),
        pytest.param(b"x" * ((16 << 20) + 1), "at most", id="over-16-MiB"),
    ],
)
def test_bank_bytes_that_are_not_safetensors_are_refused(campaign, data, fragment):
    outcome = campaign.segment(k=4, bank_safetensors=data)
    campaign.judge(outcome, {Code.OK} if not data else {INVALID}, fragment)


# -- uploads -------------------------------------------------------------------------


@examples(30)
@given(
    name=NAMES,
    honest_hash=st.booleans(),
    other_hash=st.one_of(st.text(max_size=70), st.just("0" * 64), st.just("A" * 64)),
    size_lie=st.sampled_from([0, 1, -1, 2**64 - 1, UPLOAD_CAP + 1]),
    chunks=st.lists(st.binary(max_size=3000), max_size=4),
)
def test_upload_headers_that_lie_are_refused_and_leave_nothing(
    campaign, name, honest_hash, other_hash, size_lie, chunks
):
    data = b"".join(chunks)
    digest = hashlib.sha256(data).hexdigest() if honest_hash else other_hash
    declared = len(data) if size_lie == 0 else size_lie if size_lie > 1 else len(data) + size_lie
    declared = max(0, declared)
    header = fseg_pb2.UploadHeader(name=name, sha256=digest, size_bytes=declared)
    messages = [fseg_pb2.UploadChunk(header=header)] + [
        fseg_pb2.UploadChunk(data=c) for c in chunks
    ]
    held = campaign.uploads / "objects" / digest[:2]
    present = held.is_dir() and any(p.name.startswith(digest) for p in held.iterdir())
    outcome = campaign.upload(messages)
    if len(digest) != 64 or digest != digest.lower() or not set(digest) <= set("0123456789abcdef"):
        campaign.judge(outcome, {INVALID}, "is not a SHA-256")
    elif declared > UPLOAD_CAP:
        campaign.judge(outcome, {FAILED}, "accepts at most")
    elif present:
        campaign.judge(outcome, {Code.OK})
    elif declared != len(data):
        campaign.judge(outcome, {INVALID}, "its header announced")
    elif not honest_hash and digest != hashlib.sha256(data).hexdigest():
        campaign.judge(outcome, {INVALID}, "hash to")
    else:
        campaign.judge(outcome, {Code.OK})


@pytest.mark.parametrize(
    "messages,fragment",
    [
        pytest.param([], "must start with its header", id="no-message"),
        pytest.param([fseg_pb2.UploadChunk(data=b"x")], "must start", id="data-first"),
        pytest.param([fseg_pb2.UploadChunk()], "must start", id="empty-message"),
    ],
)
def test_upload_streams_without_a_header_are_refused(campaign, messages, fragment):
    outcome = campaign.upload(messages)
    campaign.judge(outcome, {INVALID}, fragment)


# -- slide sets ----------------------------------------------------------------------

SET_FILES = st.lists(
    st.builds(
        fseg_pb2.SlideFile,
        path=st.one_of(NAMES, st.sampled_from(["a/b.ini", "/abs", "a//b", "./a", "a\\b"])),
        sha256=st.one_of(st.just("1" * 64), st.text(max_size=64)),
        size_bytes=st.one_of(st.integers(0, 100), st.just(2**64 - 1)),
    ),
    max_size=6,
)


@examples(25)
@given(files=SET_FILES, main=NAMES)
def test_slide_set_manifests_are_checked_before_anything_is_stored(campaign, files, main):
    outcome = campaign.call(campaign.stub.StatSlideSet, fseg_pb2.SlideSet(main=main, files=files))
    if not 2 <= len(files) <= 1000:
        campaign.judge(outcome, {INVALID}, "between 2 and 1000 files")
    else:
        campaign.judge(outcome, {Code.OK, INVALID, FAILED})
    assert not list((campaign.uploads / "sets").rglob("manifest"))


MAIN, INI = b"a MIRAX main file", b"[GENERAL]\nx=1\n"


def _set_file(path: str, data: bytes) -> fseg_pb2.SlideFile:
    return fseg_pb2.SlideFile(
        path=path, sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data)
    )


SET = fseg_pb2.SlideSet(main="s.mrxs", files=[_set_file("s.mrxs", MAIN), _set_file("s/x.ini", INI)])
BOTH = ["s.mrxs", "s/x.ini"]


@pytest.mark.parametrize(
    "sending,data,fragment",
    [
        pytest.param(BOTH, [MAIN], "ended 0 bytes into s/x.ini", id="short"),
        pytest.param(BOTH, [MAIN + INI + b"!"], "more bytes than", id="long"),
        pytest.param(["s.mrxs", "s.mrxs"], [MAIN + MAIN], "twice", id="twice"),
        pytest.param(["elsewhere"], [MAIN], "not in its slide set", id="not-in-the-set"),
        pytest.param(["s/x.ini", "s.mrxs"], [MAIN + INI], "hash to", id="swapped"),
        pytest.param([], [], "", id="nothing-sent-nothing-held"),
    ],
)
def test_slide_set_uploads_that_do_not_add_up_leave_nothing(campaign, sending, data, fragment):
    header = fseg_pb2.SlideSetHeader(set=SET, sending=sending)
    messages = [fseg_pb2.SlideSetChunk(header=header)]
    messages += [fseg_pb2.SlideSetChunk(data=chunk) for chunk in data]

    def send(chunks: list, timeout: float):
        return campaign.stub.UploadSlideSet(iter(chunks), timeout=timeout)

    outcome = campaign.call(send, messages)
    campaign.judge(outcome, {INVALID, FAILED}, fragment)
    assert not list((campaign.uploads / "sets").rglob("manifest"))


# -- atlases and fits ----------------------------------------------------------------

SLIDES = st.lists(
    st.one_of(
        st.just(fseg_pb2.SlideRef(path=IMAGE)),
        st.builds(fseg_pb2.SlideRef, path=NAMES),
        st.builds(fseg_pb2.SlideRef, sha256=st.text(max_size=64)),
        st.builds(fseg_pb2.SlideRef, path=st.just(IMAGE), name=NAMES),
    ),
    max_size=3,
)


@examples(15)
@given(
    slides=SLIDES,
    bank=st.sampled_from(["", "tiny", "absent"]),
    k=st.sampled_from([0, 4, 5, 2**32 - 1]),
    windows=st.one_of(st.sampled_from([0, 11, 12, 25]), UINT32),
    tiles=st.one_of(st.sampled_from([0, 1, 1025]), UINT32),
)
def test_atlas_requests_out_of_bounds_are_refused(campaign, slides, bank, k, windows, tiles):
    request = fseg_pb2.AtlasRequest(
        slides=slides, bank=bank, k=k, windows_per_concept=windows, tiles_per_slide=tiles
    )
    outcome = campaign.call(campaign.stub.Atlas, request)
    if not bank:
        campaign.judge(outcome, {INVALID}, "needs a concept bank")
    elif bank == "absent":
        campaign.judge(outcome, {Code.NOT_FOUND}, "holds no concept bank")
    elif windows and not 12 <= windows <= 24:
        campaign.judge(outcome, {INVALID}, "windows per concept")
    elif tiles > 1024:
        campaign.judge(outcome, {INVALID}, "tiles per input")
    elif (k or 8) not in (4, 8):
        campaign.judge(outcome, {INVALID}, "no k=")
    elif not slides:
        campaign.judge(outcome, {INVALID}, "give between 1 and")
    else:
        campaign.judge(outcome, REFUSALS | {Code.OK})


DOUBLES = st.one_of(
    st.sampled_from([0.0, math.nan, -1.0, math.inf, 1e300, 5e-324]),
    st.floats(allow_subnormal=False),  # see COORDINATES
)


@examples(20)
@given(
    slides=SLIDES,
    ks=st.lists(st.one_of(st.sampled_from([0, 2, 256]), UINT32), max_size=3),
    tiles=st.one_of(st.sampled_from([0, 1]), UINT32),
    slide_mpp=DOUBLES,
    target_mpp=DOUBLES,
)
def test_fit_requests_out_of_bounds_are_refused(campaign, slides, ks, tiles, slide_mpp, target_mpp):
    request = fseg_pb2.FitRequest(
        slides=slides, k=ks, tiles_per_slide=tiles, slide_mpp=slide_mpp, target_mpp=target_mpp
    )
    outcome = campaign.call(campaign.stub.FitConcepts, request)
    if ks and min(ks) < 1:
        campaign.judge(outcome, {INVALID}, "every k must be at least 1")
    elif not slides:
        campaign.judge(outcome, {INVALID}, "give between 1 and")
    elif max(ks or [8]) > 255:  # or the µm/px, checked first when it is bad too
        campaign.judge(outcome, {INVALID})
    else:
        campaign.judge(outcome, REFUSALS | {Code.OK})


def test_a_fit_skips_a_missing_slide_and_fits_on_the_others(campaign):
    slides = [fseg_pb2.SlideRef(path=IMAGE), fseg_pb2.SlideRef(path="absent.png")]
    outcome = campaign.call(campaign.stub.FitConcepts, fseg_pb2.FitRequest(slides=slides, k=[4]))
    campaign.judge(outcome, {Code.OK})
    kinds = [reply.WhichOneof("event") for reply in outcome.replies]
    skipped = [r.skipped for r in outcome.replies if r.WhichOneof("event") == "skipped"]
    assert [s.index for s in skipped] == [1] and "absent.png" in skipped[0].reason
    assert kinds[-1] == "bank"


@pytest.mark.parametrize(
    "name,data",
    [
        pytest.param("big.png", png_declaring(50_000, 50_000), id="header-only-png"),
        pytest.param("noise.png", np.random.default_rng(6).bytes(30_000), id="noise-png"),
        pytest.param("noise.svs", b"II*\0" + np.random.default_rng(7).bytes(30_000), id="svs"),
        pytest.param("tiny", b"\x89PNG", id="no-suffix"),
    ],
)
def test_uploaded_crafted_files_are_refused_when_segmented(campaign, name, data):
    upload = _upload_messages(name, data)
    stored = campaign.upload(upload)
    campaign.judge(stored, {Code.OK})
    digest = hashlib.sha256(data).hexdigest()
    ref = fseg_pb2.SlideRef(sha256=digest, name=name)
    outcome = campaign.segment(slide=ref)
    campaign.judge(outcome, {INVALID, FAILED}, name)
    # The sentence names the file as the client sent it, not by its place in the
    # server's store (<upload dir>/objects/<aa>/<sha256>...), which shows its folders.
    assert digest not in outcome.details and "objects" not in outcome.details
    asked = fseg_pb2.AtlasRequest(slides=[ref], bank="tiny", k=4)
    atlas = campaign.call(campaign.stub.Atlas, asked)
    campaign.judge(atlas, {INVALID, FAILED}, name)
    assert digest not in atlas.details and "objects" not in atlas.details


def _upload_messages(name: str, data: bytes) -> list:
    digest = hashlib.sha256(data).hexdigest()
    header = fseg_pb2.UploadHeader(name=name, sha256=digest, size_bytes=len(data))
    return [fseg_pb2.UploadChunk(header=header), fseg_pb2.UploadChunk(data=data)]
