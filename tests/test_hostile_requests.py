"""Issue 16's campaign, part one: every field of a Segment request, slide paths and
names, and crafted slide files, against one real server on loopback.

Fields are generated (hypothesis, derandomized: the same inputs every run) from
ranges a careless or hostile client reaches: enum values out of range, ranks up
to 2³²-1, µm/px that are NaN, infinite, negative, subnormal or 1e300, names with
control characters or 10,000 characters. Each field has an oracle: what the
server must refuse, and with what; values the oracle cannot call bad must run
or be refused in one sentence. After every case the server must be unharmed
(see hostile_support).
"""

from __future__ import annotations

import math
import os
import struct
import unicodedata
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from hostile_support import (
    IMAGE,
    REFUSALS,
    Code,
    campaign_for_module,
    examples,
    png_declaring,
)
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from fseg_proto import fseg_pb2
from fseg_server.extract.stain import STAIN_SPEC

INVALID, NOT_FOUND, FAILED = Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.FAILED_PRECONDITION
UINT32 = st.integers(0, 2**32 - 1)
INT32 = st.integers(-(2**31), 2**31 - 1)
#: Doubles a client can send: the special ones first, then any.
#: Subnormals come from the listed constants only: other tests in the same process set
#: flush-to-zero (torch.set_flush_denormal), and hypothesis then refuses to draw them.
DOUBLES = st.one_of(
    st.sampled_from([0.0, -0.0, math.nan, math.inf, -math.inf, 5e-324, 1e-300, 1e300, -0.5]),
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False),
)
#: Text with what breaks names and paths: controls, separators, '..', very long runs.
HOSTILE_TEXT = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.sampled_from("a./\\\x00\n\r\t\u2028\u202e\x7f ~"), max_size=40),
    st.builds(lambda c, n: c * n, st.sampled_from("ab/é\n"), st.integers(250, 20_000)),
)


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    yield from campaign_for_module(tmp_path_factory, "hostile-requests")


# -- enums and ranks -----------------------------------------------------------------


@examples(20)
@given(
    mode=st.one_of(st.sampled_from([0, 1, 3]), INT32),
    frame=st.one_of(st.sampled_from([0, 1, 2]), INT32),
    tissue=st.one_of(st.sampled_from([0, 1, 2]), INT32),
)
def test_enums_out_of_range_are_refused_by_name(campaign, mode, frame, tissue):
    outcome = campaign.segment(mode=mode, frame=frame, tissue=tissue)
    unknown = [
        name
        for name, value, known in (
            ("mode", mode, range(4)),
            ("frame", frame, range(3)),
            ("tissue", tissue, range(3)),
        )
        if value not in known
    ]
    if unknown:
        campaign.judge(outcome, {INVALID}, f"unknown {unknown[0]} ")
    else:
        campaign.judge(outcome, {Code.OK})


@examples(25)
@given(
    k=st.one_of(st.sampled_from([0, 1, 2, 255, 256]), UINT32),
    components=st.one_of(st.sampled_from([0, 1, 64, 65]), UINT32),
    mode=st.sampled_from([fseg_pb2.MODE_PROJECT, fseg_pb2.MODE_CLASSIFY, fseg_pb2.MODE_CLUSTER]),
    bank=st.sampled_from(["", "tiny"]),
)
def test_ranks_beyond_their_bounds_are_refused_before_work(campaign, k, components, mode, bank):
    outcome = campaign.segment(k=k, components=components, mode=mode, bank=bank)
    if k > 255:
        campaign.judge(outcome, {INVALID}, "k must be at most 255")
    elif components > 64 and mode == fseg_pb2.MODE_CLASSIFY:  # the rank of classify mode
        campaign.judge(outcome, {INVALID}, "must be between 1 and 64")
    elif bank and (k or 8) not in (4, 8):
        campaign.judge(outcome, {INVALID}, f"no k={k}")
    else:  # a bank fitted on 00.png's own tissue: too few samples for a large k
        campaign.judge(outcome, {Code.OK, INVALID})


# -- resolutions ---------------------------------------------------------------------


@examples(30)
@given(slide_mpp=DOUBLES, target_mpp=DOUBLES, own_mpp=DOUBLES)
def test_resolutions_that_are_not_positive_numbers_are_refused(
    campaign, slide_mpp, target_mpp, own_mpp
):
    slide = fseg_pb2.SlideRef(path=IMAGE, mpp=own_mpp)
    outcome = campaign.segment(slide=slide, slide_mpp=slide_mpp, target_mpp=target_mpp)
    # The slide's own µm/px (a manifest's column) wins; the request's is then unused.
    used = (own_mpp, target_mpp) if own_mpp != 0 else (slide_mpp, target_mpp)
    bad = [v for v in used if v != 0 and not (0 < v < math.inf)]
    if bad:
        campaign.judge(outcome, {INVALID}, "must be a positive number of µm per pixel")
    else:  # plausible or not, a number: run, or refuse the scale in one sentence
        campaign.judge(outcome, {Code.OK, INVALID, FAILED})


