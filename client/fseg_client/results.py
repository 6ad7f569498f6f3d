"""Reassembling result files from the chunks of a Segment stream.

Chunks go straight to a temporary file beside the destination, so memory does
not grow with the result; each file is checked against the ``total_bytes`` and
``sha256`` of its last chunk before it may be renamed into place.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from .atomic import commit, discard, temp_path
from .errors import ProtocolError

# A result file's suffix as the server names it ("geojson", "labels.png"): one
# plain file name part, so a server can never make the client write elsewhere.
_SAFE_SUFFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$")


@dataclass
class _PendingFile:
    """One result file being received."""

    final: Path
    tmp: Path
    handle: BinaryIO | None
    hasher: hashlib._Hash = field(default_factory=hashlib.sha256)
    written: int = 0
    complete: bool = False


class ResultAssembler:
    """Collects the ResultChunks of one slide into ``<out_dir>/<stem>.<file>``.

    Use :meth:`add` for every chunk, :meth:`require` to check that the expected
    files arrived whole, then :meth:`commit_all` (rename into place) or
    :meth:`discard_all` (on any failure; safe to call twice).
    """

    def __init__(self, out_dir: Path, stem: str, names: Mapping[str, str] | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.stem = stem
        #: File names by suffix, when the caller knows every file to expect.
        self.names = names
        self._files: dict[str, _PendingFile] = {}

    def final_path(self, suffix: str) -> Path:
        """Where the result file ``suffix`` ends up."""
        if self.names is not None:
            return self.out_dir / self.names[suffix]
        return self.out_dir / f"{self.stem}.{suffix}"

    def add(self, suffix: str, offset: int, data: bytes, last: bool, total: int, sha: str) -> None:
        """Append one chunk; raises :class:`ProtocolError` for anything out of order.

        Args:
            suffix: ResultChunk.file ("geojson", "labels.png", ...).
            offset: the chunk's byte offset in the file; must equal the bytes
                received so far (chunks come in order).
            data: the chunk's bytes.
            last: set on the file's last chunk.
            total: ResultChunk.total_bytes (checked when ``last``; 0 is allowed
                before then).
            sha: hex SHA-256 of the whole file (checked when ``last``).
        """
        pending = self._open(suffix)
        if pending.complete:
            raise ProtocolError(f"{suffix} received a chunk after its last one")
        if offset != pending.written:
            raise ProtocolError(
                f"{suffix} chunk at byte {offset} does not follow the {pending.written} "
                "bytes received so far"
            )
        if total and pending.written + len(data) > total:
            raise ProtocolError(f"{suffix} grew past its announced {total} bytes")
        assert pending.handle is not None
        pending.handle.write(data)
        pending.hasher.update(data)
        pending.written += len(data)
        if last:
            self._finish(suffix, pending, total, sha)

    def _open(self, suffix: str) -> _PendingFile:
        pending = self._files.get(suffix)
        if pending is not None:
            return pending
        unexpected = self.names is not None and suffix not in self.names
        if unexpected or not _SAFE_SUFFIX.match(suffix) or len(suffix) > 64:
            raise ProtocolError(f"the server named a result file {suffix!r}", retryable=False)
        final = self.final_path(suffix)
        tmp = temp_path(final)
        pending = _PendingFile(final=final, tmp=tmp, handle=open(tmp, "wb"))  # noqa: SIM115
        self._files[suffix] = pending
        return pending

    def _finish(self, suffix: str, pending: _PendingFile, total: int, sha: str) -> None:
        if total != pending.written:
            raise ProtocolError(
                f"{suffix} has {pending.written} bytes but the server announced {total}"
            )
        digest = pending.hasher.hexdigest()
        if sha.lower() != digest:
            raise ProtocolError(f"{suffix} failed its SHA-256 check ({digest} != {sha or '—'})")
        assert pending.handle is not None
        pending.handle.flush()
        os.fsync(pending.handle.fileno())
        pending.handle.close()
        pending.handle = None
        pending.complete = True

    @property
    def received(self) -> list[str]:
        """Suffixes of the files received whole so far."""
        return [suffix for suffix, p in self._files.items() if p.complete]

    def require(self, suffixes: list[str]) -> None:
        """Check that every file started is complete and every one of ``suffixes`` arrived."""
        cut = [s for s, p in self._files.items() if not p.complete]
        if cut:
            raise ProtocolError(f"the stream ended before {', '.join(cut)} was complete")
        missing = [s for s in suffixes if s not in self._files]
        if missing:
            raise ProtocolError(f"the server sent no {', '.join(missing)}", retryable=False)

    def commit_all(self) -> list[Path]:
        """Rename every complete file into place; returns their final paths."""
        done = []
        for pending in self._files.values():
            if pending.complete:
                commit(pending.tmp, pending.final)
                done.append(pending.final)
        self._files.clear()
        return done

    def discard_all(self) -> None:
        """Close and remove every temporary file."""
        for pending in self._files.values():
            if pending.handle is not None:
                pending.handle.close()
                pending.handle = None
            discard(pending.tmp)
        self._files.clear()
