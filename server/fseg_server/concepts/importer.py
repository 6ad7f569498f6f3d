"""Converting the F-SEG authors' published banks (joblib pickles) to the safe format."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..errors import InvalidInput, NotFound
from .bank import CENTRES_DTYPE_RULE, ConceptBank

# The authors fitted their banks on 256-px tiles at 10x (about 1 µm/px).
PUBLISHED_BANK_MPP = 1.0
PICKLE_WARNING = (
    "warning: {path} is read with joblib, which unpickles it, and a pickle can run code "
    "when loaded; import only files from a source you trust. The converted bank is a "
    "safetensors file that loads without running anything."
)


def import_joblib(
    path: str | Path, extractor: str, feature_dim: int, mpp: float | None = PUBLISHED_BANK_MPP
) -> ConceptBank:
    """Read a joblib dict {k: array (k, dim)} and wrap it as a :class:`ConceptBank`.

    Args:
        path: the .joblib file.
        extractor: id of the extractor the centres belong to.
        feature_dim: that extractor's feature dimension, checked against the file.
        mpp: resolution the centres were fitted at, µm per pixel.
    """
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"{path} does not exist")
    print(PICKLE_WARNING.format(path=path), file=sys.stderr)
    import joblib

    try:
        raw = joblib.load(path)
    except Exception as exc:
        raise InvalidInput(f"{path} cannot be read as a joblib file ({exc})") from exc
    if not isinstance(raw, dict) or not raw:
        raise InvalidInput(f"{path} does not hold a dict {{k: centres}} as published by F-SEG")
    centres = {}
    for key, value in raw.items():
        try:
            k = int(key)
            array = np.asarray(value)
        except (TypeError, ValueError):
            raise InvalidInput(f"{path}: entry {key!r} is not k -> an array of centres") from None
        if array.dtype.kind != "f":
            raise InvalidInput(
                f"{path}: the centres for k={key} are stored as {array.dtype}; {CENTRES_DTYPE_RULE}"
            )
        array = array.astype(np.float32)
        if array.ndim != 2 or k != array.shape[0]:
            raise InvalidInput(f"{path}: entry k={key} has shape {array.shape}, expected (k, dim)")
        if array.shape[1] != feature_dim:
            raise InvalidInput(
                f"{path} holds {array.shape[1]}-dimensional centres but {extractor} "
                f"features have {feature_dim} channels; pick the matching --extractor"
            )
        centres[k] = array
    try:
        return ConceptBank(
            extractor=extractor,
            feature_dim=feature_dim,
            centres=centres,
            mpp=mpp,
            source=f"imported from {path.name}",
        )
    except InvalidInput as exc:
        raise InvalidInput(f"{path}: {exc}") from None
