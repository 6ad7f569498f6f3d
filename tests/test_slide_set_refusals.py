"""A slide set that is not whole, not true or not safe is refused, and leaves nothing behind.

Against a real server on loopback, with the shared two-file DICOM slide
(``boxes_0.dcm``, its level, and ``boxes_1.dcm``, its thumbnail, one series):
each refusal gets its gRPC status and one sentence, the upload store holds no
file afterwards (not even the files of the set that were right), and the
server keeps serving. This server never accepts a set, so its store must stay
empty throughout.
"""

from __future__ import annotations

import hashlib
import threading

import grpc
import pytest
from test_e2e_support import real_server

from conftest import shared
from fseg_proto import fseg_pb2

IDLE_S = 1.0
CAP = 100_000  # bytes; the DICOM slide is 11,160
INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("set-refusals")
    with real_server(
        work, "--upload-dir", str(work / "uploads"), "--upload-max-bytes", str(CAP),
        "--upload-idle-seconds", str(IDLE_S),
    ) as process:  # fmt: skip
        yield process


@pytest.fixture(scope="module")
def dicom() -> dict[str, bytes]:
    return {name: shared(f"slides/{name}").read_bytes() for name in ("boxes_0.dcm", "boxes_1.dcm")}


@pytest.fixture(autouse=True)
def nothing_kept(server):
    yield
    store = server.log.parent / "uploads"
    kept = [p for p in store.rglob("*") if not p.is_dir() and p.parent != store / "owners"]
    assert kept == []  # the running server's lock file (owners/) aside
    assert list((store / "tmp").iterdir()) == []
    assert server.serving()


def slide_set(
    files: dict[str, bytes], main: str = "boxes_0.dcm", **sizes: int
) -> fseg_pb2.SlideSet:
    """The set of ``files`` (path: bytes); ``sizes`` overrides a size (by the path's stem)."""
    entries = [
        fseg_pb2.SlideFile(
            path=path,
            sha256=hashlib.sha256(data).hexdigest(),
            size_bytes=sizes.get(path.split(".")[0], len(data)),
        )
        for path, data in files.items()
    ]
    return fseg_pb2.SlideSet(main=main, files=entries)


