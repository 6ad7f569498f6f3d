"""What a server holds for its whole life: extractors on the device and concept banks."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..concepts.bank import ConceptBank, bank_from_bytes, load_bank
from ..device import place
from ..errors import InvalidInput, NotFound
from ..extract import Extractor, create_extractor
from ..text import one_line

MAX_INLINE_BANK_BYTES = 16 << 20
INLINE_BANK_CACHE = 8


@dataclass
class Resources:
    """Extractors (already on ``device``) and named concept banks."""

    device: torch.device
    extractors: dict[str, Extractor]
    banks: dict[str, ConceptBank]
    default_extractor: str
    _inline: OrderedDict[str, ConceptBank] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def load(
        cls,
        device: torch.device,
        extractor_names: list[str],
        weights: dict[str, str],
        bank_paths: dict[str, Path],
    ) -> Resources:
        """Build every extractor once and read every bank, refusing what does not fit."""
        unused = set(weights) - set(extractor_names)
        if unused:
            raise InvalidInput(f"--weights given for {', '.join(sorted(unused))}, not served")
        extractors = {
            name: place(create_extractor(name, weights.get(name)), device)
            for name in extractor_names
        }
        banks = {name: load_bank(path) for name, path in bank_paths.items()}
        return cls(device, extractors, banks, extractor_names[0])

    def extractor(self, name: str) -> Extractor:
        name = name or self.default_extractor
        if name not in self.extractors:
            raise NotFound(
                f"this server does not serve the extractor {name!r}; it serves "
                f"{', '.join(self.extractors)} (start it with --extractor {one_line(name)})"
            )
        return self.extractors[name]

    def bank(self, name: str, inline: bytes) -> tuple[ConceptBank | None, str]:
        """The bank a request asks for, and how to name it; (None, "") to fit one."""
        if inline:
            return self._inline_bank(inline), "sent with the request"
        if not name:
            return None, ""
        if name not in self.banks:
            held = ", ".join(self.banks) or "none"
            raise NotFound(f"this server holds no concept bank {name!r} (it holds: {held})")
        return self.banks[name], name

    def _inline_bank(self, data: bytes) -> ConceptBank:
        if len(data) > MAX_INLINE_BANK_BYTES:
            raise InvalidInput(
                f"the concept bank sent is {len(data)} bytes; at most {MAX_INLINE_BANK_BYTES}"
            )
        digest = hashlib.sha256(data).hexdigest()
        with self._lock:
            if digest in self._inline:
                self._inline.move_to_end(digest)
                return self._inline[digest]
        bank = bank_from_bytes(data, "the concept bank sent with the request")
        with self._lock:
            self._inline[digest] = bank
            while len(self._inline) > INLINE_BANK_CACHE:
                self._inline.popitem(last=False)
        return bank
