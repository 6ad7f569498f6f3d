"""Temporary files left behind by a process that died mid-write."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

# Entries an owner names after itself ("<owner>-..."), and its lock file ("<owner>.lock").
_OWNED_ENTRY = re.compile(r"^([0-9a-f]{32})-")
_OWNER_FILE = re.compile(r"^([0-9a-f]{32})\.lock$")


def remove_stale(paths: Iterable[Path], older_than_s: float) -> None:
    """Delete those of ``paths`` untouched for ``older_than_s`` seconds.

    Only old ones: on a volume shared by several servers, a young file is
    another process's write in progress.
    """
    cutoff = time.time() - older_than_s
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_mtime < cutoff:
                _remove(path)


class OwnedTemps:
    """A folder of temporary entries that several processes share (a volume mounted by
    every server), each process naming its entries after itself.

    A process holds an exclusive lock (flock) on its owner file, in a folder of owner
    files beside the temporaries, for as long as it lives; the kernel drops the lock
    when it dies, kill -9 included. :meth:`sweep` removes the entries of every owner
    whose lock it can take, and never those of a live process, however old they are.
    """

    def __init__(self, folder: Path, owners: Path) -> None:
        self.folder, self.owners = folder, owners
        owners.mkdir(exist_ok=True)
        self.owner, self._lock = self._claim()

    def name(self, rest: str) -> str:
        """A file or folder name in :attr:`folder` that marks the entry as this process's."""
        return f"{self.owner}-{rest}"

    def sweep(self, older_than_s: float) -> None:
        """Remove what dead owners left; entries of no owner (an older fseg's names, or a
        file system without locks) only when untouched for ``older_than_s`` seconds."""
        entries = list(self.folder.iterdir())
        owner_of = {p: m[1] for p in entries if (m := _OWNED_ENTRY.match(p.name))}
        files = {m[1] for p in self.owners.iterdir() if (m := _OWNER_FILE.match(p.name))}
        died = {owner: self._died(owner) for owner in files | set(owner_of.values())}
        for path, owner in owner_of.items():
            if died[owner]:
                with contextlib.suppress(FileNotFoundError):
                    _remove(path)
        unknown = [p for p in entries if p not in owner_of or died[owner_of[p]] is None]
        remove_stale(unknown, older_than_s)

    def _died(self, owner: str) -> bool | None:
        """Whether ``owner``'s process is gone: its owner file is missing (it is made
        before any entry), or its lock can be taken. The file is removed under that
        lock, so an owner that was only starting claims another name. None: the file
        system takes no locks, so nobody can tell."""
        if owner == self.owner:
            return False
        path = self.owners / f"{owner}.lock"
        try:
            with open(path, "rb") as file:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                path.unlink()
        except FileNotFoundError:
            return True
        except BlockingIOError:
            return False
        except OSError:
            return None
        return True

    def _claim(self) -> tuple[str, BinaryIO]:
        """A new owner name and its open, locked owner file."""
        while True:
            owner = uuid.uuid4().hex
            file = open(self.owners / f"{owner}.lock", "xb")  # noqa: SIM115 (held for life)
            try:
                fcntl.flock(file, fcntl.LOCK_EX)
            except OSError:
                return owner, file  # no locks here: sweeps fall back to age alone
            # A server starting at this very moment may have taken the lock first and
            # removed the file; then this name is lost, and another is claimed.
            if os.fstat(file.fileno()).st_nlink:
                return owner, file
            file.close()


def _remove(path: Path) -> None:
    # A folder is a multi-file upload staged whole (see serve/slide_sets.py).
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