def upload(server, manifest: fseg_pb2.SlideSet, sent: dict[str, bytes], pieces: int = 3):
    """UploadSlideSet sending ``sent`` (path: bytes, in order), each in a few pieces."""

    def messages():
        header = fseg_pb2.SlideSetHeader(set=manifest, sending=list(sent))
        yield fseg_pb2.SlideSetChunk(header=header)
        for data in sent.values():
            step = max(1, len(data) // pieces)
            for start in range(0, len(data), step):
                yield fseg_pb2.SlideSetChunk(data=data[start : start + step])

    return server.stub().UploadSlideSet(messages(), timeout=30)


def refused(code: grpc.StatusCode, call, *args) -> str:
    with pytest.raises(grpc.RpcError) as info:
        call(*args)
    details = info.value.details()
    assert info.value.code() == code, details
    assert "\n" not in details and "Traceback" not in details and "internal" not in details
    return details


def test_the_server_says_which_files_it_lacks_and_stores_nothing_for_asking(server, dicom):
    status = server.stub().StatSlideSet(slide_set(dicom), timeout=10)
    assert not status.complete
    assert sorted(status.missing) == ["boxes_0.dcm", "boxes_1.dcm"]
    assert status.size_bytes == sum(len(d) for d in dicom.values())


def test_a_missing_companion_is_refused_and_the_file_that_came_is_not_kept(server, dicom):
    details = refused(
        PRECONDITION, upload, server, slide_set(dicom), {"boxes_0.dcm": dicom["boxes_0.dcm"]}
    )
    assert "boxes_1.dcm was neither sent nor is held by the server" in details


def test_an_altered_companion_is_refused_and_no_file_of_its_set_is_kept(server, dicom):
    altered = bytearray(dicom["boxes_1.dcm"])
    altered[-100] ^= 0xFF  # one byte of its pixels, after the manifest was made
    details = refused(
        INVALID, upload, server, slide_set(dicom), {**dicom, "boxes_1.dcm": bytes(altered)}
    )
    digest = hashlib.sha256(dicom["boxes_1.dcm"]).hexdigest()
    assert f"boxes_1.dcm hash to {hashlib.sha256(altered).hexdigest()}" in details
    assert f"not to its SHA-256 in the slide set, {digest}" in details


@pytest.mark.parametrize(
    ("sent_bytes", "fragment"),
    [
        (lambda d: d[:-10], "the upload ended 5648 bytes into boxes_1.dcm, which has 5658"),
        (lambda d: d + b"more", "more bytes than its slide set's files"),
    ],
    ids=["short", "long"],
)
def test_bytes_that_do_not_fill_the_files_exactly_are_refused(server, dicom, sent_bytes, fragment):
    sent = {**dicom, "boxes_1.dcm": sent_bytes(dicom["boxes_1.dcm"])}
    assert fragment in refused(INVALID, upload, server, slide_set(dicom), sent)


@pytest.mark.parametrize(
    ("paths", "main", "fragment"),
    [
        (["boxes_0.dcm", "../boxes_1.dcm"], "boxes_0.dcm", "has an empty, '.' or '..' part"),
        (["boxes_0.dcm", "/etc/boxes_1.dcm"], "boxes_0.dcm", "is absolute"),
        (["boxes_0.dcm", "sub\\boxes_1.dcm"], "boxes_0.dcm", "holds a backslash"),
        (["boxes_0.dcm", "boxes\n1.dcm"], "boxes_0.dcm", "holds a control character"),
        (["boxes_0.dcm", "boxes_0.dcm"], "boxes_0.dcm", "names boxes_0.dcm twice"),
        (["boxes_0.dcm", "boxes_1.dcm"], "other.dcm", "main file 'other.dcm' is not one of"),
        (["a", "a/boxes_1.dcm"], "a", "names a both as a file and as a folder"),
        (["boxes_0.dcm"], "boxes_0.dcm", "between 2 and 1000 files, not 1"),
    ],
    ids=["dotdot", "absolute", "backslash", "newline", "twice", "main", "file-and-folder", "one"],
)
def test_a_set_whose_paths_could_escape_or_clash_is_refused(server, dicom, paths, main, fragment):
    data = list(dicom.values())
    files = {path: data[i % 2] for i, path in enumerate(paths)}
    manifest = slide_set(files, main=main)
    if len(set(paths)) < len(paths):  # a dict cannot hold the repeat: add it by hand
        manifest.files.append(manifest.files[0])
    assert fragment in refused(INVALID, server.stub().StatSlideSet, manifest)
    assert fragment in refused(INVALID, upload, server, manifest, {})


def test_a_set_larger_than_the_server_takes_is_refused_before_its_bytes(server, dicom):
    manifest = slide_set(dicom, boxes_1=CAP)
    details = refused(PRECONDITION, server.stub().StatSlideSet, manifest)
    assert (
        f"{CAP + len(dicom['boxes_0.dcm'])} bytes together; this server accepts at most" in details
    )
    assert "at most 100000" in refused(PRECONDITION, upload, server, manifest, dicom)


def test_a_set_upload_that_goes_silent_is_cancelled_and_its_staged_file_dropped(server, dicom):
    stop = threading.Event()

    def messages():
        header = fseg_pb2.SlideSetHeader(set=slide_set(dicom), sending=list(dicom))
        yield fseg_pb2.SlideSetChunk(header=header)
        yield fseg_pb2.SlideSetChunk(data=dicom["boxes_0.dcm"])  # one file, then silence
        stop.wait(30)

    try:
        refused(grpc.StatusCode.CANCELLED, server.stub().UploadSlideSet, messages())
    finally:
        stop.set()
