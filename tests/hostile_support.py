"""Support for issue 16's hostile campaign against a real server (holds no tests).

A :class:`Campaign` is one real ``fseg-server serve`` on loopback (started as
every test server is, see ``test_e2e_support.real_server``) with a slide root
and an upload folder. Each case sends what a hostile or careless client would,
then :meth:`Campaign.judge` checks what the campaign promises for every case:

- the call ends with one of the statuses the case allows (never INTERNAL,
  UNKNOWN, or a client-side "Stream removed"), and a refusal is one sentence
  without a traceback;
- the server still answers health as SERVING;
- its resident memory stays within ``RSS_HEADROOM`` of what it held idle;
- nothing is left in its upload folder's ``tmp``, nor a temporary file in its
  slide root;
- nothing new in its log reads "Traceback" or "internal error".

Every call is tallied by status and by distinct request bytes, so a module can
say how many cases it ran (printed when its server stops).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import psutil
from hypothesis import HealthCheck, settings
from test_e2e_support import copy_images, real_server, temp_files

from conftest import shared
from fseg_proto import fseg_pb2
from fseg_server.concepts import ConceptBank
from fseg_server.extract.stain import STAIN_SPEC
from servers import ServerProcess

Code = grpc.StatusCode
#: Refusals a client's input may earn; which of them a case expects is the case's own.
REFUSALS = frozenset(
    {Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.PERMISSION_DENIED, Code.FAILED_PRECONDITION}
)
#: Resident memory a server may gain over its idle figure during a campaign, bytes.
RSS_HEADROOM = 1536 << 20
UPLOAD_CAP = 5_000_000
CALL_TIMEOUT_S = 120  # a hang guard, not a speed limit
IMAGE = "00.png"  # a 280 x 223 px real H&E patch: whole jobs in a fraction of a second


@dataclass
class Outcome:
    """How a call ended: its status, its sentence (empty when OK) and its messages."""

    code: grpc.StatusCode
    details: str = ""
    replies: list = field(default_factory=list)


@dataclass(repr=False)  # hypothesis prints it with every falsifying example
class Campaign:
    server: ServerProcess
    root: Path
    uploads: Path
    idle_rss: int = 0
    statuses: Counter = field(default_factory=Counter)
    inputs: set[str] = field(default_factory=set)
    _log_seen: int = 0
    _case_open: bool = False  # a call was made since the last assert_unharmed

    def __repr__(self) -> str:
        return f"Campaign({self.server.address})"

    def _repr_pretty_(self, printer, cycle: bool) -> None:  # hypothesis's printer
        printer.text(repr(self))

    @property
    def stub(self):
        return self.server.stub()

    def call(self, method: Callable, request: object, timeout: float = CALL_TIMEOUT_S) -> Outcome:
        """``method(request)`` (a stub's method), its stream read to the end."""
        self.open_case()
        self.inputs.add(_fingerprint(request))
        try:
            reply = method(request, timeout=timeout)
            replies = list(reply) if hasattr(reply, "__iter__") else [reply]
            outcome = Outcome(Code.OK, replies=replies)
        except grpc.RpcError as error:
            outcome = Outcome(error.code(), error.details() or "")
        self.statuses[outcome.code.name] += 1
        return outcome

    def segment(self, **fields: object) -> Outcome:
        fields.setdefault("slide", fseg_pb2.SlideRef(path=IMAGE))
        return self.call(self.stub.Segment, fseg_pb2.SegmentRequest(**fields))

    def upload(self, messages: list) -> Outcome:
        """An UploadSlide stream of ``messages`` (UploadChunk), sent as they are."""
        return self.call(
            lambda m, timeout: self.stub.UploadSlide(iter(m), timeout=timeout), messages
        )

    def judge(
        self,
        outcome: Outcome,
        allowed: Iterable[grpc.StatusCode] = REFUSALS | {Code.OK},
        fragment: str = "",
    ) -> None:
        """The campaign's promises for one case (see the module docstring)."""
        try:
            assert outcome.code in set(allowed), f"{outcome.code.name}: {outcome.details[:500]}"
            if outcome.code != Code.OK:
                assert_one_sentence(outcome.details)
                assert fragment in outcome.details, outcome.details[:500]
        finally:
            self._case_open = False  # the next call starts the next case's log window
        self.assert_unharmed()

    def open_case(self) -> None:
        """Start a case's window on the server's log at its first call, so that a case
        that failed before reading the log does not blame the next one."""
        if not self._case_open:
            self._log_seen, self._case_open = len(self.server.log_text()), True

    def assert_unharmed(self) -> None:
        self._case_open = False
        assert self.server.serving(), self.server.log_text()[-2000:]
        rss = psutil.Process(self.server.process.pid).memory_info().rss
        assert rss < self.idle_rss + RSS_HEADROOM, (
            f"RSS {rss >> 20} MiB, idle {self.idle_rss >> 20}"
        )
        assert list((self.uploads / "tmp").iterdir()) == []
        assert temp_files(self.root) == []
        log = self.server.log_text()
        new, self._log_seen = log[self._log_seen :], len(log)
        assert "Traceback" not in new and "internal error" not in new, new[-3000:]

    def report(self) -> str:
        counts = ", ".join(f"{name} {n}" for name, n in sorted(self.statuses.items()))
        return f"{sum(self.statuses.values())} calls, {len(self.inputs)} distinct: {counts}"


def assert_one_sentence(details: str) -> None:
    """A refusal a person can read: one line, no traceback, no transport-level noise."""
    assert details.strip(), "a refusal without a sentence"
    assert "\n" not in details and "Traceback" not in details, details[:500]
    assert not details.startswith("internal error"), details[:500]
    assert "Stream removed" not in details and "deserializing" not in details, details[:500]
    assert len(details) <= 1200, f"{len(details)} characters"


def _fingerprint(request: object) -> str:
    data = request.SerializeToString() if hasattr(request, "SerializeToString") else request
    if not isinstance(data, bytes):
        data = repr(data).encode()
    return hashlib.sha256(data).hexdigest()


def tiny_bank(dim: int = STAIN_SPEC.feature_dim, ks: tuple[int, ...] = (4,)) -> ConceptBank:
    """A stain bank of random non-negative centres (the stain features are non-negative)."""
    rng = np.random.default_rng(1)
    return ConceptBank("stain", dim, {k: rng.random((k, dim), np.float32) for k in ks})


def start_campaign(base: Path, *extra: str) -> Campaign:
    """A real server over a slide root of two small real images and the CMU slide,
    with uploads (capped at UPLOAD_CAP) and a bank ``tiny`` (k = 4, 8); warmed by one
    whole job, after which its resident memory is taken as idle."""
    root = base / "slides"
    copy_images(root, ("00", "01"))
    shutil.copy(shared("slides/CMU-1-Small-Region.svs"), root / "cmu.svs")
    uploads = base / "uploads"
    bank = tiny_bank(ks=(4, 8)).save(base / "tiny.safetensors")
    server = real_server(
        base, "--slide-root", str(root), "--upload-dir", str(uploads),
        "--upload-max-bytes", str(UPLOAD_CAP), "--upload-idle-seconds", "5",
        "--concepts", f"tiny={bank}", *extra,
    )  # fmt: skip
    campaign = Campaign(server, root, uploads)
    warm = campaign.segment()
    assert warm.code == Code.OK, warm.details
    campaign.idle_rss = psutil.Process(server.process.pid).memory_info().rss
    campaign.assert_unharmed()
    return campaign


def summary_of(outcome: Outcome) -> dict:
    """The JSON summary that ends a successful Segment stream."""
    last = outcome.replies[-1]
    assert last.WhichOneof("event") == "summary"
    return json.loads(last.summary.json)


def campaign_for_module(factory, name: str, *extra: str):
    """A module-scoped fixture's body: one campaign server for a whole module, its
    tally printed when it stops."""
    campaign = start_campaign(factory.mktemp(name), *extra)
    try:
        yield campaign
    finally:
        print(f"\n{name}: {campaign.report()}")
        campaign.server.stop()


def examples(count: int) -> settings:
    """Hypothesis settings of the campaign: the same ``count`` inputs every run (derandomized),
    no per-example time limit (a whole job is one example)."""
    return settings(
        derandomize=True,
        deadline=None,
        max_examples=count,
        suppress_health_check=[HealthCheck.too_slow],
    )


def png_declaring(width: int, height: int, idat: bytes = b"") -> bytes:
    """A PNG whose header declares ``width`` x ``height`` RGB, with ``idat`` as its only data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks
