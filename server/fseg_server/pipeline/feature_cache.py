"""An opt-in, size-capped, on-disk cache of tile features (fp16) and slide thumbnails.

Segmenting a slide again at another k, with another bank or in another mode
then costs only the factorization and vectorizing: tiles already seen skip
the extractor, and reading too unless labels are finer than a feature cell
(those need the tile's colours, which are not kept). Entries are keyed by
everything the features depend on (the file's identity, the extractor and a
fingerprint of its weights, the pyramid level, resolution and tile geometry)
and evicted least recently used first when the cache outgrows its cap. A
write that fails (a full disk) loses the entry, never the job.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..extract import Extractor
from ..slide.reader import Slide
from ..slide.tiles import Tile, TileGrid
from ..tempfiles import remove_stale

log = logging.getLogger("fseg.server")

#: Folder of the slides' thumbnails, beside one folder of features per slide key.
THUMBNAILS = "thumbnails"
STALE_AFTER_S = 3600  # a temporary file this old was left by a process that died


class FeatureCache:
    """Features per tile (or tissue region) under ``root``, at most ``max_bytes`` on disk."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        remove_stale(self.root.glob("*/.*.tmp"), STALE_AFTER_S)
        self._bytes = sum(p.stat().st_size for p in self.root.glob("*/*.npy"))

    @staticmethod
    def slide_key(path: Path, extractor: Extractor, grid: TileGrid) -> str:
        """What a slide's features depend on, as a short hex digest."""
        resolution = grid.resolution
        return _digest(
            *_file_identity(path),
            extractor.spec.name, extractor.weights_fingerprint(),
            resolution.level, round(resolution.target_downsample, 9), grid.margin,
        )  # fmt: skip

    def thumbnail(
        self, slide: Slide, max_size: int, should_stop: Callable[[], bool] = lambda: False
    ) -> tuple[np.ndarray, float]:
        """``slide.thumbnail(max_size)``, kept: the one read a re-run would repeat
        (about 0.2 s of a 0.5 s re-run of CMU-1-Small-Region)."""
        key = _digest(*_file_identity(slide.info.path), max_size)
        path = self.root / THUMBNAILS / f"{key}.npy"
        try:
            image = np.load(path)
            with contextlib.suppress(OSError):
                os.utime(path)
        except (OSError, ValueError):
            image, _ = slide.thumbnail(max_size, should_stop)
            self._store(path, image)
        # As Slide.thumbnail defines it: level-0 px per thumbnail px.
        return image, slide.info.dimensions[0] / image.shape[1]

    def get(self, key: str, tile: Tile) -> np.ndarray | None:
        """The cached (C, h, w) fp16 features of ``tile``, or None."""
        path = self._path(key, tile)
        try:
            features = np.load(path)
        except (OSError, ValueError):
            return None
        with contextlib.suppress(OSError):  # another job may have evicted it just now
            os.utime(path)  # recently used: evicted last
        return features

    def put(self, key: str, tile: Tile, features: np.ndarray) -> None:
        """Store features (written to a temporary name, then renamed); evict if over the cap."""
        self._store(self._path(key, tile), features.astype(np.float16, copy=False))

    def _store(self, path: Path, array: np.ndarray) -> None:
        """Write one entry under a temporary name, then rename; evict if over the cap."""
        tmp = path.with_name(f".{uuid.uuid4().hex}.tmp")
        try:
            path.parent.mkdir(exist_ok=True)
            with open(tmp, "wb") as out:
                np.save(out, array)
            size = tmp.stat().st_size
            os.replace(tmp, path)
        except OSError as error:
            # A full disk costs the cache an entry, never the job its result.
            with contextlib.suppress(OSError):
                tmp.unlink()
            log.warning("feature cache: could not store an entry (%s); going on without", error)
            return
        with self._lock:
            self._bytes += size
            if self._bytes > self.max_bytes:
                self._evict()

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def _path(self, key: str, tile: Tile) -> Path:
        # A region is named by its core and its margins (target px): a region of
        # another plan (another ROI, another region size) is another entry.
        margins = "-".join(str(m) for m in tile.margins)
        name = f"{tile.core_x}-{tile.core_y}-{tile.core_w}x{tile.core_h}-{margins}"
        if tile.blocks is not None:  # a block-sparse region: which blocks were computed
            name += "-" + _digest(tile.blocks.rows, tile.blocks.bits)[:16]
        return self.root / key / f"{name}.npy"

    def _evict(self) -> None:
        """Delete the least recently used entries until the cache is at 90% of its cap."""
        entries = sorted(self.root.glob("*/*.npy"), key=lambda p: p.stat().st_mtime_ns)
        target = int(0.9 * self.max_bytes)
        for entry in entries:
            if self._bytes <= target:
                break
            size = entry.stat().st_size
            entry.unlink(missing_ok=True)
            self._bytes -= size


def _file_identity(path: Path) -> tuple[str, int, int]:
    """The file as the cache knows it: resolved path, size and modification time (ns),
    so that a slide rewritten in place is another slide."""
    stat = Path(path).stat()
    return str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns


def _digest(*parts: object) -> str:
    """A short hex digest of ``parts``, naming a cache entry or folder."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]
