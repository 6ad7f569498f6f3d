"""Concept banks: k-means centres of an extractor's features, for several k.

On disk a bank is a safetensors file (never a pickle): one float32 tensor
``centres/<k>`` of shape (k, feature_dim) per k, and the JSON metadata under
the ``fseg`` key::

    {"format": "fseg-concept-bank/1", "extractor": "uni", "feature_dim": 1024,
     "k": [8, 16], "mpp": 1.0, "source": "...",
     "classes": {"8": [{"name": "Stroma", "color": [r, g, b]}, ...], ...},
     "provenance": {"inputs": [...], "windows": [[input, x, y, w, h], ...]}}

``mpp`` is the resolution (µm/px) the centres were fitted at: features only
match the concepts when they are extracted at that scale. ``provenance``
(banks fitted by fseg only) says where the k-means samples came from; see
``provenance.py``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import InvalidInput, NotFound
from ..limits import MAX_CLASS_NAME_CHARS
from ..text import first_control_character
from .palette import GLASS_COLOR, default_colors, default_names, glass_name, is_rgb
from .provenance import Provenance

FORMAT = "fseg-concept-bank/1"
_TENSOR_PREFIX = "centres/"
# Centres are feature vectors. Stored in another float width they convert to float32
# without harm (float64 beyond float32's range becomes inf and is refused as not
# finite); integers and booleans are no feature vectors (a label map or a mask saved
# in its place), and other floats (bfloat16, float8) NumPy cannot hold.
_FLOAT_DTYPES = {"F16", "F32", "F64"}  # safetensors' names
#: What a bank's centres may be, said after a refusal of anything else.
CENTRES_DTYPE_RULE = (
    "concept centres are feature vectors, stored as float32 (float16 and float64 are converted)"
)
#: Largest magnitude of a centre's value. Features of every extractor are of order
#: 1 to 100; the projection solves with the centres' Gram matrix in float32, which
#: overflows (and its eigensolver fails) for values near 1e19.
MAX_CENTRE_MAGNITUDE = 1e6


@dataclass(frozen=True)
class ConceptClass:
    """What a concept is called in QuPath and how it is drawn."""

    name: str
    color: tuple[int, int, int]


@dataclass(frozen=True)
class ConceptBank:
    """Centres per k for one extractor, with their class names and colours."""

    extractor: str
    feature_dim: int
    centres: Mapping[int, np.ndarray]
    classes: Mapping[int, Sequence[ConceptClass]] = field(default_factory=dict)
    mpp: float | None = None
    source: str = ""
    #: SHA-256 of the file the bank was loaded from ("" for a bank in memory).
    digest: str = ""
    #: Where the k-means samples came from (None: not recorded, as in imported banks).
    provenance: Provenance | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for k, c in self.centres.items():
            if c.shape != (k, self.feature_dim):
                raise InvalidInput(
                    f"concept bank centres for k={k} have shape {c.shape}, "
                    f"expected ({k}, {self.feature_dim})"
                )
            if not np.isfinite(c).all():
                raise InvalidInput(f"the concept centres for k={k} are not all finite numbers")
            if c.size and np.abs(c).max() > MAX_CENTRE_MAGNITUDE:
                raise InvalidInput(
                    f"the concept centres for k={k} hold values up to {np.abs(c).max():.3g}; "
                    f"features are never beyond ±{MAX_CENTRE_MAGNITUDE:g}"
                )
        filled = {k: list(self.classes.get(k) or default_classes(k)) for k in self.centres}
        for k, classes in filled.items():
            _check_classes(k, classes)
        if self.mpp is not None and not 0 < self.mpp < math.inf:
            raise InvalidInput(f"a concept bank's µm per pixel must be positive, not {self.mpp}")
        object.__setattr__(self, "classes", filled)

    @property
    def ks(self) -> list[int]:
        """The k values the bank holds, ascending."""
        return sorted(self.centres)

    def concepts(self, k: int) -> np.ndarray:
        """The (k, feature_dim) float32 centres for ``k``."""
        if k not in self.centres:
            raise InvalidInput(
                f"the concept bank has no k={k}; it holds k = {', '.join(map(str, self.ks))}"
            )
        return self.centres[k]

    def check_extractor(self, name: str, feature_dim: int) -> None:
        """Refuse an extractor whose features do not live in this bank's space."""
        if name != self.extractor or feature_dim != self.feature_dim:
            raise InvalidInput(
                f"the concept bank was fitted on {self.extractor} features "
                f"({self.feature_dim} channels), not on {name} ({feature_dim} channels); "
                f"use --extractor {self.extractor} or a bank fitted for {name}"
            )

    def renamed(self, k: int, classes: Sequence[ConceptClass]) -> ConceptBank:
        """A copy whose classes for ``k`` are ``classes``."""
        self.concepts(k)
        if len(classes) != k:
            raise InvalidInput(f"{len(classes)} names given for k={k}; give exactly {k}")
        if len({c.name for c in classes}) != k:
            raise InvalidInput(f"class names for k={k} must be unique")
        return replace(self, classes={**self.classes, k: list(classes)}, digest="")

    def metadata(self) -> dict:
        """The JSON metadata stored in the file."""
        return {
            "format": FORMAT,
            "extractor": self.extractor,
            "feature_dim": self.feature_dim,
            "k": self.ks,
            "mpp": self.mpp,
            "source": self.source,
            "classes": {
                str(k): [{"name": c.name, "color": list(c.color)} for c in self.classes[k]]
                for k in self.ks
            },
            **({"provenance": self.provenance.to_json()} if self.provenance else {}),
        }

    def to_bytes(self) -> bytes:
        """The bank as the bytes of a .safetensors file."""
        from safetensors.numpy import save

        tensors = {
            f"{_TENSOR_PREFIX}{k}": np.ascontiguousarray(self.centres[k], np.float32)
            for k in self.ks
        }
        return save(tensors, metadata={"fseg": json.dumps(self.metadata())})

    def save(self, path: str | Path) -> Path:
        """Write the bank to ``path`` atomically (temporary name, then rename)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_bytes(self.to_bytes())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path


def load_bank(path: str | Path) -> ConceptBank:
    """Read a bank written by :meth:`ConceptBank.save`; never unpickles anything."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"concept bank {path} does not exist")
    return bank_from_bytes(path.read_bytes(), str(path))


