"""Bad input against a real server: each row gets its status code and one sentence,
and the server keeps serving with no temporary file left behind (issue 4's table)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket

import grpc
import numpy as np
import pytest
from test_e2e_support import finished_jobs, real_server, wait_until

from conftest import shared
from fseg_proto import fseg_pb2
from fseg_server.concepts import ConceptBank, import_joblib
from fseg_server.extract.stain import STAIN_SPEC

TOKEN = "s3cret-token"
UPLOAD_CAP = 5_000_000


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("server-errors")
    root = base / "slides"
    root.mkdir()
    shutil.copy(shared("slides/CMU-1-Small-Region.svs"), root / "cmu.svs")
    (root / "empty.svs").write_bytes(b"")
    (root / "random.svs").write_bytes(np.random.default_rng(0).bytes(50_000))
    (root / "folder").mkdir()
    os.mkfifo(root / "pipe.svs")
    with socket.socket(socket.AF_UNIX) as listener:  # the socket file outlives the socket
        listener.bind(str(root / "socket.svs"))
    os.symlink(shared("slides/small.svs"), root / "escape.svs")
    os.symlink(root / "loop-b.svs", root / "loop-a.svs")
    os.symlink(root / "loop-a.svs", root / "loop-b.svs")
    banks = base / "banks"
    banks.mkdir()
    rng = np.random.default_rng(1)
    dim = STAIN_SPEC.feature_dim
    ConceptBank(
        "stain", dim, {4: rng.random((4, dim), np.float32), 8: rng.random((8, dim), np.float32)}
    ).save(banks / "tiny.safetensors")
    ConceptBank("stain", dim - 1, {8: rng.random((8, dim - 1), np.float32)}).save(
        banks / "narrow.safetensors"
    )
    import_joblib(shared("concept-banks/uni.joblib"), "uni", 1024).save(banks / "uni.safetensors")
    uploads = base / "uploads"
    with real_server(
        base, "--slide-root", str(root), "--upload-dir", str(uploads),
        "--upload-max-bytes", str(UPLOAD_CAP),
        "--concepts", f"tiny={banks / 'tiny.safetensors'}",
        "--concepts", f"narrow={banks / 'narrow.safetensors'}",
        "--concepts", f"uni={banks / 'uni.safetensors'}",
        token=TOKEN,
    ) as server:  # fmt: skip
        yield {"server": server, "root": root, "uploads": uploads}


def segment(env, timeout: float | None = 120, metadata=None, **fields) -> list:
    server = env["server"]
    request = fseg_pb2.SegmentRequest(**fields)
    call = server.stub().Segment(
        request, timeout=timeout, metadata=server.metadata() if metadata is None else metadata
    )
    return list(call)


def expect(code: grpc.StatusCode, fragment: str, call, *args, **kwargs) -> None:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kwargs)
    assert info.value.code() == code, info.value.details()
    assert fragment in info.value.details()
    assert "\n" not in info.value.details() and "Traceback" not in info.value.details()


@pytest.fixture(autouse=True)
def still_serving_and_clean(env):
    before = sorted(p.name for p in env["root"].iterdir())
    yield
    assert env["server"].serving(), env["server"].log_text()[-2000:]
    assert sorted(p.name for p in env["root"].iterdir()) == before
    assert list((env["uploads"] / "tmp").iterdir()) == []


def path(p: str) -> dict:
    return {"slide": fseg_pb2.SlideRef(path=p)}


NOT_FOUND, INVALID, DENIED = (
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.PERMISSION_DENIED,
)


CMU = path("cmu.svs")
# CMU-1-Small-Region is 2220 x 2967 px; this square lies beyond both edges.
OFF_THE_SLIDE = {
    "type": "Polygon",
    "coordinates": [[[5000, 5000], [6000, 5000], [6000, 6000], [5000, 6000], [5000, 5000]]],
}
# A strip left of the slide that shares only its edge x = 0: no pixel inside.
ON_THE_EDGE = {
    "type": "Polygon",
    "coordinates": [[[-100, 0], [0, 0], [0, 500], [-100, 500], [-100, 0]]],
}
# Finite, but areas computed with it overflow to NaN (INTERNAL once).
FAR_AWAY = {"type": "Polygon", "coordinates": [[[0, 0], [1e308, 0], [1e308, 1], [0, 0]]]}
BOWTIE = {"type": "Polygon", "coordinates": [[[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]]}


def bank_bytes(dtype) -> bytes:
    """A request's bank whose k=4 centres are stored as ``dtype``."""
    from safetensors.numpy import save

    dim = STAIN_SPEC.feature_dim
    bank = ConceptBank("stain", dim, {4: np.eye(4, dim, dtype=np.float32)})
    metadata = {"fseg": json.dumps(bank.metadata())}
    return save({"centres/4": bank.concepts(4).astype(dtype)}, metadata=metadata)


