"""Uploaded slides, stored by the SHA-256 of their content.

Bytes stream into a temporary file in ``<dir>/tmp`` while they are hashed;
only a complete file whose hash and size match the header is renamed into
``<dir>/objects/<aa>/<sha256><suffix>``, so a broken or lying upload leaves
nothing behind. The suffix of the client's file name is kept because some
readers look at it.
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
from ..tempfiles import remove_stale

STALE_AFTER_S = 6 * 3600  # an upload untouched this long belongs to a dead server
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
        self.tmp = self.root / "tmp"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        remove_stale(self.tmp.iterdir(), STALE_AFTER_S)

    def find(self, sha256: str) -> Path | None:
        """The stored file for ``sha256``, if any."""
        folder = self.objects / sha256[:2]
        if not folder.is_dir():
            return None
        return next((p for p in folder.iterdir() if p.name.split(".")[0] == sha256), None)

    def path_of(self, sha256: str) -> Path:
        _check_hash(sha256)
        found = self.find(sha256)
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
        _check_hash(sha256)
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
        suffix = Path(name).suffix.lower()
        suffix = suffix if _SUFFIX.match(suffix) else ""
        tmp = self.tmp / f"{uuid.uuid4().hex}{suffix}"
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
            final = self.objects / sha256[:2] / f"{sha256}{suffix}"
            final.parent.mkdir(exist_ok=True)
            os.replace(tmp, final)
            return final, False
        finally:
            tmp.unlink(missing_ok=True)

    def _write(self, tmp: Path, chunks: Iterable[bytes]) -> tuple[int, str]:
        hasher, size = hashlib.sha256(), 0
        with open(tmp, "wb") as out:
            for chunk in _bounded(chunks, self.max_bytes):
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


def _check_hash(sha256: str) -> None:
    if not _HEX64.match(sha256 or ""):
        raise InvalidInput(f"{sha256!r} is not a SHA-256 in lowercase hex (64 characters)")
