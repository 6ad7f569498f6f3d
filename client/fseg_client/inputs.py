"""Which slides a batch holds: files, folders, globs or a CSV manifest.

Each slide gets a stem (its file name without the last suffix, or the manifest's
``name``) that names its outputs; two slides with one stem are refused before
anything starts, since one would silently overwrite the other.
"""

from __future__ import annotations

import csv
import functools
import glob
import math
import os
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .companions import NAMED_COMPANIONS, slide_files
from .errors import ClientError
from .options import OUTPUT_FILES

SLIDE_SUFFIXES = frozenset(
    {
        ".svs",
        ".tif",
        ".tiff",
        ".ndpi",
        ".vms",
        ".vmu",
        ".scn",
        ".mrxs",
        ".svslide",
        ".bif",
        ".dcm",
        ".czi",
        ".png",
        ".jpg",
        ".jpeg",
    }
)
# Names the client writes itself; never taken for slides when a folder is listed.
_OUTPUT_ENDINGS = tuple(f".{suffix}" for suffix in OUTPUT_FILES.values())
# What fseg writes beside slides (results, summaries, the batch CSV, the bank).
_WRITTEN_ENDINGS = (*_OUTPUT_ENDINGS, ".json", ".csv", ".safetensors")
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class SlideInput:
    """One slide of the batch.

    Attributes:
        path: absolute path as the client sees it (or as the server sees it,
            when ``local`` is false).
        stem: names the outputs: ``<stem>.geojson``, ``<stem>.json`` ...
        local: whether the file exists on this machine; a path that exists only
            on the server is allowed with ``--upload never``.
        mpp: µm per level-0 pixel from a manifest's ``mpp`` column, which wins
            over ``--mpp`` and the slide's metadata; None when not given.
    """

    path: Path
    stem: str
    local: bool = True
    mpp: float | None = None

    @property
    def name(self) -> str:
        """The slide's file name (sent to the server; its suffix names the format)."""
        return self.path.name

    @functools.cached_property
    def files(self) -> list[tuple[str, Path]]:
        """(path relative to the main file's folder, local file) of every file of the
        slide, main file first (``companions.slide_files``). Found once per slide: a
        DICOM series is found by reading every sibling's header, and resuming, the
        fingerprint and the upload all need the same list.

        Raises:
            ClientError: a companion the slide needs is missing or cannot be named.
        """
        return slide_files(self.path)


def stem_of(path: Path) -> str:
    """The file name without its last suffix: ``a/b.ome.tiff`` -> ``b.ome``."""
    name = path.name
    return name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name


def is_slide_file(path: Path) -> bool:
    """Whether a file found in a folder looks like a slide or image to segment."""
    name = path.name.lower()
    return (
        not name.startswith(".")
        and path.suffix.lower() in SLIDE_SUFFIXES
        and not name.endswith(_OUTPUT_ENDINGS)
    )


def folder_slides(folder: Path) -> list[Path]:
    """The slide files directly inside ``folder``, sorted by name.

    A DICOM slide is a folder of .dcm files (one per level) that OpenSlide opens
    through any one of them, so only the first .dcm file of a folder is taken.
    """
    files = sorted(p for p in folder.iterdir() if p.is_file() and is_slide_file(p))
    dicoms = [p for p in files if p.suffix.lower() == ".dcm"]
    return [p for p in files if p.suffix.lower() != ".dcm" or p == dicoms[0]]


def _absolute(path: Path) -> Path:
    # abspath, not resolve: a server confines symlinks itself and the user's
    # spelling of the path is what its slide roots are written in.
    return Path(os.path.abspath(path.expanduser()))


def expand_argument(text: str, allow_remote: bool) -> list[SlideInput]:
    """One INPUT argument: a file, a folder or a glob pattern.

    Args:
        text: the argument as typed.
        allow_remote: accept a file that does not exist here as a server-side
            path (``--upload never``).
    """
    path = Path(text).expanduser()
    if path.is_dir():
        return [SlideInput(_absolute(p), stem_of(p)) for p in folder_slides(path)]
    if path.is_file():
        return [SlideInput(_absolute(path), stem_of(path))]
    if _GLOB_CHARS & set(text):
        found: list[SlideInput] = []
        for match in sorted(glob.glob(os.path.expanduser(text), recursive=True)):
            # A pattern picks what it names, except fseg's own outputs beside the slides.
            if not Path(match).name.lower().endswith(_WRITTEN_ENDINGS):
                found.extend(expand_argument(match, allow_remote=False))
        if not found:
            raise ClientError(f"the pattern {text} matches no slide files")
        return found
    if allow_remote:
        return [SlideInput(Path(text), stem_of(path), local=False)]
    raise ClientError(
        f"{text} does not exist (to name a path that exists only on the server, use --upload never)"
    )


MANIFEST_PROBLEMS_SHOWN = 5