BAD_REQUESTS = [
    pytest.param(path("absent.svs"), NOT_FOUND, "does not exist", id="nonexistent"),
    pytest.param(path("folder"), INVALID, "is a directory", id="directory"),
    pytest.param(path("/etc/hostname"), DENIED, "outside the server's slide", id="outside-roots"),
    pytest.param(path("../slides/cmu.svs"), DENIED, "may not contain '..'", id="dotdot"),
    pytest.param(path("escape.svs"), DENIED, "symlink that escapes", id="symlink-escape"),
    pytest.param(path("loop-a.svs"), DENIED, "symlinks form a loop", id="symlink-loop"),
    pytest.param(path("n" * 300 + ".svs"), INVALID, "name too long", id="name-too-long"),
    pytest.param(path("p/" * 2500), INVALID, "at most 4,096", id="path-5000-chars"),
    pytest.param(
        {"slide": fseg_pb2.SlideRef(path="cmu.svs", name="two\nlines.svs")},
        INVALID,
        "holds a control character",
        id="name-with-newline",
    ),
    pytest.param(
        {"slide": fseg_pb2.SlideRef(path="cmu.svs", name="n" * 10_000)},
        INVALID,
        "10,000 characters long; at most 255",
        id="name-10000-chars",
    ),
    pytest.param(path("empty.svs"), INVALID, "is empty", id="empty-file"),
    pytest.param(path("random.svs"), INVALID, "not a slide OpenSlide", id="random-bytes-svs"),
    pytest.param(
        {**CMU, "extractor": "nope"}, NOT_FOUND, "not serve the extractor", id="unknown-extractor"
    ),
    pytest.param({**CMU, "bank": "nope"}, NOT_FOUND, "no concept bank 'nope'", id="missing-bank"),
    pytest.param(
        {**CMU, "bank": "tiny", "k": 16}, INVALID, "no k=16; it holds k = 4, 8", id="k-not-in-bank"
    ),
    pytest.param(
        {**CMU, "bank": "narrow"},
        INVALID,
        f"not on stain ({STAIN_SPEC.feature_dim} channels)",
        id="dimension-mismatch",
    ),
    pytest.param({**CMU, "bank": "uni"}, INVALID, "fitted on uni", id="extractor-mismatch"),
    pytest.param(
        {**CMU, "bank_safetensors": bank_bytes(np.int8), "k": 4},
        INVALID,
        "the centres for k=4 are stored as int8; concept centres are feature vectors",
        id="bank-int8-centres",
    ),
    pytest.param({**CMU, "slide_mpp": -0.5}, INVALID, "positive number of µm", id="negative-mpp"),
    pytest.param({**CMU, "k": 256}, INVALID, "k must be at most 255", id="k-over-a-byte"),
    pytest.param(
        {**CMU, "vectorize": fseg_pb2.VectorizeOptions(min_area_um2=float("inf"))},
        INVALID,
        "min-area must be a finite number",
        id="min-area-inf",
    ),
    pytest.param(
        {**CMU, "vectorize": fseg_pb2.VectorizeOptions(label_upsample=3)},
        INVALID,
        "divide stain's stride of 4 px",
        id="upsample-3",
    ),
    pytest.param(
        {**CMU, "vectorize": fseg_pb2.VectorizeOptions(label_upsample=1000)},
        INVALID,
        "divide stain's stride of 4 px (one of 1, 2, 4), not 1000",
        id="upsample-over-the-stride",
    ),
    pytest.param({**CMU, "roi_geojson": "{no"}, INVALID, "not valid GeoJSON", id="roi-not-json"),
    pytest.param(
        {**CMU, "roi_geojson": json.dumps(FAR_AWAY)}, INVALID, "must lie within", id="roi-1e308"
    ),
    pytest.param(
        {**CMU, "mode": fseg_pb2.MODE_CLASSIFY, "components": 2**32 - 1},
        INVALID,
        "must be between 1 and 64 (this server's limit), not 4294967295",
        id="components-2^32-1",
    ),
    pytest.param(
        {**CMU, "roi_geojson": json.dumps(OFF_THE_SLIDE)},
        INVALID,
        "the ROI lies outside cmu.svs: it spans x 5000 to 6000 and y 5000 to 6000, and the slide "
        "x 0 to 2220 and y 0 to 2967",
        id="roi-off-the-slide",
    ),
    pytest.param(
        {**CMU, "roi_geojson": json.dumps(ON_THE_EDGE)},
        INVALID,
        "it spans x -100 to 0 and y 0 to 500",
        id="roi-touching-an-edge",
    ),
    pytest.param(
        {**CMU, "roi_geojson": json.dumps(BOWTIE)}, INVALID, "Self-intersection", id="roi-bowtie"
    ),
    pytest.param({"slide": fseg_pb2.SlideRef()}, INVALID, "names no slide", id="no-slide"),
    pytest.param(
        {"slide": fseg_pb2.SlideRef(sha256="0" * 64)}, NOT_FOUND, "no uploaded", id="no-upload"
    ),
]


