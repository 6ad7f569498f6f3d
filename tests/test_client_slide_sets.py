"""Slides of several files through the real client and real servers on loopback (issue 19).

The slide is the shared two-file DICOM slide (``boxes_0.dcm``, its level, and
``boxes_1.dcm``, its thumbnail). One server cannot read it by path (its slide
root is an empty folder), so the client uploads it as one set; another reads it
by path, where OpenSlide finds the thumbnail beside the level itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import grpc
import numpy as np
import openslide
import pytest
from test_e2e_support import csv_rows, real_server

from conftest import shared
from fseg_client.calls import CallRegistry
from fseg_client.cli import main
from fseg_client.connect import Connection, Credentials
from fseg_client.errors import ClientError
from fseg_client.fingerprint import HashCache
from fseg_client.inputs import SlideInput
from fseg_client.remote_slides import SlideResolver
from fseg_server.concepts import ConceptBank
from fseg_server.extract.stain import STAIN_SPEC

DICOM = ("boxes_0.dcm", "boxes_1.dcm")
RESULTS = ("boxes_0.geojson", "boxes_0.labels.png", "boxes_0.overlay.png")


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A k=4 stain bank: the 16-px slide is too small to fit one on."""
    path = tmp_path_factory.mktemp("bank") / "bank.safetensors"
    dim = STAIN_SPEC.feature_dim
    centres = np.random.default_rng(0).random((4, dim), np.float32)
    ConceptBank("stain", dim, {4: centres}).save(path)
    return path


def start_upload_server(work: Path):
    """Takes uploads; its only slide root is an empty folder."""
    (work / "root").mkdir()
    args = ["--upload-dir", str(work / "uploads"), "--slide-root", str(work / "root")]
    return real_server(work, *args)


@pytest.fixture(scope="module")
def upload_server(tmp_path_factory: pytest.TempPathFactory):
    with start_upload_server(tmp_path_factory.mktemp("set-uploads")) as process:
        yield process


@pytest.fixture
def empty_server(tmp_path_factory: pytest.TempPathFactory):
    """An upload server of the test's own, whose store holds nothing yet."""
    with start_upload_server(tmp_path_factory.mktemp("set-uploads-empty")) as process:
        yield process


@pytest.fixture(scope="module")
def path_server(tmp_path_factory: pytest.TempPathFactory):
    """Reads the shared slides by path and takes no uploads."""
    work = tmp_path_factory.mktemp("set-paths")
    with real_server(work, "--slide-root", str(shared("slides/boxes_0.dcm").parent)) as process:
        yield process


def store(server) -> Path:
    return server.log.parent / "uploads"


def stored_files(server) -> list[Path]:
    return sorted(p for p in store(server).rglob("*") if not p.is_dir())


def segment(slide: Path, out: Path, server, bank: Path, *extra: str) -> int:
    return main(
        ["segment", str(slide), "--out", str(out), "--server", server.address,
         "--concepts", str(bank), "--k", "4", "--tissue", "off", "--min-area", "0",
         "--target-mpp", "0.5", "--quiet", *extra]
    )  # fmt: skip


def copy_dicom(folder: Path, names: tuple[str, ...] = DICOM) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(shared(f"slides/{name}"), folder / name)
    return folder / names[0]


def resolver() -> SlideResolver:
    return SlideResolver("always", HashCache(), CallRegistry())


def test_an_uploaded_dicom_series_gives_the_outputs_of_the_path_run(
    upload_server, path_server, bank, tmp_path
):
    slide = shared("slides/boxes_0.dcm")
    assert segment(slide, tmp_path / "uploaded", upload_server, bank) == 0
    assert segment(slide, tmp_path / "by-path", path_server, bank) == 0
    assert segment(slide, tmp_path / "always", upload_server, bank, "--upload", "always") == 0

    for name in RESULTS:
        by_path = (tmp_path / "by-path" / name).read_bytes()
        assert (tmp_path / "uploaded" / name).read_bytes() == by_path, name
        assert (tmp_path / "always" / name).read_bytes() == by_path, name
    # Identified by content, the slide is its set: the level and the thumbnail.
    always = json.loads((tmp_path / "always" / "boxes_0.json").read_text())["client"]
    assert set(always["slide"]) == {"name", "set_sha256"}
    assert segment(slide, tmp_path / "always", upload_server, bank, "--upload", "always") == 0
    assert csv_rows(tmp_path / "always")[0]["status"] == "skipped"
    assert json.loads((tmp_path / "uploaded" / "boxes_0.geojson").read_text())["features"]
    reference = {
        run: json.loads((tmp_path / run / "boxes_0.json").read_text())["client"]["reference"]
        for run in ("uploaded", "by-path")
    }
    assert reference == {"uploaded": "sha256", "by-path": "path"}

    # The server holds the slide as the scanner wrote it: both files, under their names,
    # and OpenSlide opening the level there finds the thumbnail instance beside it.
    (layout,) = store(upload_server).glob("sets/*/*/slide")
    assert sorted(p.name for p in layout.iterdir()) == list(DICOM)
    for name in DICOM:
        assert (layout / name).read_bytes() == shared(f"slides/{name}").read_bytes()
    with openslide.OpenSlide(layout / "boxes_0.dcm") as whole:
        assert "thumbnail" in whole.associated_images
    assert list((store(upload_server) / "tmp").iterdir()) == []


