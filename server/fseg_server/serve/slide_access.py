"""Which slides a server may read: paths confined to its slide roots, and uploads.

A path is refused when it contains ``..``, when it is absolute outside every
root, and when it resolves (symlinks followed) outside every root, so neither
a crafted path nor a symlink planted in a root can reach the rest of the disk.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from ..errors import InvalidInput, NotFound, PermissionDenied
from .uploads import UploadStore


class SlideAccess:
    """Resolves the slide references of requests to files the server may open."""

    def __init__(self, roots: list[Path], uploads: UploadStore | None) -> None:
        self.roots = [Path(r).resolve(strict=True) for r in roots]
        # The roots as the administrator spelled them too: a root reached
        # through a symlink (/data -> an NFS mount) is named that way by clients.
        self.given_roots = [Path(os.path.abspath(r)) for r in roots]
        self.uploads = uploads

    def resolve_path(self, text: str) -> Path:
        """The file for a client-given path, or an error a person can act on."""
        if not text:
            raise InvalidInput("the request names no slide (empty path)")
        if "\x00" in text:
            raise InvalidInput("the slide path contains a NUL byte")
        if ".." in PurePosixPath(text.replace("\\", "/")).parts:
            raise PermissionDenied(f"slide paths may not contain '..': {text}")
        if not self.roots:
            raise PermissionDenied(
                "this server was started without --slide-root, so it reads no paths; "
                "upload the slide instead"
            )
        candidate = self._locate(Path(text))
        try:
            real = candidate.resolve(strict=True)
        except FileNotFoundError:
            raise NotFound(f"slide {text} does not exist on the server") from None
        except OSError as exc:  # symlink loops and the like
            raise PermissionDenied(f"slide {text} cannot be resolved ({exc.strerror})") from None
        if not any(_inside(real, root) for root in self.roots):
            raise PermissionDenied(
                f"slide {text} resolves outside the server's slide roots (a symlink that escapes?)"
            )
        if real.is_dir():
            raise InvalidInput(f"slide {text} is a directory, not a file")
        if not os.access(real, os.R_OK):
            raise PermissionDenied(f"slide {text} is not readable by the server")
        return real

    def resolve_upload(self, sha256: str) -> Path:
        if self.uploads is None:
            raise NotFound("this server takes no uploads (started without --upload-dir)")
        return self.uploads.path_of(sha256)

    def _locate(self, path: Path) -> Path:
        if path.is_absolute():
            spelled = Path(os.path.abspath(path))
            if not any(_inside(spelled, root) for root in (*self.roots, *self.given_roots)):
                raise PermissionDenied(f"slide {path} lies outside the server's slide roots")
            return path
        for root in self.roots:
            if (root / path).exists() or (root / path).is_symlink():
                return root / path
        raise NotFound(f"slide {path} does not exist under any of the server's slide roots")


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents
