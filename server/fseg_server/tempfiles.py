"""Temporary files left behind by a process that died mid-write."""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterable
from pathlib import Path


def remove_stale(paths: Iterable[Path], older_than_s: float) -> None:
    """Delete those of ``paths`` untouched for ``older_than_s`` seconds.

    Only old ones: on a volume shared by several servers, a young file is
    another process's write in progress.
    """
    cutoff = time.time() - older_than_s
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_mtime < cutoff:
                # A folder is a multi-file upload staged whole (see serve/slide_sets.py).
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
