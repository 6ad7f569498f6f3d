"""The address of a slide made of several files, shared by the client and the server.

A slide set is named by the SHA-256 of its manifest (see ``SlideSet`` in
``fseg.proto``): the same files under the same names give the same address on
every machine, so a server that holds a set already is asked for nothing.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Iterable
from pathlib import PurePosixPath

MANIFEST_HEADER = "fseg slide set v1\n"
#: Longest path of a file in a set, characters; and of one of its parts (a file name).
MAX_PATH_CHARS = 1024
MAX_PART_CHARS = 255


def manifest_text(main: str, files: Iterable[tuple[str, str, int]]) -> bytes:
    """The canonical manifest of a set: ``files`` are (path, sha256, size in bytes)."""
    lines = [MANIFEST_HEADER, f"main {main}\n"]
    for path, sha256, size in sorted(files, key=lambda f: f[0].encode("utf-8")):
        lines.append(f"{sha256} {size} {path}\n")
    return "".join(lines).encode("utf-8")


def manifest_sha256(main: str, files: Iterable[tuple[str, str, int]]) -> str:
    """The set's address: the hex SHA-256 of :func:`manifest_text`."""
    return hashlib.sha256(manifest_text(main, files)).hexdigest()


def path_problem(path: str) -> str | None:
    """Why ``path`` cannot name a file of a set (as a phrase), or None when it can.

    A set's paths are relative to the main file's folder and stay inside it, so
    the server can lay the files out as the scanner wrote them and nowhere else.
    """
    if not path:
        return "is empty"
    if len(path) > MAX_PATH_CHARS:
        return f"is longer than {MAX_PATH_CHARS} characters"
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in path):
        return "holds a control character"
    if "\\" in path:
        return "holds a backslash (use '/' between folders)"
    if path.startswith("/"):
        return "is absolute (paths are relative to the main file's folder)"
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "has an empty, '.' or '..' part"
    if any(len(part) > MAX_PART_CHARS for part in parts):
        return f"has a part longer than {MAX_PART_CHARS} characters"
    if PurePosixPath(path).as_posix() != path:
        return "is not in its plain form"
    return None