def read_manifest(manifest: Path, allow_remote: bool) -> list[SlideInput]:
    """Slides listed in a CSV file with a ``path`` column and optional ``name`` and
    ``mpp`` (µm per level-0 pixel) columns.

    Relative paths are taken relative to the manifest's folder, so a manifest
    travels with its slides.
    """
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip().lower() for c in reader.fieldnames or []]
            rows = [
                {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
                for row in reader
            ]
    except OSError as exc:
        raise ClientError(f"cannot read the manifest {manifest} ({exc.strerror})") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise ClientError(f"the manifest {manifest} is not a readable CSV file ({exc})") from None
    if "path" not in columns:
        raise ClientError(f"the manifest {manifest} needs a 'path' column")
    slides, problems = [], []
    for line, row in enumerate(rows, start=2):
        if not row.get("path"):
            continue
        try:
            slides.append(_manifest_slide(manifest, line, row, allow_remote))
        except ClientError as exc:  # every bad row at once: a cohort is fixed in one pass
            problems.append(str(exc))
    if len(problems) == 1:
        raise ClientError(problems[0])
    if problems:
        shown = "; ".join(p.removesuffix(".") for p in problems[:MANIFEST_PROBLEMS_SHOWN])
        more = len(problems) - MANIFEST_PROBLEMS_SHOWN
        raise ClientError(
            f"{len(problems)} rows of {manifest} cannot be used: {shown}"
            + (f"; and {more} more" if more > 0 else "")
        )
    return slides


def _manifest_slide(manifest: Path, line: int, row: dict, allow_remote: bool) -> SlideInput:
    for column in ("path", "name"):
        control = _control_character(row.get(column, ""))
        if control is not None:
            # A NUL cannot reach the file system, and a newline would end up in
            # output file names, the batch CSV and the server's logs.
            raise ClientError(
                f"line {line} of {manifest}: the {column} holds a control character "
                f"(U+{ord(control):04X}); paths and names are one line of printable text"
            )
    path = Path(row["path"]).expanduser()
    if not path.is_absolute():
        path = manifest.parent / path
    name = row.get("name", "")
    if name and (name.startswith(".") or "/" in name or "\\" in name or len(name) > 200):
        raise ClientError(
            f"line {line} of {manifest}: the name {name!r} cannot name output files "
            "(no slashes, no leading dot)"
        )
    mpp = _manifest_mpp(row.get("mpp", ""), f"line {line} of {manifest}")
    exists = path.is_file()
    if not exists and not allow_remote:
        raise ClientError(f"line {line} of {manifest}: {path} does not exist")
    return SlideInput(_absolute(path), name or stem_of(path), local=exists, mpp=mpp)


def _control_character(text: str) -> str | None:
    """The first control, format or line-separator character of ``text``, if any."""
    if text.isprintable():  # False for every such character: the common case, fast
        return None
    return next((ch for ch in text if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")), None)


def _manifest_mpp(text: str, where: str) -> float | None:
    """A manifest's mpp cell: µm per level-0 pixel, or None when empty."""
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ClientError(f"{where}: mpp must be a positive number of µm per pixel, not {text!r}")
    return value


def collect_inputs(
    arguments: Sequence[str], manifest: Path | None, allow_remote: bool
) -> list[SlideInput]:
    """Every slide of the batch, in the order given, each file once.

    Raises:
        ClientError: nothing to do, a missing file or companion file, or two slides
            with one stem.
    """
    slides: list[SlideInput] = []
    if manifest is not None:
        slides.extend(read_manifest(manifest, allow_remote))
    for text in arguments:
        slides.extend(expand_argument(text, allow_remote))
    slides = _unique_paths(slides)
    for slide in slides:  # a slide that cannot be uploaded whole stops the batch before work
        # Cheap for the formats whose key file names its companions (one file read);
        # a DICOM series is found later, when the slide is fingerprinted or uploaded.
        if slide.local and slide.path.suffix.lower() in NAMED_COMPANIONS:
            _ = slide.files  # raises when a named companion is missing
    if not slides:
        # A file gives a slide and a pattern gives one or fails: only empty folders give none.
        where = (
            f": {', '.join(arguments)} {'holds' if len(arguments) == 1 else 'hold'} no slide "
            "or image files (folders are not searched recursively; a pattern such as "
            "'dir/**/*.svs' is)"
            if arguments
            else ": give files, folders, patterns or --manifest"
        )
        raise ClientError(f"no slides to segment{where}")
    check_unique_stems(slides)
    return slides


def _unique_paths(slides: Iterable[SlideInput]) -> list[SlideInput]:
    """Drop repeats of one file (a folder and a file in it, say), keeping the first."""
    seen: set[Path] = set()
    unique = []
    for slide in slides:
        if slide.path not in seen:
            seen.add(slide.path)
            unique.append(slide)
    return unique


def check_unique_stems(slides: Sequence[SlideInput]) -> None:
    """Refuse two slides that would write the same output files.

    Stems are compared without case, since macOS and Windows file systems would
    merge ``A.svs`` and ``a.tif`` outputs.
    """
    first: dict[str, SlideInput] = {}
    for slide in slides:
        key = slide.stem.casefold()
        if key in first:
            other = first[key]
            raise ClientError(
                f"{other.path} and {slide.path} would both write outputs named "
                f"{slide.stem!r}; rename one, or give them distinct names in a --manifest "
                "'name' column"
            )
        first[key] = slide
