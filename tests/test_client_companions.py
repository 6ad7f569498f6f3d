"""Which files make a slide: the client finds a slide's companions itself (companions.py).

MIRAX and Hamamatsu folders here are laid out by the test with the files their
key files name; their contents are not images (the rules read only the key
files and the names). The DICOM files are the shared real two-file slide and a
real DICOM file of another series, written with pydicom.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest

from conftest import shared
from fseg_client.companions import slide_files
from fseg_client.errors import ClientError

SLIDEDAT = """[GENERAL]
SLIDE_ID=0123
[HIERARCHICAL]
INDEXFILE=Index.dat
[DATAFILE]
FILE_COUNT=2
FILE_0=Data0000.dat
FILE_1=Data0001.dat
"""


def names(main: Path) -> list[str]:
    return [relative for relative, _ in slide_files(main)]


def mirax(folder: Path, *, omit: str = "") -> Path:
    """A MIRAX layout: slide.mrxs and slide/ with Slidedat.ini and the files it names."""
    (folder / "slide").mkdir(parents=True)
    (folder / "slide" / "Slidedat.ini").write_text(SLIDEDAT, encoding="utf-8-sig")
    for name in ("Index.dat", "Data0000.dat", "Data0001.dat", "unrelated.txt"):
        if name != omit:
            (folder / "slide" / name).write_bytes(name.encode())
    main = folder / "slide.mrxs"
    main.write_bytes(b"mrxs")
    return main


def test_mirax_takes_slidedat_and_the_files_it_names(tmp_path: Path) -> None:
    main = mirax(tmp_path)
    assert names(main) == [
        "slide.mrxs",
        "slide/Data0000.dat",
        "slide/Data0001.dat",
        "slide/Index.dat",
        "slide/Slidedat.ini",
    ]
    assert all(path.is_file() for _, path in slide_files(main))


def test_mirax_without_a_data_file_it_names_is_refused_in_one_sentence(tmp_path: Path) -> None:
    main = mirax(tmp_path, omit="Data0001.dat")
    with pytest.raises(ClientError, match=r"needs .*slide/Data0001\.dat, which does not exist"):
        slide_files(main)


def test_mirax_without_its_folder_is_refused(tmp_path: Path) -> None:
    main = tmp_path / "alone.mrxs"
    main.write_bytes(b"mrxs")
    with pytest.raises(ClientError, match=r"lacks its Slidedat.ini, .*alone/Slidedat\.ini"):
        slide_files(main)


def test_hamamatsu_vms_takes_the_files_its_key_file_names(tmp_path: Path) -> None:
    (tmp_path / "scan.vms").write_text(
        "[Virtual Microscope Specimen]\nNoLayers=1\nImageFile=scan.jpg\n"
        "ImageFile(1,0)=scan_x1.jpg\nMapFile=scan_map.jpg\nOptimisationFile=scan.opt\n"
        "MacroImage=scan_macro.jpg\n"
    )
    for name in ("scan.jpg", "scan_x1.jpg", "scan_map.jpg", "scan.opt", "scan_macro.jpg"):
        (tmp_path / name).write_bytes(b"x")
    assert names(tmp_path / "scan.vms") == [
        "scan.vms", "scan.jpg", "scan.opt", "scan_macro.jpg", "scan_map.jpg", "scan_x1.jpg",
    ]  # fmt: skip
    (tmp_path / "scan.opt").unlink()
    with pytest.raises(ClientError, match=r"needs .*scan\.opt, which does not exist"):
        slide_files(tmp_path / "scan.vms")


def test_a_companion_named_outside_the_slide_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "inner").mkdir()
    (tmp_path / "secret.jpg").write_bytes(b"x")
    (tmp_path / "inner" / "scan.vms").write_text(
        "[Virtual Microscope Specimen]\nImageFile=../secret.jpg\n"
    )
    with pytest.raises(ClientError, match=r"names a companion file '\.\./secret\.jpg' that has"):
        slide_files(tmp_path / "inner" / "scan.vms")


def test_dicom_takes_the_files_of_its_series_and_no_other(tmp_path: Path) -> None:
    for name in ("boxes_0.dcm", "boxes_1.dcm"):
        shutil.copy(shared(f"slides/{name}"), tmp_path / name)
    other = pydicom.dcmread(tmp_path / "boxes_1.dcm")
    other.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.1"  # another slide's series
    other.save_as(tmp_path / "other_slide.dcm")
    (tmp_path / "notes.dcm").write_bytes(b"not DICOM")
    assert names(tmp_path / "boxes_0.dcm") == ["boxes_0.dcm", "boxes_1.dcm"]
    assert names(tmp_path / "other_slide.dcm") == ["other_slide.dcm"]


def test_single_file_formats_have_no_companions() -> None:
    main = shared("slides/CMU-1-Small-Region.svs")
    assert slide_files(main) == [(main.name, main)]
