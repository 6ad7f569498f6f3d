"""Refusals name an uploaded slide as its user does, not by its place in the server's store.

An upload lives under its hash (``<upload dir>/objects/<aa>/<sha256>...``, or a
slide set's folder): that place says nothing to the user and shows the server's
folders. A slide named by path is left as its user wrote it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from fseg_proto import fseg_pb2

from ..errors import FsegError

#: (the request's reference, where the server holds the slide, the name its user sent).
Named = tuple[fseg_pb2.SlideRef, Path, str]


def named_as_the_user_does(text: str, slides: Iterable[Named]) -> str:
    """``text`` with each uploaded slide's place replaced by its user's name for it."""
    for ref, path, name in slides:
        if ref.sha256 and name:
            text = text.replace(str(path), name).replace(path.name, name)
    return text


@contextlib.contextmanager
def as_the_user_names(slides: Iterable[Named]) -> Iterator[None]:
    """Errors raised inside name the uploaded ``slides`` as their users do."""
    slides = list(slides)
    try:
        yield
    except FsegError as exc:
        exc.args = (named_as_the_user_does(str(exc), slides),)
        raise
