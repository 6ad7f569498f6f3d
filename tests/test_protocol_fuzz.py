"""Issue 16's protocol fuzz: mutated protocol buffers, as raw bytes, to every method.

Valid requests of every method of fseg.v1.Segmentation (and of the standard
health check) are serialized, then mutated with a seeded generator: bit flips,
truncations, fields of random numbers and wire types, overlong and oversized
varints, length prefixes that lie, spliced messages. They go out as raw bytes on
a generic channel, so the server parses them itself. The run is bounded by
count and by seconds, whichever comes first; the same seed sends the same bytes
in the same order. No call may end INTERNAL or UNKNOWN (nor time out, nor find
the server gone), a refusal is one sentence, and the server is unharmed after
every call (see hostile_support).
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2
from hostile_support import IMAGE, Code, Outcome, assert_one_sentence, campaign_for_module

from fseg_proto import fseg_pb2

SEED = 16
MAX_CALLS = 1500
MAX_SECONDS = 60.0
CALL_TIMEOUT_S = 60  # a hang guard: a fuzzed call that takes this long fails the test
NEVER = {Code.INTERNAL, Code.UNKNOWN, Code.DEADLINE_EXCEEDED, Code.UNAVAILABLE}
SERVICE = fseg_pb2.DESCRIPTOR.services_by_name["Segmentation"]

pytestmark = pytest.mark.slow


def _upload(data: bytes) -> list:
    header = fseg_pb2.UploadHeader(
        name="a.png", sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data)
    )
    return [fseg_pb2.UploadChunk(header=header), fseg_pb2.UploadChunk(data=data)]


def _slide_set() -> fseg_pb2.SlideSet:
    files = [
        fseg_pb2.SlideFile(path=name, sha256=hashlib.sha256(name.encode()).hexdigest(),
                           size_bytes=len(name))
        for name in ("s.mrxs", "s/Slidedat.ini")
    ]  # fmt: skip
    return fseg_pb2.SlideSet(main="s.mrxs", files=files)


ROI = '{"type":"Polygon","coordinates":[[[10,10],[200,10],[200,150],[10,150],[10,10]]]}'
#: Valid requests per method (a stream's are its messages in order).
SEEDS: dict[str, list] = {
    "Segment": [
        fseg_pb2.SegmentRequest(slide=fseg_pb2.SlideRef(path=IMAGE)),
        fseg_pb2.SegmentRequest(
            slide=fseg_pb2.SlideRef(path=IMAGE, name="n.png", mpp=0.5),
            bank="tiny",
            k=4,
            mode=fseg_pb2.MODE_CLASSIFY,
            components=2,
            roi_geojson=ROI,
            vectorize=fseg_pb2.VectorizeOptions(simplify=1, min_area_um2=10, label_upsample=2),
            outputs=fseg_pb2.OutputOptions(geojson=True),
        ),
    ],
    "FitConcepts": [fseg_pb2.FitRequest(slides=[fseg_pb2.SlideRef(path=IMAGE)], k=[2, 3])],
    "StatSlide": [fseg_pb2.SlideRef(path=IMAGE), fseg_pb2.SlideRef(sha256="a" * 64)],
    "UploadSlide": [_upload(b"not really a slide")],
    "StatSlideSet": [_slide_set()],
    "UploadSlideSet": [
        [
            fseg_pb2.SlideSetChunk(
                header=fseg_pb2.SlideSetHeader(
                    set=_slide_set(), sending=["s.mrxs", "s/Slidedat.ini"]
                )
            ),
            fseg_pb2.SlideSetChunk(data=b"s.mrxss/Slidedat.ini"),
        ]
    ],
    "GetServerInfo": [fseg_pb2.ServerInfoRequest()],
    "Atlas": [
        fseg_pb2.AtlasRequest(
            slides=[fseg_pb2.SlideRef(path=IMAGE)],
            bank="tiny",
            k=4,
            windows_per_concept=12,
            tiles_per_slide=1,
        )
    ],
}
HEALTH = "/grpc.health.v1.Health/Check"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _random_field(rng: random.Random) -> bytes:
    number, wire = rng.choice([rng.randint(1, 20), rng.randint(1, 2**29 - 1)]), rng.randint(0, 7)
    key = _varint((number << 3) | wire)
    payload = {
        0: _varint(rng.choice([0, 1, 2**32 - 1, 2**63, 2**64 - 1])),
        1: rng.randbytes(8),
        2: _varint(rng.choice([0, 3, 2**31])) + rng.randbytes(3),
        5: rng.randbytes(4),
    }.get(wire, rng.randbytes(rng.randint(0, 4)))
    return key + payload


def _mutate(data: bytes, rng: random.Random, other: bytes) -> bytes:
    """One seeded mutation of ``data`` (``other``: another valid message, to splice)."""
    kind = rng.randrange(8)
    at = rng.randint(0, len(data))
    if kind == 0 and data:  # a few bit flips
        flipped = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        return bytes(flipped)
    if kind == 1:  # truncated
        return data[:at]
    if kind == 2:  # a field of a random number and wire type, anywhere
        return data[:at] + _random_field(rng) + data[at:]
    if kind == 3:  # an overlong varint (11 bytes) or one beyond 64 bits
        return data[:at] + b"\x08" + b"\xff" * rng.choice([10, 11, 20]) + b"\x01" + data[at:]
    if kind == 4:  # a length prefix that claims far more than follows
        return data[:at] + b"\x0a" + _varint(rng.choice([2**31 - 1, 2**32, 10**6])) + b"ab"
    if kind == 5:  # random bytes
        return data[:at] + rng.randbytes(rng.randint(1, 32)) + data[at:]
    if kind == 6:  # spliced with another message
        return data[:at] + other[rng.randint(0, len(other)) :]
    return data[:at] + data[at:] * rng.randint(2, 4)  # a repeated tail


def _caller(channel: grpc.Channel, method: str, client_streaming: bool, server_streaming: bool):
    """Raw bytes in, raw bytes out: no serializer on either side."""
    if client_streaming:
        call = channel.stream_unary(method)
        return lambda messages, timeout: [call(iter(messages), timeout=timeout)]
    if server_streaming:
        call = channel.unary_stream(method)
        return lambda messages, timeout: list(call(messages[0], timeout=timeout))
    call = channel.unary_unary(method)
    return lambda messages, timeout: [call(messages[0], timeout=timeout)]


def _targets(channel: grpc.Channel) -> list[tuple[str, Callable, list[list[bytes]]]]:
    """(method, call, serialized seeds) for every method of the service and the health check."""
    assert set(SEEDS) == {m.name for m in SERVICE.methods}, "a method without fuzz seeds"
    targets = []
    for method in SERVICE.methods:
        path = f"/{SERVICE.full_name}/{method.name}"
        call = _caller(channel, path, method.client_streaming, method.server_streaming)
        seeds = [
            [m.SerializeToString() for m in (seed if isinstance(seed, list) else [seed])]
            for seed in SEEDS[method.name]
        ]
        targets.append((path, call, seeds))
    health = [[health_pb2.HealthCheckRequest(service="fseg.v1.Segmentation").SerializeToString()]]
    targets.append((HEALTH, _caller(channel, HEALTH, False, False), health))
    return targets


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    yield from campaign_for_module(tmp_path_factory, "protocol-fuzz")


def test_mutated_protocol_buffers_never_get_internal_or_unknown(campaign):
    rng = random.Random(SEED)
    channel = campaign.server.channel()
    targets = _targets(channel)
    started, calls, by_method = time.monotonic(), 0, {}
    while calls < MAX_CALLS and time.monotonic() - started < MAX_SECONDS:
        method, call, seeds = targets[calls % len(targets)]
        messages = list(rng.choice(seeds))
        which = rng.randrange(len(messages))
        other = rng.choice(rng.choice(targets)[2])[0]
        messages[which] = _mutate(messages[which], rng, other)
        campaign.open_case()
        campaign.inputs.add(hashlib.sha256(method.encode() + b"".join(messages)).hexdigest())
        try:
            call(messages, CALL_TIMEOUT_S)
            outcome = Outcome(Code.OK)
        except grpc.RpcError as error:
            outcome = Outcome(error.code(), error.details() or "")
        campaign.statuses[outcome.code.name] += 1
        by_method.setdefault(method.rsplit("/", 1)[1], set()).add(outcome.code.name)
        calls += 1
        seen = f"call {calls} to {method} with {b''.join(messages)[:200]!r}"
        assert outcome.code not in NEVER, f"{seen}: {outcome.code.name} {outcome.details[:300]}"
        # The standard health service answers an unknown service name NOT_FOUND with
        # no sentence, as its protocol says; load balancers read only the code.
        if outcome.code != Code.OK and not (method == HEALTH and outcome.code == Code.NOT_FOUND):
            assert_one_sentence(outcome.details)
        campaign.assert_unharmed()
    channel.close()
    print(f"\nprotocol fuzz: {calls} calls in {time.monotonic() - started:.0f} s; {by_method}")
    assert calls >= len(targets)  # every method was reached
