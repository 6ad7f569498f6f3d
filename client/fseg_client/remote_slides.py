"""How each server gets at a slide: by its path, or by uploading it.

``--upload auto`` asks the server (StatSlide) whether it can read the slide's
path and uploads only when it cannot; ``always`` uploads; ``never`` sends the
path. Uploaded slides are referenced by SHA-256 afterwards: a single file's,
or, for a slide of several files (companions.py), its set's manifest's.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import grpc

from fseg_proto import fseg_pb2

from .calls import CallRegistry
from .connect import Connection
from .errors import ClientError, ProtocolError, rpc_error_code
from .fingerprint import HashCache, set_address, slide_set
from .inputs import SlideInput
from .upload_streams import ByteProgress, set_messages, upload_messages

STAT_TIMEOUT_S = 30.0
UPLOAD_MODES = ("auto", "always", "never")
# An upload refused for one of these reasons will be refused again: say so plainly.
_REFUSALS = frozenset(
    {
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.INVALID_ARGUMENT,
    }
)


def path_ref(slide: SlideInput, path: Path | None = None) -> fseg_pb2.SlideRef:
    """A SlideRef by (absolute) path: the slide's own, or ``path`` standing for it."""
    return fseg_pb2.SlideRef(path=str(path or slide.path), name=slide.name)


class SlideResolver:
    """Turns a local slide into the SlideRef one server can use, remembering the answer."""

    def __init__(self, mode: str, hashes: HashCache, registry: CallRegistry) -> None:
        if mode not in UPLOAD_MODES:
            raise ValueError(mode)
        self.mode = mode
        self.hashes = hashes
        self.registry = registry
        self._refs: dict[tuple[str, Path], fseg_pb2.SlideRef] = {}
        self._lock = threading.Lock()

    def slide_ref(
        self, conn: Connection, slide: SlideInput, progress: ByteProgress | None = None
    ) -> fseg_pb2.SlideRef:
        """The SlideRef for ``slide`` on ``conn``'s server, uploading it when needed.

        ``progress`` hears of upload progress, if there is an upload.

        Raises:
            grpc.RpcError: a call failed.
            ClientError: the server can neither read the path nor take an upload.
        """
        key = (conn.address, slide.path)
        with self._lock:
            if key in self._refs:
                return self._refs[key]
        ref = self._resolve(conn, slide, progress)
        if slide.mpp is not None:
            ref.mpp = slide.mpp
        with self._lock:
            self._refs[key] = ref
        return ref

    def _resolve(
        self, conn: Connection, slide: SlideInput, progress: ByteProgress | None
    ) -> fseg_pb2.SlideRef:
        if not slide.local or self.mode == "never":
            return path_ref(slide)
        if self.mode == "always":
            return self.upload(conn, slide, progress)
        local_size = slide.path.stat().st_size
        # Servers resolve their slide roots; a path through a symlinked folder (macOS's
        # /tmp, say) may only be recognised in its resolved form.
        real = Path(os.path.realpath(slide.path))
        reason = ""
        for candidate in dict.fromkeys([slide.path, real]):
            self.registry.check()
            status = conn.stub.StatSlide(
                path_ref(slide, candidate), timeout=STAT_TIMEOUT_S, metadata=conn.metadata
            )
            # A readable path of another size is another file (the server's mount differs).
            if status.readable and status.size_bytes in (0, local_size):
                return path_ref(slide, candidate)
            reason = reason or status.reason.rstrip(".") or "it holds another file there"
        try:
            return self.upload(conn, slide, progress)
        except grpc.RpcError as exc:
            if rpc_error_code(exc) not in _REFUSALS:
                raise
            details = (exc.details() or "").rstrip(".") if hasattr(exc, "details") else ""
            raise ClientError(
                f"the server at {conn.address} cannot read {slide.path} ({reason}) and "
                f"refused it as an upload ({details or rpc_error_code(exc)})"
            ) from None

    def upload(
        self, conn: Connection, slide: SlideInput, progress: ByteProgress | None = None
    ) -> fseg_pb2.SlideRef:
        """Upload ``slide`` to ``conn``'s server, with its companion files if it has any;
        files the server holds already are not sent again."""
        files = slide.files
        if len(files) > 1:
            return self.upload_set(conn, slide, files, progress)
        try:
            digest = self.hashes.sha256(slide.path)
            size = slide.path.stat().st_size
        except OSError as exc:
            raise ClientError(f"cannot read {slide.path} ({exc.strerror})") from None
        self.registry.check()
        header = fseg_pb2.UploadHeader(name=slide.name, sha256=digest, size_bytes=size)
        future = conn.stub.UploadSlide.future(
            upload_messages(slide.path, header, self.registry, progress), metadata=conn.metadata
        )
        with self.registry.track(future):
            result = future.result()
        if result.sha256 and result.sha256.lower() != digest:
            raise ProtocolError(f"the upload of {slide.name} came back as {result.sha256}")
        return fseg_pb2.SlideRef(sha256=digest, name=slide.name)

    def upload_set(
        self,
        conn: Connection,
        slide: SlideInput,
        files: list[tuple[str, Path]],
        progress: ByteProgress | None = None,
    ) -> fseg_pb2.SlideRef:
        """Upload a slide of several files (``files``: relative path, local file; the
        main file first) as one set, sending only the files the server lacks."""
        try:
            message = slide_set(files, self.hashes)
        except OSError as exc:
            raise ClientError(f"cannot read a file of {slide.path} ({exc.strerror})") from None
        digest = set_address(message)
        self.registry.check()
        try:
            status = conn.stub.StatSlideSet(message, timeout=STAT_TIMEOUT_S, metadata=conn.metadata)
        except grpc.RpcError as exc:
            if rpc_error_code(exc) != grpc.StatusCode.UNIMPLEMENTED:
                raise
            raise ClientError(
                f"the server at {conn.address} takes no slides of several files "
                f"({slide.name} has {len(files)}); upgrade it, or let it read the slide by path"
            ) from None
        if not status.complete:
            local = dict(files)
            if not set(status.missing) <= local.keys():
                raise ProtocolError(f"the server asked for files that {slide.name} lacks")
            header = fseg_pb2.SlideSetHeader(set=message, sending=status.missing)
            messages = set_messages(
                header, [local[p] for p in status.missing], self.registry, progress
            )
            self.registry.check()
            future = conn.stub.UploadSlideSet.future(messages, metadata=conn.metadata)
            with self.registry.track(future):
                status = future.result()
        if status.sha256 != digest:
            raise ProtocolError(f"the upload of {slide.name} came back as {status.sha256}")
        return fseg_pb2.SlideRef(sha256=digest, name=slide.name)