def bank_from_bytes(data: bytes, origin: str = "the concept bank") -> ConceptBank:
    """Parse the bytes of a .safetensors bank (as sent with a request).

    ``origin`` names the bank in error messages.
    """
    from safetensors.numpy import load

    try:
        header = _safetensors_header(data)
        meta = json.loads((header.get("__metadata__") or {}).get("fseg", "null"))
    except Exception as exc:
        raise _not_safetensors(origin, exc) from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InvalidInput(f"{origin} has no fseg concept-bank metadata ({FORMAT})")
    _check_dtypes(header, origin)  # before loading: NumPy cannot even hold bfloat16
    try:
        tensors = load(data)
    except Exception as exc:
        raise _not_safetensors(origin, exc) from exc
    return _from_parts(origin, meta, tensors, hashlib.sha256(data).hexdigest())


def _not_safetensors(origin: str, exc: Exception) -> InvalidInput:
    return InvalidInput(
        f"{origin} is not a concept bank in safetensors format "
        f"(convert published .joblib banks with `fseg-server import-concepts`): {exc}"
    )


def _safetensors_header(data: bytes) -> dict:
    """The JSON header of a safetensors file (after its 8-byte length): each tensor's
    dtype, shape and offsets, and ``__metadata__``."""
    size = int.from_bytes(data[:8], "little")
    if len(data) < 8 or size > len(data) - 8:
        raise ValueError("truncated or not safetensors")
    header = json.loads(data[8 : 8 + size])
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    return header


def _check_dtypes(header: dict, origin: str) -> None:
    """Refuse centres stored as anything but float16, float32 or float64 (see _FLOAT_DTYPES)."""
    for name, entry in header.items():
        dtype = entry.get("dtype") if isinstance(entry, dict) else None
        if name != "__metadata__" and isinstance(dtype, str) and dtype not in _FLOAT_DTYPES:
            raise InvalidInput(
                f"{origin}: {_centres_named(name)} are stored as {_dtype_words(dtype)}; "
                f"{CENTRES_DTYPE_RULE}"
            )