# -- vectorizing ---------------------------------------------------------------------


@examples(25)
@given(
    simplify=st.one_of(st.none(), DOUBLES),
    min_area=st.one_of(st.none(), DOUBLES),
    upsample=st.one_of(st.sampled_from([0, 1, 2, 3, 4, 8]), UINT32),
    split=st.booleans(),
)
def test_vectorize_options_out_of_range_are_refused(campaign, simplify, min_area, upsample, split):
    options = fseg_pb2.VectorizeOptions(
        simplify=simplify, min_area_um2=min_area, label_upsample=upsample, split_regions=split
    )
    outcome = campaign.segment(vectorize=options)
    if simplify is not None and not 0 <= simplify < math.inf:
        campaign.judge(outcome, {INVALID}, "simplify must be a finite number")
    elif min_area is not None and not 0 <= min_area < math.inf:
        campaign.judge(outcome, {INVALID}, "min-area must be a finite number")
    elif upsample and STAIN_SPEC.stride % upsample:
        campaign.judge(outcome, {INVALID}, f"divide stain's stride of {STAIN_SPEC.stride} px")
    else:
        campaign.judge(outcome, {Code.OK})


# -- names and paths -----------------------------------------------------------------


def _file_in_root(root: Path, text: str) -> bool:
    try:
        return "\x00" not in text and (root / text).is_file()
    except OSError:
        return False


@examples(30)
@given(path=HOSTILE_TEXT)
def test_slide_paths_are_refused_in_one_sentence(campaign, path):
    ok = {Code.OK} if _file_in_root(campaign.root, path) else set()
    campaign.judge(campaign.segment(slide=fseg_pb2.SlideRef(path=path)), REFUSALS | ok)
    stat = campaign.call(campaign.stub.StatSlide, fseg_pb2.SlideRef(path=path))
    campaign.judge(stat, {Code.OK, INVALID})
    if stat.code == Code.OK and not stat.replies[0].readable:
        assert "\n" not in stat.replies[0].reason and stat.replies[0].reason


@examples(25)
@given(name=HOSTILE_TEXT)
def test_display_names_are_one_line_of_at_most_255_characters(campaign, name):
    outcome = campaign.segment(slide=fseg_pb2.SlideRef(path=IMAGE, name=name))
    shown = PurePosixPath(name.replace("\\", "/")).name if name else ""
    if len(shown) > 255:
        campaign.judge(outcome, {INVALID}, "at most 255")
    elif any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in shown):
        campaign.judge(outcome, {INVALID}, "holds a control character")
    else:
        campaign.judge(outcome, {Code.OK})


@examples(20)
@given(extractor=HOSTILE_TEXT, bank=HOSTILE_TEXT)
def test_unknown_extractors_and_banks_are_not_found_in_one_sentence(campaign, extractor, bank):
    outcome = campaign.segment(extractor=extractor, bank=bank)
    if extractor not in ("", "stain"):
        campaign.judge(outcome, {NOT_FOUND}, "does not serve the extractor")
    elif bank not in ("", "tiny"):
        campaign.judge(outcome, {NOT_FOUND}, "holds no concept bank")
    else:
        campaign.judge(outcome, {Code.OK})


@pytest.mark.parametrize(
    "fields,code,fragment",
    [
        pytest.param({"bank": "b" * 100_000}, NOT_FOUND, "characters cut", id="bank-100k"),
        pytest.param({"extractor": "é" * 100_000}, NOT_FOUND, "characters cut", id="extractor"),
        pytest.param(
            {"slide": fseg_pb2.SlideRef(sha256="f" * 100_000)}, INVALID, "not a SHA-256",
            id="sha256-100k",
        ),
        pytest.param(
            {"roi_geojson": '{"type": "' + "x" * 100_000 + '"}'}, INVALID, "unknown GeoJSON",
            id="roi-type-100k",
        ),
    ],
)  # fmt: skip
def test_long_text_quoted_in_a_refusal_still_reaches_the_client(campaign, fields, code, fragment):
    """Found by this campaign: quoted whole, these overflowed gRPC's 16 KiB status
    header and the client read "Stream removed" (RESOURCE_EXHAUSTED) instead."""
    campaign.judge(campaign.segment(**fields), {code}, fragment)


# -- crafted files -------------------------------------------------------------------


