"""Request fingerprints: has this slide already been done with these options?

A fingerprint is the SHA-256 of a canonical JSON document holding the options,
the bank's digest and the slide's identity. It is stored in the slide's summary
JSON; a re-run skips the slide when the stored value equals the new one.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
from pathlib import Path

from fseg_proto import PROTOCOL, fseg_pb2
from fseg_proto.slide_sets import manifest_sha256

from .inputs import SlideInput
from .options import RequestOptions

HASH_BLOCK_BYTES = 4 * 1024 * 1024


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's content, read in 4 MiB blocks."""
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(HASH_BLOCK_BYTES):
            hasher.update(block)
    return hasher.hexdigest()


class HashCache:
    """SHA-256 of local slides, computed at most once per file version.

    Keyed by path, size and mtime, so an edited file is hashed again. Known
    digests (from earlier runs' summaries) can be fed in with :meth:`remember`.
    Safe to share between threads.
    """

    def __init__(self) -> None:
        self._known: dict[tuple[str, int, int], str] = {}
        self._lock = threading.Lock()
        self._path_locks: dict[str, threading.Lock] = {}

    @staticmethod
    def _key(path: Path) -> tuple[str, int, int]:
        stat = path.stat()
        return (str(path), stat.st_size, stat.st_mtime_ns)

    def remember(self, path: Path, size: int, mtime_ns: int, digest: str) -> None:
        """Record a digest computed earlier for this exact file version."""
        with self._lock:
            self._known[(str(path), size, mtime_ns)] = digest

    def sha256(self, path: Path) -> str:
        """The file's digest; hashes it unless this version was seen before."""
        with self._lock:
            path_lock = self._path_locks.setdefault(str(path), threading.Lock())
        with path_lock:  # two threads wanting one file hash it once
            key = self._key(path)
            with self._lock:
                if key in self._known:
                    return self._known[key]
            digest = sha256_file(path)
            with self._lock:
                self._known[key] = digest
            return digest


def slide_identity(slide: SlideInput, by_content: bool, hashes: HashCache) -> dict:
    """What identifies the slide's data.

    Args:
        by_content: identify by SHA-256 (``--upload always``: the server sees only
            the bytes) instead of by file name, size and modification time.

    A slide of several files (companions.py) is identified by all of them: by its
    set's address, or by each companion's name, size and modification time too.

    Raises:
        ClientError: a companion the slide needs is missing.
        OSError: a file cannot be read.
    """
    if not slide.local:
        return {"path": str(slide.path)}
    files = slide.files
    if by_content and len(files) > 1:
        # Not "sha256": that key is reused as the main file's own digest (plan.py).
        return {"name": slide.name, "set_sha256": set_address(slide_set(files, hashes))}
    if by_content:
        return {"name": slide.name, "sha256": hashes.sha256(slide.path)}
    stat = os.stat(slide.path)
    identity: dict = {"name": slide.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if len(files) > 1:
        identity["companions"] = [
            [relative, (s := path.stat()).st_size, s.st_mtime_ns] for relative, path in files[1:]
        ]
    return identity


def slide_set(files: list[tuple[str, Path]], hashes: HashCache) -> fseg_pb2.SlideSet:
    """The SlideSet message of a slide's files (relative path, local file; main first)."""
    entries = [
        fseg_pb2.SlideFile(path=name, sha256=hashes.sha256(path), size_bytes=path.stat().st_size)
        for name, path in files
    ]
    return fseg_pb2.SlideSet(main=files[0][0], files=entries)


def set_address(message: fseg_pb2.SlideSet) -> str:
    """The SHA-256 that names a slide set on every server."""
    return manifest_sha256(message.main, [(f.path, f.sha256, f.size_bytes) for f in message.files])


def request_fingerprint(options: RequestOptions, bank_digest: str, identity: dict) -> str:
    """Hex SHA-256 of everything that determines a slide's result.

    The document is ``{"bank", "options", "protocol", "slide"}`` as compact JSON
    with sorted keys; all but the slide's identity are written once per batch
    (a million-slide manifest would otherwise spend half a minute on them).

    Args:
        options: the batch's options (extractor included).
        bank_digest: :attr:`fseg_client.bankfile.BankSpec.digest`.
        identity: :func:`slide_identity`.
    """
    text = _document_head(options, bank_digest) + _compact(identity) + "}"
    return hashlib.sha256(text.encode("ascii")).hexdigest()


@functools.lru_cache(maxsize=64)
def _document_head(options: RequestOptions, bank_digest: str) -> str:
    """The fingerprint document up to the slide's identity: its keys sort after the others."""
    return (
        f'{{"bank":{_compact(bank_digest)},"options":{_compact(options.canonical())},'
        f'"protocol":{_compact(PROTOCOL)},"slide":'
    )


def _compact(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
