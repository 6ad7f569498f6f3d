"""Slides made of several files (MIRAX, a DICOM series, Hamamatsu VMS), uploaded as one.

Each file of a set is stored as a single-file upload is, under its SHA-256 in
``objects/``. The slide is the set, named by the SHA-256 of its manifest
(``fseg_proto.slide_sets``), and laid out in ``sets/<aa>/<sha256>/slide/`` as the
scanner wrote it (hard links to the objects), since OpenSlide finds a slide's
companions by their names beside its main file.

A set is staged in one folder in ``tmp/``: the files sent are written and
verified there, the layout is built there, and only when every file of the set
is present with its size and hash are the new files moved into ``objects/`` and
the layout renamed into ``sets/``. A refused set leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from fseg_proto import fseg_pb2
from fseg_proto.slide_sets import manifest_sha256, manifest_text, path_problem

from ..errors import FailedPrecondition, InvalidInput
from .uploads import UploadStore, check_hash, object_suffix, write_hashed

#: Files in one set. DICOM series and MIRAX folders hold tens to a few hundred.
MAX_SET_FILES = 1000


@dataclass(frozen=True)
class SetFile:
    path: str  # relative to the main file's folder, '/' between folders
    sha256: str
    size: int  # bytes


@dataclass(frozen=True)
class SetManifest:
    """A checked ``SlideSet``: safe paths, well-formed hashes, within the size limit."""

    main: str
    files: dict[str, SetFile]  # by path
    sha256: str  # the set's address

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files.values())

    def text(self) -> bytes:
        return manifest_text(self.main, _triples(self.files.values()))


def checked_manifest(message: fseg_pb2.SlideSet, max_bytes: int) -> SetManifest:
    """The set a client described, or the one sentence that says what is wrong with it.

    Raises:
        InvalidInput: no files, too many, a path that could escape the set's
            folder, a repeated path, a main file not among the files, a bad hash.
        FailedPrecondition: the files together exceed the server's upload limit.
    """
    if not 2 <= len(message.files) <= MAX_SET_FILES:
        raise InvalidInput(
            f"a slide set has between 2 and {MAX_SET_FILES} files, not {len(message.files)} "
            "(upload a single-file slide with UploadSlide)"
        )
    files: dict[str, SetFile] = {}
    for entry in message.files:
        problem = path_problem(entry.path)
        if problem is not None:
            raise InvalidInput(f"the slide set's file path {entry.path[:200]!r} {problem}")
        if entry.path in files:
            raise InvalidInput(f"the slide set names {entry.path} twice")
        check_hash(entry.sha256)
        files[entry.path] = SetFile(entry.path, entry.sha256, entry.size_bytes)
    if message.main not in files:
        raise InvalidInput(
            f"the slide set's main file {message.main[:200]!r} is not one of its files"
        )
    _check_prefixes(files)
    manifest = SetManifest(
        message.main, files, manifest_sha256(message.main, _triples(files.values()))
    )
    if manifest.size > max_bytes:
        raise FailedPrecondition(
            f"the slide's files are {manifest.size} bytes together; "
            f"this server accepts at most {max_bytes}"
        )
    return manifest


class SlideSets:
    """The slide sets of an upload store."""

    def __init__(self, store: UploadStore) -> None:
        self.store = store

    def missing(self, manifest: SetManifest) -> list[str]:
        """Paths of the set's files the server does not hold (none when it holds the set)."""
        if self.store.find_set_main(manifest.sha256) is not None:
            return []
        return [f.path for f in manifest.files.values() if self._held(f) is None]

    def receive(self, manifest: SetManifest, sending: list[str], chunks: Iterable[bytes]) -> None:
        """Store the set from the files sent (in ``sending`` order) and those held already.

        Called in an upload slot (:meth:`UploadStore.slot`) the caller holds.

        Raises:
            InvalidInput: a file sent is not in the set, or is sent twice; a file's
                bytes are fewer or more than its size, or hash to another SHA-256.
            FailedPrecondition: a file of the set is neither sent nor held.
        """
        sent = self._checked_sending(manifest, sending)
        sent_paths = {f.path for f in sent}
        held = {f.path: self._held(f) for f in manifest.files.values() if f.path not in sent_paths}
        absent = sorted(path for path, found in held.items() if found is None)
        if absent:
            raise FailedPrecondition(
                f"the slide's file {absent[0]} was neither sent nor is held by the server"
                + (f" (nor are {len(absent) - 1} more)" if len(absent) > 1 else "")
                + "; send every file that StatSlideSet lists as missing"
            )
        with self._staging() as staging:
            staged = self._write_sent(staging, sent, _Pieces(chunks))
            layout = staging / "set"
            for path, source in {**held, **staged}.items():
                _link(source, layout / "slide" / path)
            (layout / "manifest").write_bytes(manifest.text())
            for path, source in staged.items():
                if self._held(manifest.files[path]) is None:
                    self.store.keep(source, manifest.files[path].sha256, object_suffix(path))
            self._publish(layout, manifest.sha256)

    def _held(self, entry: SetFile) -> Path | None:
        """The stored object for ``entry``; one of its hash but another size is refused."""
        found = self.store.find(entry.sha256)
        if found is not None and found.stat().st_size != entry.size:
            raise InvalidInput(
                f"the slide set gives {entry.path} {entry.size} bytes, but the file with its "
                f"SHA-256 has {found.stat().st_size}"
            )
        return found

    @staticmethod
    def _checked_sending(manifest: SetManifest, sending: list[str]) -> list[SetFile]:
        if len(set(sending)) != len(sending):
            raise InvalidInput("the upload sends one of the slide's files twice")
        unknown = next((p for p in sending if p not in manifest.files), None)
        if unknown is not None:
            raise InvalidInput(f"the upload sends {unknown[:200]!r}, which is not in its slide set")
        return [manifest.files[p] for p in sending]

    def _write_sent(self, staging: Path, sent: list[SetFile], pieces: _Pieces) -> dict[str, Path]:
        """Each file sent, written and verified in ``staging``: {path: staged file}."""
        staged: dict[str, Path] = {}
        for index, entry in enumerate(sent):
            target = staging / f"{index}{object_suffix(entry.path)}"
            size, digest = write_hashed(target, pieces.take(entry.size))
            if size != entry.size:
                raise InvalidInput(
                    f"the upload ended {size} bytes into {entry.path}, which has {entry.size}"
                )
            if digest != entry.sha256:
                raise InvalidInput(
                    f"the bytes sent for {entry.path} hash to {digest}, not to its SHA-256 "
                    f"in the slide set, {entry.sha256} (was the file changed?)"
                )
            staged[entry.path] = target
        if pieces.more():
            raise InvalidInput("the upload carried more bytes than its slide set's files")
        return staged

    @contextlib.contextmanager
    def _staging(self) -> Iterator[Path]:
        folder = self.store.tmp / self.store.temps.name(f"set-{uuid.uuid4().hex}")
        folder.mkdir(mode=0o700)
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _publish(self, layout: Path, sha256: str) -> None:
        """Rename the set's folder into place; a twin uploaded meanwhile stands."""
        final = self.store.set_folder(sha256)
        final.parent.mkdir(exist_ok=True)
        try:
            os.rename(layout, final)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise


class _Pieces:
    """A stream of byte chunks, cut into files of given sizes."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._left = b""

    def take(self, size: int) -> Iterator[bytes]:
        """The next ``size`` bytes, as they come (fewer when the stream ends first)."""
        while size > 0:
            if not self._left:
                self._left = next(self._chunks, b"")
                if not self._left:
                    return
            piece, self._left = self._left[:size], self._left[size:]
            size -= len(piece)
            yield piece

    def more(self) -> bool:
        """Whether bytes are left beyond the files taken."""
        return bool(self._left) or any(self._chunks)


def _check_prefixes(files: dict[str, SetFile]) -> None:
    """Refuse a path that is also another one's folder ("a" and "a/b"): no layout holds both."""
    folders = {"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)}
    clash = next((p for p in files if p in folders), None)
    if clash is not None:
        raise InvalidInput(f"the slide set names {clash} both as a file and as a folder")


def _link(source: Path, target: Path) -> None:
    """``target`` as another name of ``source`` (a copy where hard links are not allowed)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _triples(files: Iterable[SetFile]) -> list[tuple[str, str, int]]:
    return [(f.path, f.sha256, f.size) for f in files]