def _tiff_header(width: int, height: int) -> bytes:
    """A little-endian TIFF whose one IFD declares a tiled ``width`` x ``height`` RGB
    image with one tile pointing past the end of the file."""
    tags = [  # (tag, type, count, value): SHORT = 3, LONG = 4
        (256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1),
        (262, 3, 1, 2), (277, 3, 1, 3), (284, 3, 1, 1), (322, 3, 1, 256), (323, 3, 1, 256),
        (324, 4, 1, 1 << 30), (325, 4, 1, 196_608),
    ]  # fmt: skip
    ifd = struct.pack("<H", len(tags))
    for tag, kind, count, value in tags:
        packed = struct.pack("<H", value) + b"\0\0" if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, count) + packed
    return b"II*\0" + struct.pack("<I", 8) + ifd + b"\0\0\0\0"


def _crafted(root: Path) -> dict[str, bytes]:
    real = (root / IMAGE).read_bytes()
    rng = np.random.default_rng(16)
    return {
        "zero.png": b"",
        "garbage.png": rng.bytes(20_000),
        "half.png": real[: len(real) // 2],
        "header-only-100k.png": png_declaring(100_000, 100_000),
        "header-only-2^31.png": png_declaring(2**31 - 1, 2**31 - 1),
        "bad-idat.png": png_declaring(300, 300, rng.bytes(5000)),
        "one-pixel.png": png_declaring(1, 1, zlib.compress(b"\0\xff\x00\xff")),
        "garbage.tif": b"II*\0" + rng.bytes(20_000),
        "header-only-1e6.tif": _tiff_header(1_000_000, 1_000_000),
        "header-only-small.tif": _tiff_header(300, 300),
        "garbage.svs": b"II*\0" + rng.bytes(20_000),
        "truncated.svs": (root / "cmu.svs").read_bytes()[:300_000],
    }


def _written(root: Path, name: str) -> str:
    path = root / f"crafted-{name}"
    if not path.exists():
        path.write_bytes(_crafted(root)[name])
    return path.name


CRAFTED_NAMES = [
    "zero.png", "garbage.png", "half.png", "header-only-100k.png", "header-only-2^31.png",
    "bad-idat.png", "garbage.tif", "header-only-1e6.tif", "header-only-small.tif",
    "garbage.svs", "truncated.svs",
]  # fmt: skip


@pytest.mark.parametrize("name", CRAFTED_NAMES)
def test_crafted_files_are_refused_as_what_they_are(campaign, name):
    path = _written(campaign.root, name)
    campaign.judge(campaign.segment(slide=fseg_pb2.SlideRef(path=path)), {INVALID, FAILED})
    stat = campaign.call(campaign.stub.StatSlide, fseg_pb2.SlideRef(path=path))
    campaign.judge(stat, {Code.OK})


def test_a_one_pixel_image_runs_or_is_refused_in_one_sentence(campaign):
    path = _written(campaign.root, "one-pixel.png")
    campaign.judge(campaign.segment(slide=fseg_pb2.SlideRef(path=path)), {Code.OK, INVALID, FAILED})


@pytest.mark.parametrize("mode", ["CMYK", "I;16", "F", "1", "LA", "P"])
def test_images_that_are_not_brightfield_rgb_are_refused_or_converted(campaign, mode):
    path = campaign.root / f"mode-{mode.replace(';', '')}.tif"
    Image.open(campaign.root / IMAGE).convert(mode).save(path)
    outcome = campaign.segment(slide=fseg_pb2.SlideRef(path=path.name))
    campaign.judge(outcome, {Code.OK} if mode in ("LA", "P") else {FAILED, INVALID})


def test_a_fifo_in_the_slide_root_does_not_hold_a_thread(campaign):
    fifo = campaign.root / "fifo.png"
    os.mkfifo(fifo)
    try:
        outcome = campaign.segment(slide=fseg_pb2.SlideRef(path=fifo.name))
        campaign.judge(outcome, {INVALID})
    finally:
        fifo.unlink()


# -- load ----------------------------------------------------------------------------


def test_a_burst_of_jobs_beyond_the_queue_is_refused_as_busy(campaign):
    """24 jobs at once on a server that admits 16 (2 running): each runs or is turned
    away RESOURCE_EXHAUSTED in one sentence, and the server answers health throughout."""
    burst = 24
    with ThreadPoolExecutor(burst) as pool:
        futures = [pool.submit(campaign.segment) for _ in range(burst)]
        assert campaign.server.serving()
        outcomes = [f.result() for f in futures]
    for outcome in outcomes:
        campaign.judge(outcome, {Code.OK, Code.RESOURCE_EXHAUSTED})
    assert sum(o.code == Code.OK for o in outcomes) >= 2
    assert campaign.server.idle()