@pytest.mark.parametrize("fields,code,fragment", BAD_REQUESTS)
def test_bad_request_gets_its_status(env, fields, code, fragment):
    expect(code, fragment, segment, env, **fields)


@pytest.mark.parametrize(
    "name,kind",
    [("folder", "a directory"), ("pipe.svs", "a named pipe (FIFO)"), ("socket.svs", "a socket")],
)
def test_what_is_not_a_file_is_unreadable_to_statslide_and_refused_by_segment_alike(
    env, name, kind
):
    """StatSlide and Segment give one answer: not a slide, in the same sentence (a FIFO
    passed for readable, then Segment refused it)."""
    server = env["server"]
    status = server.stub().StatSlide(
        fseg_pb2.SlideRef(path=name), timeout=10, metadata=server.metadata()
    )
    sentence = f"slide {name} is {kind}, not a file"
    assert (status.readable, status.reason) == (False, sentence)
    with pytest.raises(grpc.RpcError) as info:
        segment(env, **path(name))
    assert (info.value.code(), info.value.details()) == (INVALID, sentence)


def upload(env, header: fseg_pb2.UploadHeader, data: bytes, chunk: int = 1 << 20):
    server = env["server"]

    def messages():
        yield fseg_pb2.UploadChunk(header=header)
        for offset in range(0, len(data), chunk):
            yield fseg_pb2.UploadChunk(data=data[offset : offset + chunk])

    return server.stub().UploadSlide(messages(), timeout=60, metadata=server.metadata())


def test_upload_with_a_wrong_hash_is_refused_and_not_kept(env):
    data = shared("slides/small.svs").read_bytes()
    header = fseg_pb2.UploadHeader(name="small.svs", sha256="1" * 64, size_bytes=len(data))
    expect(INVALID, "hash to " + hashlib.sha256(data).hexdigest(), upload, env, header, data)
    assert not list((env["uploads"] / "objects").rglob("*.svs"))


def test_upload_over_the_cap_is_refused_at_once(env):
    header = fseg_pb2.UploadHeader(name="big.svs", sha256="2" * 64, size_bytes=UPLOAD_CAP + 1)
    expect(grpc.StatusCode.FAILED_PRECONDITION, "at most 5000000", upload, env, header, b"x" * 10)