def test_files_the_server_holds_are_not_sent_again(empty_server, tmp_path):
    level_only = copy_dicom(tmp_path / "level", DICOM[:1])  # a folder with the level alone
    conn = Connection(empty_server.address, Credentials())
    sent: list[tuple[int, int]] = []
    first = resolver().upload(conn, SlideInput(level_only, "boxes_0"), lambda *p: sent.append(p))
    size = level_only.stat().st_size
    assert sent == [(size, size)]  # a single file: sent as one, as before sets
    assert first.sha256 == hashlib.sha256(level_only.read_bytes()).hexdigest()

    whole = copy_dicom(tmp_path / "whole")
    sent.clear()
    ref = resolver().upload(conn, SlideInput(whole, "boxes_0"), lambda *p: sent.append(p))
    companion_bytes = (whole.parent / "boxes_1.dcm").stat().st_size
    assert sent and {total for _, total in sent} == {companion_bytes}  # the level stayed put

    sent.clear()
    again = resolver().upload(conn, SlideInput(whole, "boxes_0"), lambda *p: sent.append(p))
    assert sent == [] and again.sha256 == ref.sha256  # the whole set is held: nothing sent
    status = empty_server.stub().StatSlide(again, timeout=10)
    assert status.readable and status.size_bytes == whole.stat().st_size


def test_a_companion_changed_after_hashing_is_refused_and_nothing_kept(empty_server, tmp_path):
    main_file = copy_dicom(tmp_path / "changed")
    companion = main_file.parent / "boxes_1.dcm"
    hashes = HashCache()
    hashes.sha256(companion)  # hashed as it was; then changed, keeping its size and time
    stat = companion.stat()
    data = bytearray(companion.read_bytes())
    data[-100] ^= 0xFF
    companion.write_bytes(bytes(data))
    os.utime(companion, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    before = stored_files(empty_server)

    slides = SlideResolver("auto", hashes, CallRegistry())
    conn = Connection(empty_server.address, Credentials())
    with pytest.raises(ClientError) as info:
        slides.slide_ref(conn, SlideInput(main_file, "boxes_0"))
    message = str(info.value)
    assert "\n" not in message
    assert "refused it as an upload (the bytes sent for boxes_1.dcm hash to" in message
    assert "(was the file changed?)" in message
    assert stored_files(empty_server) == before
    assert list((store(empty_server) / "tmp").iterdir()) == []


def test_a_missing_companion_is_refused_before_any_byte_is_sent(
    upload_server, bank, tmp_path, capsys
):
    # A MIRAX layout whose Slidedat.ini names a data file that is not there.
    folder = tmp_path / "slide"
    folder.mkdir()
    main_file = tmp_path / "slide.mrxs"
    main_file.write_bytes(b"never read: the client stops at the missing data file")
    (folder / "Slidedat.ini").write_text(
        "[HIERARCHICAL]\nINDEXFILE=Index.dat\n[DATAFILE]\nFILE_COUNT=1\nFILE_0=Data0000.dat\n"
    )
    (folder / "Index.dat").write_bytes(b"index")
    before = stored_files(upload_server)

    assert segment(main_file, tmp_path / "out", upload_server, bank) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("fseg: error: the slide ") and error.count(". ") == 0
    assert f"needs {folder / 'Data0000.dat'}, which does not exist" in error
    assert not (tmp_path / "out").exists()  # refused with the inputs, before any work
    assert stored_files(upload_server) == before


def test_a_server_without_set_uploads_is_named_as_such(path_server, tmp_path):
    slide = copy_dicom(tmp_path / "slide")
    conn = Connection(path_server.address, Credentials())
    with pytest.raises(grpc.RpcError) as info:
        resolver().upload(conn, SlideInput(slide, "boxes_0"))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "takes no uploads (started without --upload-dir)" in info.value.details()
