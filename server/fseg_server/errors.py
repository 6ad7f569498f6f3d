"""Errors a person can act on.

Every problem caused by the input (a file that is not a slide, a bank that
does not fit the extractor, a k the bank lacks) is raised as one of these with
a single sentence that says what is wrong and what to do. The CLI prints the
sentence and exits non-zero; the gRPC service maps ``status`` onto the call's
status code. Anything else is a bug and is reported as such.
"""

from __future__ import annotations


class FsegError(Exception):
    """Base class: ``str(err)`` is the one sentence shown to the user."""

    #: Name of the grpc.StatusCode this error maps to.
    status = "INVALID_ARGUMENT"


class InvalidInput(FsegError):
    """The request or a file's content is wrong (bad image, bad bank, bad k)."""

    status = "INVALID_ARGUMENT"


class NotFound(FsegError):
    """A named file, extractor or concept bank does not exist."""

    status = "NOT_FOUND"


class PermissionDenied(FsegError):
    """A path lies outside what the server is allowed to read."""

    status = "PERMISSION_DENIED"


class FailedPrecondition(FsegError):
    """The input is readable but cannot be used as asked (a slide with no µm/px)."""

    status = "FAILED_PRECONDITION"


class ResourceExhausted(FsegError):
    """A size or queue limit was reached."""

    status = "RESOURCE_EXHAUSTED"


class Cancelled(FsegError):
    """The job was cancelled by its caller or its deadline passed."""

    status = "CANCELLED"
