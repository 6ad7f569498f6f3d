"""Request fingerprints: stable for the same request, different for any change."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import pytest

from fseg_client.bankfile import BankSpec
from fseg_client.fingerprint import HashCache, request_fingerprint, sha256_file, slide_identity
from fseg_client.inputs import SlideInput
from fseg_client.options import RequestOptions
from fseg_proto import PROTOCOL


@pytest.fixture
def slide(tmp_path: Path) -> SlideInput:
    path = tmp_path / "s.svs"
    path.write_bytes(b"pixels" * 100)
    return SlideInput(path, "s")


def fingerprint(slide: SlideInput, options=None, bank=None, by_content=False) -> str:
    options = options or RequestOptions()
    bank = bank or BankSpec(data=b"bank-1")
    identity = slide_identity(slide, by_content, HashCache())
    return request_fingerprint(options, bank.digest, identity)


def test_same_request_same_fingerprint(slide: SlideInput) -> None:
    assert fingerprint(slide) == fingerprint(slide)
    assert len(fingerprint(slide)) == 64


@pytest.mark.parametrize(
    "change",
    [
        {"k": 16},
        {"extractor": "uni"},
        {"mode": "cluster"},
        {"slide_mpp": 0.25},
        {"target_mpp": 1.0},
        {"frame": "level0"},
        {"roi_geojson": '{"type": "Point", "coordinates": [1, 2]}'},
        {"tissue": "off"},
        {"simplify": 0.5},
        {"min_area_um2": 100.0},
        {"split_regions": True},
        {"label_upsample": 4},
        {"components": 3},
    ],
)
def test_every_option_changes_it(slide: SlideInput, change: dict) -> None:
    changed = dataclasses.replace(RequestOptions(), **change)
    assert fingerprint(slide, changed) != fingerprint(slide)


def test_requested_outputs_do_not_change_it(slide: SlideInput) -> None:
    only = dataclasses.replace(RequestOptions(), outputs=("geojson",))
    assert fingerprint(slide, only) == fingerprint(slide)


def test_the_bank_changes_it(slide: SlideInput) -> None:
    assert fingerprint(slide, bank=BankSpec(data=b"bank-2")) != fingerprint(slide)
    assert fingerprint(slide, bank=BankSpec(name="uni-k32")) != fingerprint(slide)


def test_touching_the_slide_changes_it(slide: SlideInput) -> None:
    before = fingerprint(slide)
    stat = slide.path.stat()
    os.utime(slide.path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert fingerprint(slide) != before


def test_by_content_ignores_mtime_but_not_bytes(slide: SlideInput) -> None:
    before = fingerprint(slide, by_content=True)
    stat = slide.path.stat()
    os.utime(slide.path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert fingerprint(slide, by_content=True) == before
    slide.path.write_bytes(b"other pixels")
    assert fingerprint(slide, by_content=True) != before


def test_hash_cache_reuses_a_remembered_digest(slide: SlideInput) -> None:
    cache = HashCache()
    stat = slide.path.stat()
    cache.remember(slide.path, stat.st_size, stat.st_mtime_ns, "f" * 64)
    assert cache.sha256(slide.path) == "f" * 64
    slide.path.write_bytes(b"changed")  # new size: hashed for real
    assert cache.sha256(slide.path) == sha256_file(slide.path)


def test_fingerprint_is_the_hash_of_one_canonical_document(slide: SlideInput) -> None:
    """Written in parts for speed, the document must stay byte for byte what earlier
    versions hashed whole, or every finished slide of an old batch would run again."""
    options = RequestOptions(k=16)
    identity = slide_identity(slide, False, HashCache())
    document = {
        "protocol": PROTOCOL,
        "options": options.canonical(),
        "bank": "b" * 64,
        "slide": identity,
    }
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    expected = hashlib.sha256(text.encode("ascii")).hexdigest()
    assert request_fingerprint(options, "b" * 64, identity) == expected
