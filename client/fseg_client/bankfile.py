"""Concept banks on the client: a server bank's name, or a bank file's bytes.

The client never needs the centres, only the bank's metadata (extractor, k
values) to catch a mismatch before a whole batch fails; safetensors keeps that
metadata in a JSON header that is read here with the standard library.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path

from .errors import ClientError

BANK_FILE_NAME = "fseg-bank.safetensors"
BANK_MAX_BYTES = 16 * 1024 * 1024  # SegmentRequest.bank_safetensors limit
_HEADER_MAX_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class BankSpec:
    """The bank every slide is segmented with.

    Exactly one of ``name`` (a bank the server loaded) and ``data`` (a bank
    file sent with each request) is set.
    """

    name: str = ""
    data: bytes = b""
    source: str = ""  # where it came from, for messages

    @property
    def digest(self) -> str:
        """Identifies the bank in the resume fingerprint."""
        if self.data:
            return "sha256:" + hashlib.sha256(self.data).hexdigest()
        return "name:" + self.name


def bank_metadata(data: bytes, source: str) -> dict:
    """The ``fseg`` metadata of a bank file's bytes.

    Raises:
        ClientError: when ``data`` is not an fseg concept bank in safetensors format.
    """
    problem = (
        f"{source} is not an fseg concept bank in safetensors format (convert published "
        ".joblib banks with `fseg-server import-concepts`)"
    )
    if len(data) < 8:
        raise ClientError(problem)
    (length,) = struct.unpack("<Q", data[:8])
    if length > min(_HEADER_MAX_BYTES, len(data) - 8):
        raise ClientError(problem)
    try:
        header = json.loads(data[8 : 8 + length].decode("utf-8"))
        meta = json.loads(header["__metadata__"]["fseg"])
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        raise ClientError(problem) from None
    if not isinstance(meta, dict):
        raise ClientError(problem)
    return meta


def check_bank(meta: dict, source: str, k: int, extractor: str) -> None:
    """Refuse a bank that lacks ``k`` or belongs to another extractor than ``extractor``."""
    ks = [int(v) for v in meta.get("k", []) if str(v).isdigit()]
    if ks and k not in ks:
        held = ", ".join(map(str, sorted(ks)))
        raise ClientError(f"the concept bank {source} has no k={k}; it holds k = {held}")
    bank_extractor = str(meta.get("extractor", ""))
    if extractor and bank_extractor and extractor != bank_extractor:
        raise ClientError(
            f"the concept bank {source} was fitted on {bank_extractor} features, not on "
            f"{extractor}; use --extractor {bank_extractor} or another bank"
        )


def load_bank_file(path: Path) -> tuple[BankSpec, dict]:
    """Read a local bank file; returns its spec and metadata."""
    try:
        size = path.stat().st_size
        if size > BANK_MAX_BYTES:
            raise ClientError(
                f"the concept bank {path} is {size / 2**20:.1f} MiB; a bank sent with the "
                f"request may be at most {BANK_MAX_BYTES // 2**20} MiB (load it on the server "
                "with --concepts there and refer to it by name)"
            )
        data = path.read_bytes()
    except OSError as exc:
        raise ClientError(f"cannot read the concept bank {path} ({exc.strerror})") from None
    return BankSpec(data=data, source=str(path)), bank_metadata(data, str(path))


def looks_like_bank_file(text: str) -> bool:
    """Whether ``--concepts`` names a local file rather than a bank on the server."""
    return text.lower().endswith(".safetensors") or Path(text).expanduser().is_file()


def named_bank(concepts: str, k: int, extractor: str) -> tuple[BankSpec, dict]:
    """The bank ``--concepts`` names, and its metadata: a local bank file, read and
    checked for ``k`` and ``extractor`` here (``{}`` when it names a bank the
    server loaded, which the server checks).

    Raises:
        ClientError: the file does not exist, or does not suit ``k`` or ``extractor``.
    """
    if not looks_like_bank_file(concepts):
        return BankSpec(name=concepts, source=f"server bank {concepts}"), {}
    path = Path(concepts).expanduser()
    if not path.is_file():
        raise ClientError(f"the concept bank {concepts} does not exist")
    spec, meta = load_bank_file(path)
    check_bank(meta, str(path), k, extractor)
    return spec, meta