def _centres_named(tensor: str) -> str:
    k = tensor.removeprefix(_TENSOR_PREFIX)
    return f"the centres for k={k}" if k != tensor else f"the tensor {tensor[:100]!r}"


def _dtype_words(dtype: str) -> str:
    """safetensors' dtype names as NumPy's: I8 -> int8, BF16 -> bfloat16, BOOL -> bool."""
    for prefix, word in (("BF", "bfloat"), ("F", "float"), ("I", "int"), ("U", "uint")):
        if dtype.startswith(prefix) and dtype[len(prefix) : len(prefix) + 1].isdigit():
            return word + dtype[len(prefix) :].lower()
    return dtype.lower()[:20]


def _from_parts(
    origin: str, meta: dict, tensors: dict[str, np.ndarray], digest: str
) -> ConceptBank:
    try:
        centres = {int(n[len(_TENSOR_PREFIX) :]): v.astype(np.float32) for n, v in tensors.items()}
        classes = {
            int(k): [ConceptClass(c["name"], tuple(c["color"])) for c in entries]
            for k, entries in meta.get("classes", {}).items()
        }
        bank = ConceptBank(
            extractor=str(meta["extractor"]),
            feature_dim=int(meta["feature_dim"]),
            centres=centres,
            classes=classes,
            mpp=None if meta.get("mpp") is None else float(meta["mpp"]),
            source=str(meta.get("source", "")),
            digest=digest,
            provenance=_provenance(meta.get("provenance")),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a list for a mapping
        raise InvalidInput(f"{origin} has malformed concept-bank metadata: {exc}") from exc
    except InvalidInput as exc:  # say which of several banks it is
        raise InvalidInput(f"{origin}: {exc}") from None
    listed = meta.get("k")
    if listed is not None and (
        not isinstance(listed, list) or not all(isinstance(k, int) for k in listed)
    ):
        raise InvalidInput(f"{origin} has malformed concept-bank metadata: k = {listed!r}")
    if listed is not None and sorted(listed) != bank.ks:
        raise InvalidInput(f"{origin} lists k = {listed} but holds centres for k = {bank.ks}")
    return bank


def _provenance(value: object) -> Provenance | None:
    return None if value is None else Provenance.from_json(value)


def _check_classes(k: int, classes: Sequence[ConceptClass]) -> None:
    """One named class per concept, each with an RGB colour QuPath can show."""
    if len(classes) != k:
        raise InvalidInput(f"the bank names {len(classes)} classes for k={k}; it needs {k}")
    for index, concept in enumerate(classes):
        if not isinstance(concept.name, str) or not concept.name.strip():
            raise InvalidInput(
                f"class {index} of the bank for k={k} needs a name that is not blank, "
                f"not {concept.name!r}"
            )
        _check_name_characters(k, index, concept.name)
        if not is_rgb(concept.color):
            raise InvalidInput(
                f"the bank's class {concept.name!r} for k={k} needs an RGB colour "
                f"of three integers 0-255, not {concept.color!r}"
            )


def _check_name_characters(k: int, index: int, name: str) -> None:
    """A class name is one line of printable text, short enough for a legend: it
    becomes a QuPath classification, a GeoJSON property, a legend line and a CSV cell."""
    if len(name) > MAX_CLASS_NAME_CHARS:
        raise InvalidInput(
            f"class {index} of the bank for k={k} has a name of {len(name)} characters; "
            f"at most {MAX_CLASS_NAME_CHARS} are allowed"
        )
    control = first_control_character(name)
    if control is not None:
        raise InvalidInput(
            f"class {index} of the bank for k={k} has a control character "
            f"(U+{ord(control):04X}) in its name {name!r}; names are one line of printable text"
        )


def default_classes(k: int, glass_last: bool = False) -> list[ConceptClass]:
    """The classes of a bank nobody has named yet. A last concept kept for glass
    (``kmeans.fit_concepts``) is named and coloured as glass, so that it reads as
    such in QuPath before anyone names the rest."""
    classes = [ConceptClass(n, c) for n, c in zip(default_names(k), default_colors(k), strict=True)]
    if glass_last:
        classes[-1] = ConceptClass(glass_name(k), GLASS_COLOR)
    return classes