def test_upload_that_lies_about_its_size_is_cut_at_the_cap(env):
    data = b"y" * (UPLOAD_CAP + 10)
    header = fseg_pb2.UploadHeader(
        name="liar.svs", sha256=hashlib.sha256(data).hexdigest(), size_bytes=10
    )
    expect(
        grpc.StatusCode.FAILED_PRECONDITION,
        "exceeds this server's limit",
        upload,
        env,
        header,
        data,
    )


def test_a_good_upload_is_stored_once_by_its_hash(env):
    data = shared("slides/small.svs").read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    header = fseg_pb2.UploadHeader(name="small.svs", sha256=digest, size_bytes=len(data))
    first = upload(env, header, data)
    again = upload(env, header, data)
    assert (first.already_present, again.already_present) == (False, True)
    stored = list((env["uploads"] / "objects").rglob(f"{digest}*"))
    assert len(stored) == 1 and stored[0].read_bytes() == data


@pytest.mark.parametrize(
    "token,fragment", [(None, "needs a bearer token"), ("wrong", "not accepted")]
)
def test_calls_without_the_right_token_are_unauthenticated(env, token, fragment):
    metadata = env["server"].metadata(token)
    expect(
        grpc.StatusCode.UNAUTHENTICATED,
        fragment,
        segment,
        env,
        metadata=metadata,
        **path("cmu.svs"),
    )
    server = env["server"]
    with pytest.raises(grpc.RpcError) as info:
        server.stub().GetServerInfo(fseg_pb2.ServerInfoRequest(), metadata=metadata, timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.fixture(scope="module")
def warm(env):
    """One whole job first: the extractor is loaded on the first call, and a
    0.8 s deadline must fall inside the job, not inside that loading."""
    segment(env, **path("cmu.svs"))
    return env


def test_deadline_exceeded_stops_the_job_before_its_last_tile(warm):
    env = warm
    server = env["server"]
    before = _job_lines(server)
    expect(grpc.StatusCode.DEADLINE_EXCEEDED, "", segment, env, timeout=0.8, **path("cmu.svs"))
    wait_until(server.idle, "the stopped job to leave the server")
    assert_stopped_early(server, before)


def test_cancel_mid_stream_stops_the_job_before_its_last_tile(warm):
    server = warm["server"]
    before = _job_lines(server)
    call = server.stub().Segment(
        fseg_pb2.SegmentRequest(**path("cmu.svs")), timeout=120, metadata=server.metadata()
    )
    for event in call:
        if event.WhichOneof("event") == "progress":
            break
    call.cancel()
    with pytest.raises(grpc.RpcError) as info:
        next(call)
    assert info.value.code() == grpc.StatusCode.CANCELLED
    wait_until(server.idle, "the stopped job to leave the server")
    assert_stopped_early(server, before)


# Work done, not seconds: the server logs how far a stopped job got, so these
# tests hold however loaded the machine is.
_STOPPED = re.compile(r" INFO (\S+) stopped: cmu\.svs: .* after (\d+) of (\d+) tiles$", re.M)


def _job_lines(server) -> tuple[int, int]:
    """(finished, stopped) cmu.svs jobs in the server's log so far."""
    return finished_jobs(server).count("cmu.svs"), len(_STOPPED.findall(server.log_text()))


def assert_stopped_early(server, before: tuple[int, int]) -> None:
    """Since ``before``, one cmu.svs job stopped short of its last tile and none finished."""
    finished, stopped = before
    assert finished_jobs(server).count("cmu.svs") == finished, "the job ran to its end"
    records = _STOPPED.findall(server.log_text())
    assert len(records) == stopped + 1, server.log_text()[-2000:]
    _, done, total = records[-1]
    assert int(done) < int(total)


def test_a_good_request_still_succeeds_after_all_that(env):
    events = segment(env, **path("cmu.svs"), k=4, bank="tiny")
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "accepted" and kinds[-1] == "summary"
    summary = json.loads(events[-1].summary.json)
    assert summary["k"] == 4 and summary["bank"] == "tiny"
