"""Which slides a server may read: paths confined to its slide roots, and uploads.

A path is refused when it contains ``..``, when it is absolute outside every
root, and when it resolves (symlinks followed) outside every root, so neither
a crafted path nor a symlink planted in a root can reach the rest of the disk.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path, PurePosixPath

from ..errors import FsegError, InvalidInput, NotFound, PermissionDenied
from ..text import one_line
from .uploads import UploadStore

#: Longest slide path accepted, characters (Linux's PATH_MAX): longer cannot name a file.
MAX_PATH_CHARS = 4096
#: Characters of a client's path quoted back in a refusal (and so in any log line).
SHOWN_PATH_CHARS = 200
# What a path may name besides a file, as a person says it. Opening a FIFO would
# wait for a writer, and a device or a socket holds no slide.
_NOT_FILES = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


class NotAFile(InvalidInput):
    """A slide path that names something other than a regular file: StatSlide answers
    "not readable" with the sentence that Segment refuses it with."""


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
        if len(text) > MAX_PATH_CHARS:
            raise InvalidInput(
                f"the slide path is {len(text):,} characters long; at most {MAX_PATH_CHARS:,} "
                "can name a file"
            )
        if "\x00" in text:
            raise InvalidInput("the slide path contains a NUL byte")
        shown = _shown(text)
        if ".." in PurePosixPath(text.replace("\\", "/")).parts:
            raise PermissionDenied(f"slide paths may not contain '..': {shown}")
        if not self.roots:
            raise PermissionDenied(
                "this server was started without --slide-root, so it reads no paths; "
                "upload the slide instead"
            )
        try:
            return self._checked(text, shown)
        except FileNotFoundError:
            raise NotFound(f"slide {shown} does not exist on the server") from None
        except OSError as exc:  # the file system's own refusals, one sentence each
            raise _refusal(shown, exc) from None

    def _checked(self, text: str, shown: str) -> Path:
        """``text`` located under a root, resolved and checked; OSError from the file system."""
        located = self._locate(Path(text), shown)
        try:
            real = located.resolve(strict=True)
        except RuntimeError:  # Python before 3.13 reports a symlink loop so
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP)) from None
        if not any(_inside(real, root) for root in self.roots):
            raise PermissionDenied(
                f"slide {shown} resolves outside the server's slide roots (a symlink that escapes?)"
            )
        mode = real.stat().st_mode
        if not stat.S_ISREG(mode):
            kind = next((words for test, words in _NOT_FILES if test(mode)), "a special file")
            raise NotAFile(f"slide {shown} is {kind}, not a file")
        if not os.access(real, os.R_OK):
            raise PermissionDenied(f"slide {shown} is not readable by the server")
        return real

    def resolve_upload(self, sha256: str) -> Path:
        if self.uploads is None:
            raise NotFound("this server takes no uploads (started without --upload-dir)")
        return self.uploads.path_of(sha256)

    def _locate(self, path: Path, shown: str) -> Path:
        if path.is_absolute():
            spelled = Path(os.path.abspath(path))
            if not any(_inside(spelled, root) for root in (*self.roots, *self.given_roots)):
                raise PermissionDenied(f"slide {shown} lies outside the server's slide roots")
            return path
        for root in self.roots:
            # lstat, not exists(): it raises what exists() would hide or half-hide
            # (a name too long, a folder without rights), for _refusal to word.
            try:
                (root / path).lstat()
            except (FileNotFoundError, NotADirectoryError):
                continue
            return root / path
        raise NotFound(f"slide {shown} does not exist under any of the server's slide roots")


def _shown(text: str) -> str:
    """A client's path as quoted back, on one line: whole when short, its start and end
    when long."""
    text = one_line(text)
    if len(text) <= SHOWN_PATH_CHARS:
        return text
    half = SHOWN_PATH_CHARS // 2
    return f"{text[:half]}...{text[-half:]} ({len(text):,} characters)"


def _refusal(shown: str, exc: OSError) -> FsegError:
    """The file system's refusal to reach a slide, as a status and one sentence."""
    if exc.errno == errno.ENAMETOOLONG:
        return InvalidInput(f"slide {shown} has a name too long for the server's file system")
    if exc.errno == errno.ELOOP:
        return PermissionDenied(f"slide {shown} cannot be resolved: its symlinks form a loop")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return PermissionDenied(
            f"slide {shown} cannot be reached: the server may not enter a folder on its path"
        )
    return PermissionDenied(f"slide {shown} cannot be reached ({exc.strerror})")


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents
