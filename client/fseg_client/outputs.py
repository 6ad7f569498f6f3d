"""A slide's files in the output folder, and when they count as complete.

``<stem>.json`` (the summary) is written last and holds the request
fingerprint; its presence with a matching fingerprint, plus every requested
file, is what "done" means to a re-run.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path

from .atomic import sync_folder, write_json_atomic
from .errors import ClientError, ProtocolError
from .results import ResultAssembler

FINGERPRINT_KEY = "request_fingerprint"


def prepare_output_folder(out_dir: Path) -> Path:
    """Create ``out_dir`` if needed; refuse one that cannot take files (exit 2)."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ClientError(f"cannot create the output folder {out_dir} ({exc.strerror})") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):  # also false on a read-only file system
        raise ClientError(
            f"cannot write in the output folder {out_dir} ({_why_unwritable(out_dir)})"
        )
    return out_dir


def _why_unwritable(folder: Path) -> str:
    """Why ``folder`` takes no files, in a few words."""
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "its file system is mounted read-only"
    except (OSError, AttributeError):  # no statvfs on Windows
        pass
    return "no permission to write there"


def summary_path(out_dir: Path, stem: str) -> Path:
    """``<out_dir>/<stem>.json``."""
    return out_dir / f"{stem}.json"


def client_section(summary: dict) -> dict:
    """What the client wrote into a summary (server, files, slide identity); {} if none."""
    section = summary.get("client")
    return section if isinstance(section, dict) else {}


def result_names(stem: str, suffixes: list[str]) -> list[str]:
    """File names of a slide's results: ``x.geojson``, ``x.labels.png``, ..."""
    return [f"{stem}.{suffix}" for suffix in suffixes]


def output_names(stem: str, suffixes: list[str]) -> list[str]:
    """File names of a slide's outputs, summary included: ``x.geojson``, ... ``x.json``."""
    return [*result_names(stem, suffixes), f"{stem}.json"]


def read_summary(path: Path) -> dict | None:
    """A summary JSON as a dict, or None when it is missing or unreadable."""
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return payload if isinstance(payload, dict) else None


def completed_summary(
    out_dir: Path, stem: str, fingerprint: str, suffixes: list[str]
) -> dict | None:
    """The slide's summary if it is complete for ``fingerprint``, else None.

    Complete means: the summary exists, carries this fingerprint, and every
    requested output file exists beside it and was written by the run the
    summary describes (a file left by a run with other outputs does not count)
    with the size that run wrote (a truncated or replaced file does not count;
    summaries written before sizes were recorded are trusted on names alone).
    """
    summary = read_summary(summary_path(out_dir, stem))
    if summary is None or not vouches_for(summary, out_dir, stem, fingerprint, suffixes):
        return None
    return summary


def vouches_for(
    summary: dict, out_dir: Path, stem: str, fingerprint: str, suffixes: list[str]
) -> bool:
    """Whether ``summary``, already read, makes the slide complete (see ``completed_summary``)."""
    if summary.get(FINGERPRINT_KEY) != fingerprint:
        return False
    section = client_section(summary)
    written, sizes = section.get("files"), section.get("file_bytes", {})
    if not isinstance(written, list) or not isinstance(sizes, dict):
        return False
    return all(  # the summary itself is not listed
        name in written and _has_size(out_dir / name, sizes.get(name))
        for name in result_names(stem, suffixes)
    )


def _has_size(path: Path, size: object) -> bool:
    """Whether ``path`` is a file of ``size`` bytes (any size when None); one stat."""
    try:
        found = path.stat()
    except OSError:
        return False
    return stat.S_ISREG(found.st_mode) and (size is None or found.st_size == size)


def parse_server_summary(text: str) -> dict:
    """The Summary message's JSON as a dict."""
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"the summary is not valid JSON ({exc})") from None
    if not isinstance(payload, dict):
        raise ProtocolError("the summary is not a JSON object")
    return payload


def finish_slide(
    assembler: ResultAssembler,
    out_dir: Path,
    stem: str,
    server_summary: dict,
    fingerprint: str,
    client_info: dict,
) -> dict:
    """Put a slide's verified files in place; the summary goes last.

    The old summary is removed first, so that between the renames no summary
    vouches for a mix of old and new files; the folder is synced before the new
    summary is written, so that after a power cut the summary never vouches
    for renames the disk did not keep. It records each file's size in bytes.

    Returns:
        The summary as written.
    """
    path = summary_path(out_dir, stem)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    written = sorted(assembler.commit_all())
    sync_folder(out_dir)
    summary = dict(server_summary)
    summary[FINGERPRINT_KEY] = fingerprint
    summary["client"] = {
        **client_info,
        "files": [p.name for p in written],
        "file_bytes": {p.name: p.stat().st_size for p in written},
    }
    write_json_atomic(path, summary)
    sync_folder(out_dir)
    return summary
