"""The request streams of UploadSlide and UploadSlideSet: a header, then files in 1 MiB pieces."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from fseg_proto import fseg_pb2

from .calls import CallRegistry

UPLOAD_CHUNK_BYTES = 1024 * 1024
# Called with (bytes sent, bytes in all) as an upload goes.
ByteProgress = Callable[[int, int], None]


def upload_messages(
    path: Path,
    header: fseg_pb2.UploadHeader,
    registry: CallRegistry,
    progress: ByteProgress | None = None,
) -> Iterator[fseg_pb2.UploadChunk]:
    """The UploadSlide stream: the header, then the file."""
    yield fseg_pb2.UploadChunk(header=header)
    for sent, block in _blocks([path], registry):
        yield fseg_pb2.UploadChunk(data=block)
        if progress is not None:
            progress(sent, header.size_bytes)


def set_messages(
    header: fseg_pb2.SlideSetHeader,
    files: Sequence[Path],
    registry: CallRegistry,
    progress: ByteProgress | None = None,
) -> Iterator[fseg_pb2.SlideSetChunk]:
    """The UploadSlideSet stream: the header, then ``files`` (those it sends) one after
    another."""
    yield fseg_pb2.SlideSetChunk(header=header)
    sizes = {f.path: f.size_bytes for f in header.set.files}
    total = sum(sizes[path] for path in header.sending)
    for sent, block in _blocks(files, registry):
        yield fseg_pb2.SlideSetChunk(data=block)
        if progress is not None:
            progress(sent, total)


def _blocks(files: Sequence[Path], registry: CallRegistry) -> Iterator[tuple[int, bytes]]:
    """(bytes sent so far, next block) through ``files``; stops when the call is cancelled."""
    sent = 0
    for path in files:
        with open(path, "rb") as handle:
            while block := handle.read(UPLOAD_CHUNK_BYTES):
                if registry.stopping.is_set():
                    return  # the call is being cancelled; stop reading the disk
                sent += len(block)
                yield sent, block
