"""Files that appear complete or not at all.

Everything the client writes goes to ``.<name>.<pid>.tmp`` in the destination's
own folder (so the rename stays on one file system) and is renamed with
``os.replace`` once complete and flushed to disk. A client killed at any moment
leaves at worst a dot-tmp file, which the next run of the batch removes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

_TEMP_NAME = re.compile(r"^\.(?P<final>.+)\.(?P<pid>\d+)\.tmp$")


def temp_path(path: Path) -> Path:
    """The temporary name this process uses while writing ``path``."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def discard(tmp: Path) -> None:
    """Remove a temporary file if it is there."""
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()


def sync_folder(folder: Path) -> None:
    """Flush a folder's entries (the renames into it) to disk.

    A file's own fsync does not make its rename durable: after a power cut the
    folder could still show the old file under the new summary. Where folders
    cannot be opened (Windows), this does nothing.
    """
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def commit(tmp: Path, path: Path) -> None:
    """Make the finished temporary file ``tmp`` visible as ``path``."""
    os.chmod(tmp, 0o644)  # results are meant to be shared, whatever the umask of mkstemp
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_write(path: Path) -> Iterator[BinaryIO]:
    """Open ``path`` for binary writing; it appears under its name only on success.

    An exception inside the ``with`` block removes the temporary file and leaves
    any previous ``path`` untouched.
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        commit(tmp, path)
    except BaseException:
        discard(tmp)
        raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path) as handle:
        handle.write(data)


def write_json_atomic(path: Path, payload: object) -> None:
    """Write ``payload`` as indented UTF-8 JSON to ``path`` atomically."""
    text = json.dumps(payload, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))


def _process_alive(pid: int) -> bool:
    """Whether a process with this id exists (it may be someone else's)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except OSError:
        return False
    return True


def clean_stale_temp_files(folder: Path, final_names: Iterable[str]) -> list[Path]:
    """Remove temporary files that earlier, interrupted runs left for ``final_names``.

    Only dot-tmp files named after one of ``final_names`` are touched, and only
    when the process that wrote them is gone, so a second client writing
    elsewhere in the same folder is left alone.

    Returns:
        The files removed.
    """
    wanted = set(final_names)
    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _TEMP_NAME.match(entry.name)
        if not match or match["final"] not in wanted or not entry.is_file():
            continue
        if _process_alive(int(match["pid"])):
            continue
        discard(entry)
        removed.append(entry)
    return removed
