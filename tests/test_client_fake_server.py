"""A stand-in fseg server for the client tests: the fseg.v1 protocol, no segmentation.

Results are a pure function of the request (slide name, k, bank digest), so a
slide segmented on any server gives byte-identical files. Runs in-process
(:func:`start`) or as a subprocess that can be killed (``python THIS serve``).
Holds no tests itself beyond a smoke test of its own protocol.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import struct
import sys
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from PIL import Image

from fseg_proto import fseg_pb2, fseg_pb2_grpc

CHUNK = 1000  # small, so that every result arrives in several chunks


def fake_bank(k: int, extractor: str = "stain", seed: str = "") -> bytes:
    """Bytes shaped like an fseg safetensors bank (header only matters to the client)."""
    meta = {
        "format": "fseg-concept-bank/1",
        "extractor": extractor,
        "feature_dim": 4,
        "k": [k],
        "mpp": 2.0,
        "source": seed,
    }
    body = b"\0" * (k * 4 * 4)
    header = {
        "__metadata__": {"fseg": json.dumps(meta)},
        f"centres/{k}": {"dtype": "F32", "shape": [k, 4], "data_offsets": [0, len(body)]},
    }
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


def result_files(name: str, k: int, bank: str, wanted: fseg_pb2.OutputOptions) -> dict:
    """The result files of a request, deterministic."""
    seed = hashlib.sha256(f"{name}|{k}|{bank}".encode()).digest()
    files = {}
    every = not (wanted.geojson or wanted.labels or wanted.overlay)
    if every or wanted.geojson:
        features = [{"type": "Feature", "properties": {"i": i}} for i in range(200)]
        files["geojson"] = json.dumps({"type": "FeatureCollection", "features": features}).encode()
    for suffix, flag, mode in (("labels.png", "labels", "L"), ("overlay.png", "overlay", "RGB")):
        if every or getattr(wanted, flag):
            image = Image.frombytes("L", (64, 64), (seed * 128)[: 64 * 64]).convert(mode)
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            files[suffix] = buffer.getvalue()
    return files


class FakeSegmentation(fseg_pb2_grpc.SegmentationServicer):
    """Configurable misbehaviour: ``fail_codes`` are raised, one per call, first."""

    def __init__(self, token: str | None = None, delay_s: float = 0.0) -> None:
        self.token, self.delay_s = token, delay_s
        self.readable_roots: list[str] = ["/"]
        self.uploads: dict[str, bytes] = {}
        self.fail_codes: list[grpc.StatusCode] = []
        self.segment_calls: list[str] = []
        self.fit_calls = 0
        self.corrupt_sha = False
        self.lock = threading.Lock()

    def _auth(self, context: grpc.ServicerContext) -> None:
        if self.token is None:
            return
        sent = dict(context.invocation_metadata()).get("authorization")
        if sent != f"Bearer {self.token}":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

    def _readable(self, path: str) -> bool:
        return os.path.isfile(path) and any(path.startswith(r) for r in self.readable_roots)

    def _slide_name(self, ref: fseg_pb2.SlideRef, context: grpc.ServicerContext) -> str:
        if ref.HasField("sha256"):
            if ref.sha256 not in self.uploads:
                context.abort(grpc.StatusCode.NOT_FOUND, f"no upload {ref.sha256}")
        elif not self._readable(ref.path):
            context.abort(grpc.StatusCode.NOT_FOUND, f"slide {ref.path} does not exist")
        return ref.name

    def Segment(self, request, context):
        self._auth(context)
        with self.lock:
            self.segment_calls.append(request.slide.name)
            code = self.fail_codes.pop(0) if self.fail_codes else None
        if code is not None:
            context.abort(code, f"injected {code.name}")
        name = self._slide_name(request.slide, context)
        if not request.bank_safetensors and request.bank != "demo":
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"no bank named {request.bank!r}")
        bank = (
            hashlib.sha256(request.bank_safetensors).hexdigest()
            if request.bank_safetensors
            else "demo"
        )
        yield fseg_pb2.SegmentEvent(accepted=fseg_pb2.Accepted(job_id="j1", queue_position=0))
        for done in range(1, 4):
            if self.delay_s:
                time.sleep(self.delay_s / 3)
            if not context.is_active():
                return
            progress = fseg_pb2.Progress(stage="segment", done=done, total=3)
            yield fseg_pb2.SegmentEvent(progress=progress)
        for suffix, data in result_files(name, request.k, bank, request.outputs).items():
            digest = hashlib.sha256(data).hexdigest()
            if self.corrupt_sha:
                digest = "0" * 64
            for offset in range(0, len(data), CHUNK):
                piece = data[offset : offset + CHUNK]
                last = offset + CHUNK >= len(data)
                chunk = fseg_pb2.ResultChunk(
                    file=suffix,
                    offset=offset,
                    data=piece,
                    last=last,
                    total_bytes=len(data) if last else 0,
                    sha256=digest if last else "",
                )
                yield fseg_pb2.SegmentEvent(chunk=chunk)
        summary = {
            "slide": name,
            "k": request.k,
            "tissue": {"area_um2": 100.0},
            "classes": [{"name": "Stroma", "area_um2": 60.0}, {"name": "Tumour", "area_um2": 40.0}],
        }
        yield fseg_pb2.SegmentEvent(summary=fseg_pb2.Summary(json=json.dumps(summary)))

    def FitConcepts(self, request, context):
        self._auth(context)
        with self.lock:
            self.fit_calls += 1
        names = sorted(self._slide_name(ref, context) for ref in request.slides)
        yield fseg_pb2.FitEvent(progress=fseg_pb2.Progress(stage="fit", done=1, total=1))
        data = fake_bank(request.k[0], request.extractor or "stain", ",".join(names))
        sha = hashlib.sha256(data).hexdigest()
        yield fseg_pb2.FitEvent(bank=fseg_pb2.FittedBank(sha256=sha, k=request.k, safetensors=data))

    def StatSlide(self, request, context):
        self._auth(context)
        if self._readable(request.path):
            return fseg_pb2.SlideStatus(readable=True, size_bytes=os.path.getsize(request.path))
        return fseg_pb2.SlideStatus(readable=False, reason="outside every slide root")

    def UploadSlide(self, request_iterator, context):
        self._auth(context)
        header = next(request_iterator).header
        if header.sha256 in self.uploads:
            return fseg_pb2.UploadResult(sha256=header.sha256, already_present=True)
        data = b"".join(chunk.data for chunk in request_iterator)
        if hashlib.sha256(data).hexdigest() != header.sha256:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "upload hash mismatch")
        self.uploads[header.sha256] = data
        return fseg_pb2.UploadResult(sha256=header.sha256, size_bytes=len(data))

    def GetServerInfo(self, request, context):
        self._auth(context)
        extractor = fseg_pb2.ExtractorInfo(name="stain", feature_dim=4, stride=8, mpp=2.0)
        extractor.is_default = True
        return fseg_pb2.ServerInfo(version="fake", protocol="fseg.v1", extractors=[extractor])


def start(servicer: FakeSegmentation, port: int = 0) -> tuple[grpc.Server, str]:
    """Serve ``servicer`` on 127.0.0.1; returns the server and its address."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    fseg_pb2_grpc.add_SegmentationServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server, f"127.0.0.1:{port}"


def serve_main(argv: list[str]) -> None:
    """``python test_client_fake_server.py serve --port-file F [--delay S]`` for subprocesses."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--token")
    args = parser.parse_args(argv)
    server, address = start(FakeSegmentation(token=args.token, delay_s=args.delay))
    tmp = Path(args.port_file + ".tmp")
    tmp.write_text(address.rsplit(":", 1)[1])
    tmp.replace(args.port_file)
    server.wait_for_termination()


def test_fake_server_speaks_the_protocol() -> None:
    servicer = FakeSegmentation()
    server, address = start(servicer)
    try:
        with grpc.insecure_channel(address) as channel:
            stub = fseg_pb2_grpc.SegmentationStub(channel)
            request = fseg_pb2.SegmentRequest(
                slide=fseg_pb2.SlideRef(path=__file__, name="x.svs"), bank="demo", k=8
            )
            kinds = [event.WhichOneof("event") for event in stub.Segment(request)]
        assert kinds[0] == "accepted" and kinds[-1] == "summary" and "chunk" in kinds
    finally:
        server.stop(0)


if __name__ == "__main__" and sys.argv[1:2] == ["serve"]:
    serve_main(sys.argv[2:])
