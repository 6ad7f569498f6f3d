"""Where a fitted bank's k-means samples came from: inputs and level-0 windows.

A bank fitted by fseg keeps, in its JSON metadata, the inputs it was fitted
on (file name and a fingerprint of the file's content) and a uniform sample of
the windows whose averaged features k-means saw, as level-0 pixel boxes of the
slide's own level 0 (OpenSlide's frame, before any bounds crop). ``fseg
atlas`` with the same inputs can then show those very windows. Banks imported
from the F-SEG authors' joblib files have none.

The metadata is plain JSON under the ``fseg`` key, not an extra tensor, so
servers of earlier versions still load these banks (they read only the
``centres/<k>`` tensors they know).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InvalidInput

#: Windows kept at most: enough candidates for an atlas of k = 64 with 24
#: windows each many times over, and about 250 KB of JSON in the bank's header.
MAX_WINDOWS = 8192
#: Bytes read at each end of a file for its fingerprint.
FINGERPRINT_BYTES = 1 << 20
#: Columns of a window row: input index, then the level-0 box.
WINDOW_COLUMNS = ("input", "x", "y", "width", "height")


@dataclass(frozen=True)
class SampledInput:
    """One input a bank was fitted on: its file name and content fingerprint."""

    name: str
    fingerprint: str


@dataclass(frozen=True)
class Provenance:
    """The inputs and the sampled windows of a fit.

    Attributes:
        inputs: every input of the fit, in order.
        windows: (n, 5) int64 rows of input index, x, y, width, height:
            level-0 pixels of that input's own level 0.
    """

    inputs: tuple[SampledInput, ...]
    windows: np.ndarray

    def __post_init__(self) -> None:
        windows = np.asarray(self.windows, np.int64).reshape(-1, len(WINDOW_COLUMNS))
        if len(windows) and (
            windows[:, 0].min() < 0
            or windows[:, 0].max() >= len(self.inputs)
            or (windows[:, 3:] <= 0).any()
        ):
            raise InvalidInput("the bank's provenance names windows of inputs it does not list")
        object.__setattr__(self, "windows", windows)

    def windows_of(self, fingerprint: str) -> np.ndarray:
        """(n, 4) level-0 boxes (x, y, width, height) sampled on the input with ``fingerprint``."""
        indices = [i for i, s in enumerate(self.inputs) if s.fingerprint == fingerprint]
        rows = self.windows[np.isin(self.windows[:, 0], indices)]
        return rows[:, 1:]

    def to_json(self) -> dict:
        return {
            "inputs": [{"name": s.name, "fingerprint": s.fingerprint} for s in self.inputs],
            "window_columns": list(WINDOW_COLUMNS),
            "windows": self.windows.tolist(),
        }

    @staticmethod
    def from_json(value: object) -> Provenance:
        """Parse :meth:`to_json`'s output; malformed values raise InvalidInput."""
        try:
            inputs = tuple(
                SampledInput(str(entry["name"]), str(entry["fingerprint"]))
                for entry in value["inputs"]  # type: ignore[index]
            )
            windows = np.asarray(value["windows"], np.int64)  # type: ignore[index]
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"the bank's provenance is malformed ({exc})") from None
        if windows.size and (windows.ndim != 2 or windows.shape[1] != len(WINDOW_COLUMNS)):
            raise InvalidInput("the bank's provenance windows are not rows of five integers")
        return Provenance(inputs, windows)


def file_fingerprint(path: Path) -> str:
    """A digest of a file's size and its first and last MiB.

    Cheap on a slide of gigabytes, and independent of the file's name, folder
    and modification time, so an input is recognised wherever it lies and
    however it reached the server (by path or as an upload).
    """
    size = path.stat().st_size
    digest = hashlib.sha256(size.to_bytes(8, "little"))
    with open(path, "rb") as handle:
        digest.update(handle.read(FINGERPRINT_BYTES))
        if size > FINGERPRINT_BYTES:
            handle.seek(max(FINGERPRINT_BYTES, size - FINGERPRINT_BYTES))
            digest.update(handle.read(FINGERPRINT_BYTES))
    return "head-tail-sha256:" + digest.hexdigest()[:32]


def sampled_subset(windows: np.ndarray, limit: int = MAX_WINDOWS, seed: int = 0) -> np.ndarray:
    """At most ``limit`` rows of ``windows``, drawn uniformly (seeded), in their order."""
    if len(windows) <= limit:
        return windows
    keep = np.sort(np.random.default_rng(seed).choice(len(windows), limit, replace=False))
    return windows[keep]
