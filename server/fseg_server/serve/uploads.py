"""Uploaded slides, stored by the SHA-256 of their content.

Bytes stream into a temporary file in ``<dir>/tmp`` while they are hashed;
only a complete file whose hash and size match the header is renamed into
``<dir>/objects/<aa>/<sha256><suffix>``, so a broken or lying upload leaves
nothing behind. Temporaries are named after the server writing them
(``tempfiles.OwnedTemps``, whose lock files are in ``<dir>/owners``): a server that
starts removes what a killed one left in ``tmp``, and nothing another live server on
the same volume is receiving. The suffix of the client's file name is kept because some
readers look at it. Slides of several files are sets of such objects, laid out
in ``<dir>/sets`` (see slide_sets.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import FailedPrecondition, InvalidInput, NotFound, ResourceExhausted
from ..tempfiles import OwnedTemps

# Temporaries of no known owner (an older fseg's, or where the volume takes no locks)
# untouched this long belong to a dead server.
STALE_AFTER_S = 6 * 3600
#: Uploads received at once. Each holds an RPC thread for its whole transfer;
#: the bound keeps threads free for health checks, server info and jobs.
UPLOADS_AT_ONCE = 8
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SUFFIX = re.compile(r"^\.[a-z0-9]{1,10}$")


class UploadStore:
    """A content-addressed directory of slides."""

    def __init__(self, root: Path, max_bytes: int, at_once: int = UPLOADS_AT_ONCE) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self._slots = threading.BoundedSemaphore(at_once)
        self._at_once = at_once
        self.objects = self.root / "objects"
        self.sets = self.root / "sets"
        self.tmp = self.root / "tmp"
        for folder in (self.objects, self.sets, self.tmp):
            folder.mkdir(parents=True, exist_ok=True)
        self.temps = OwnedTemps(self.tmp, owners=self.root / "owners")
        self.temps.sweep(STALE_AFTER_S)

    def find(self, sha256: str) -> Path | None:
        """The stored file for ``sha256``, if any."""
        folder = self.objects / sha256[:2]
        if not folder.is_dir():
            return None
        return next((p for p in folder.iterdir() if p.name.split(".")[0] == sha256), None)

    def find_set_main(self, sha256: str) -> Path | None:
        """The main file of the stored slide set named ``sha256``, if any.

        A set's folder appears whole (it is renamed into place), holding its
        manifest and, under ``slide/``, its files as the scanner laid them out.
        """
        folder = self.set_folder(sha256)
        try:
            main_line = (folder / "manifest").read_text("utf-8").splitlines()[1]
        except (FileNotFoundError, IndexError):
            return None
        return folder / "slide" / main_line.removeprefix("main ")

    def set_folder(self, sha256: str) -> Path:
        return self.sets / sha256[:2] / sha256

    def path_of(self, sha256: str) -> Path:
        """The file to open for an uploaded slide: a set's main file, or a single file."""
        check_hash(sha256)
        found = self.find_set_main(sha256) or self.find(sha256)
        if found is None:
            raise NotFound(f"no uploaded slide has SHA-256 {sha256}; upload it first")
        return found

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """One of the ``at_once`` upload streams, held from before the header is read to
        the end: a stream that sends nothing then holds a slot, never a thread beyond them.

        Raises:
            ResourceExhausted: as many uploads as the server takes at once are
                arriving (ask again shortly).
        """
        if not self._slots.acquire(blocking=False):
            raise ResourceExhausted(
                f"{self._at_once} uploads are arriving already; try again shortly"
            )
        try:
            yield
        finally:
            self._slots.release()

    def receive(
        self, name: str, sha256: str, declared_size: int, chunks: Iterable[bytes]
    ) -> tuple[Path, bool]:
        """Store an upload, in a :meth:`slot` the caller holds; returns (path, already_present).

        Raises:
            InvalidInput: a malformed header, a size or hash that does not match.
            FailedPrecondition: the file is larger than the server accepts (a
                refusal that asking again will not change).
        """
        check_hash(sha256)
        if declared_size > self.max_bytes:
            raise FailedPrecondition(
                f"the upload is {declared_size} bytes; this server accepts at most {self.max_bytes}"
            )
        existing = self.find(sha256)
        if existing is not None:
            return existing, True
        return self._store(name, sha256, declared_size, chunks)

    def _store(
        self, name: str, sha256: str, declared_size: int, chunks: Iterable[bytes]
    ) -> tuple[Path, bool]:
        suffix = object_suffix(name)
        tmp = self.tmp / self.temps.name(f"{uuid.uuid4().hex}{suffix}")
        try:
            size, digest = self._write(tmp, chunks)
            if size != declared_size:
                raise InvalidInput(
                    f"the upload carried {size} bytes but its header announced {declared_size}"
                )
            if digest != sha256:
                raise InvalidInput(
                    f"the uploaded bytes hash to {digest}, not to the announced {sha256}"
                )
            return self.keep(tmp, sha256, suffix), False
        finally:
            tmp.unlink(missing_ok=True)

    def keep(self, verified: Path, sha256: str, suffix: str) -> Path:
        """Move a file whose bytes hash to ``sha256`` into the objects (one rename)."""
        final = self.objects / sha256[:2] / f"{sha256}{suffix}"
        final.parent.mkdir(exist_ok=True)
        os.replace(verified, final)
        return final

    def _write(self, tmp: Path, chunks: Iterable[bytes]) -> tuple[int, str]:
        return write_hashed(tmp, _bounded(chunks, self.max_bytes))


def object_suffix(name: str) -> str:
    """The suffix an object keeps from its client-side name ("" when odd)."""
    suffix = Path(name).suffix.lower()
    return suffix if _SUFFIX.match(suffix) else ""


def write_hashed(path: Path, chunks: Iterable[bytes]) -> tuple[int, str]:
    """Write ``chunks`` to ``path``; returns (bytes written, their hex SHA-256)."""
    hasher, size = hashlib.sha256(), 0
    with open(path, "wb") as out:
        for chunk in chunks:
            hasher.update(chunk)
            out.write(chunk)
            size += len(chunk)
    return size, hasher.hexdigest()


def _bounded(chunks: Iterable[bytes], limit: int) -> Iterator[bytes]:
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise FailedPrecondition(f"the upload exceeds this server's limit of {limit} bytes")
        yield chunk


def check_hash(sha256: str) -> None:
    if not _HEX64.match(sha256 or ""):
        raise InvalidInput(f"{sha256!r} is not a SHA-256 in lowercase hex (64 characters)")
