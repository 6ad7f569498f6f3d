"""The files a slide is made of: its main file and the companions OpenSlide reads with it.

Most formats are one file. Three are several, and an upload must carry them all:

- MIRAX (``.mrxs``): the folder of the same name beside it, with its
  ``Slidedat.ini`` and the index and data files that ``Slidedat.ini`` names
  (``[HIERARCHICAL] INDEXFILE``, ``[DATAFILE] FILE_0`` ...).
- Hamamatsu VMS and VMU (``.vms``, ``.vmu``): the files the key file names
  (``ImageFile``, ``ImageFile(x,y)``, ``MapFile``, ``OptimisationFile``,
  ``MacroImage``), relative to its folder.
- DICOM (``.dcm``): the other ``.dcm`` files of the folder whose
  SeriesInstanceUID is the main file's (one slide's levels, label, macro and
  thumbnail instances share it).

A companion that the main file names but that does not exist is refused before
anything is sent, since the server could not open the slide without it.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

from fseg_proto.slide_sets import path_problem

from .errors import ClientError

# Keys of a Hamamatsu key file that name files, as configparser spells them (lower case).
_VMS_FILE_KEY = re.compile(r"^(imagefile(\(\d+,\d+\))?|mapfile|optimisationfile|macroimage)$")


#: Formats whose key file names its companions, so that a missing one is found by
#: reading that file alone. DICOM series are found, not named, so none is missing.
NAMED_COMPANIONS = (".mrxs", ".vms", ".vmu")


def slide_files(main: Path) -> list[tuple[str, Path]]:
    """(path relative to the main file's folder, local file) of every file of the
    slide, the main file first.

    Raises:
        ClientError: a companion the slide needs is missing or cannot be named.
    """
    suffix = main.suffix.lower()
    if suffix == ".mrxs":
        companions = _mirax_files(main)
    elif suffix in (".vms", ".vmu"):
        companions = _hamamatsu_files(main)
    elif suffix == ".dcm":
        companions = _dicom_series_files(main)
    else:
        companions = []
    files = [(main.name, main)]
    for relative in sorted(set(companions) - {main.name}):
        problem = path_problem(relative)
        if problem is not None:
            raise ClientError(f"{main} names a companion file {relative!r} that {problem}")
        files.append((relative, main.parent / relative))
    return files


def _mirax_files(main: Path) -> list[str]:
    folder = main.parent / main.stem
    ini = _read_ini(main, folder / "Slidedat.ini", "its Slidedat.ini")
    named = [ini.get("HIERARCHICAL", "INDEXFILE", fallback="")]
    count = ini.getint("DATAFILE", "FILE_COUNT", fallback=0)
    named += [ini.get("DATAFILE", f"FILE_{i}", fallback="") for i in range(count)]
    files = ["Slidedat.ini", *(name for name in named if name)]
    _require(main, [folder / name for name in files])
    return [f"{main.stem}/{name}" for name in files]


def _hamamatsu_files(main: Path) -> list[str]:
    ini = _read_ini(main, main, "its key file")
    named = [
        value.strip()
        for section in ini.sections()
        for key, value in ini.items(section)
        if _VMS_FILE_KEY.match(key) and value.strip()
    ]
    _require(main, [main.parent / name for name in named])
    return named


def _dicom_series_files(main: Path) -> list[str]:
    series = _series_uid(main)
    if series is None:  # not DICOM we can read: the server's reader will say what is wrong
        return []
    siblings = (p for p in main.parent.iterdir() if p.suffix.lower() == ".dcm" and p.is_file())
    return [p.name for p in siblings if p != main and _series_uid(p) == series]


def _series_uid(path: Path) -> str | None:
    """The file's DICOM SeriesInstanceUID, read from its header alone; None if unreadable."""
    import pydicom  # only DICOM slides pay for the import
    from pydicom.errors import InvalidDicomError

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
    except (InvalidDicomError, OSError, ValueError, EOFError):
        return None
    uid = header.get("SeriesInstanceUID")
    return str(uid) if uid else None


def _read_ini(main: Path, path: Path, what: str) -> configparser.ConfigParser:
    ini = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        ini.read_string(path.read_bytes().decode("utf-8-sig", errors="replace"))
    except FileNotFoundError:
        raise ClientError(f"the slide {main} lacks {what}, {path}") from None
    except OSError as exc:
        raise ClientError(f"cannot read {path}, {what} of {main} ({exc.strerror})") from None
    except configparser.Error as exc:
        raise ClientError(f"{path}, {what} of {main}, is not readable ({exc.message})") from None
    return ini


def _require(main: Path, files: list[Path]) -> None:
    absent = [path for path in files if not path.is_file()]
    if absent:
        more = f" (and {len(absent) - 1} more)" if len(absent) > 1 else ""
        raise ClientError(
            f"the slide {main} needs {absent[0]}, which does not exist{more}; "
            "copy the slide's files together"
        )
