"""Assembling and running the gRPC server: service, health, reflection, TLS, token, drain."""

from __future__ import annotations

import logging
import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from fseg_proto import fseg_pb2, fseg_pb2_grpc, tls_files

from .. import __version__
from ..device import describe_device, resolve_device
from ..errors import InvalidInput
from ..limits import DEFAULT_LIMITS, CostLimits
from ..pipeline.device_worker import DeviceWorker
from ..pipeline.feature_cache import FeatureCache
from .admission import Admission
from .auth import TokenInterceptor
from .info import Limits
from .malformed import add_servicer
from .metrics import NO_METRICS, Metrics, NoMetrics
from .resources import Resources
from .service import SegmentationService
from .slide_access import SlideAccess
from .uploads import UPLOADS_AT_ONCE, UploadStore

log = logging.getLogger("fseg.server")
SERVICE_NAME = fseg_pb2.DESCRIPTOR.services_by_name["Segmentation"].full_name
MAX_RECEIVE_BYTES = 32 << 20  # a request may carry a concept bank of up to 16 MiB
#: RPC threads beyond queued jobs and uploads: health checks, server info, refusals.
SPARE_RPC_THREADS = 8
SIGNAL_CHECK_S = 0.05  # how often the main thread looks for a SIGTERM or SIGINT


@dataclass
class ServeConfig:
    """Everything ``fseg-server serve`` is started with."""

    host: str = "127.0.0.1"
    port: int = 50051
    extractors: list[str] = field(default_factory=lambda: ["stain"])
    weights: dict[str, str] = field(default_factory=dict)
    banks: dict[str, Path] = field(default_factory=dict)
    device: str = "auto"
    slide_roots: list[Path] = field(default_factory=list)
    upload_dir: Path | None = None
    upload_max_bytes: int = 20 << 30
    upload_idle_s: float = 60.0
    feature_cache: Path | None = None
    feature_cache_bytes: int = 50 << 30
    max_queued_jobs: int = 16
    max_running_jobs: int = 2
    cost_limits: CostLimits = DEFAULT_LIMITS
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    token_file: Path | None = None
    chunk_bytes: int = 1 << 20
    grace_seconds: float = 30.0
    port_file: Path | None = None
    #: Prometheus metrics over HTTP on this port (0: a free one); None: no metrics.
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    metrics_port_file: Path | None = None


@dataclass
class RunningServer:
    server: grpc.Server
    health: health.HealthServicer
    worker: DeviceWorker
    port: int
    draining: threading.Event
    metrics: NoMetrics = NO_METRICS

    def drain(self, grace: float) -> None:
        """Refuse new work, give running jobs ``grace`` seconds, then stop."""
        if self.draining.is_set():
            return
        log.info("draining: new calls are refused, running jobs get %.0f s", grace)
        self.draining.set()
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        self.worker.close()
        self.metrics.close()


def start_server(config: ServeConfig) -> RunningServer:
    """Build everything, bind the port and start serving."""
    credentials = _server_credentials(config)
    device = resolve_device(config.device)
    resources = Resources.load(device, config.extractors, config.weights, config.banks)
    uploads = UploadStore(config.upload_dir, config.upload_max_bytes) if config.upload_dir else None
    access = SlideAccess(_existing_dirs(config.slide_roots), uploads)
    worker = DeviceWorker(device)
    cache = (
        FeatureCache(config.feature_cache, config.feature_cache_bytes)
        if config.feature_cache
        else None
    )
    draining = threading.Event()
    limits = Limits(
        max_queued_jobs=config.max_queued_jobs,
        max_running_jobs=config.max_running_jobs,
        upload_max_bytes=config.upload_max_bytes,
        upload_idle_s=config.upload_idle_s,
        max_message_bytes=MAX_RECEIVE_BYTES,
        chunk_bytes=config.chunk_bytes,
        cost=config.cost_limits,
    )
    admission = Admission(config.max_queued_jobs, config.max_running_jobs)
    metrics = _metrics(config, admission, worker, resources)
    service = SegmentationService(
        resources, access, uploads, worker, admission, limits, draining, cache, metrics
    )
    # The metrics' interceptor first: it sees the token's refusals too.
    interceptors = metrics.interceptors()
    if config.token_file:
        interceptors.append(TokenInterceptor(_read_token(config.token_file)))
    server = grpc.server(
        # Each streaming call holds a thread while it waits or runs.
        ThreadPoolExecutor(
            max_workers=config.max_queued_jobs + UPLOADS_AT_ONCE + SPARE_RPC_THREADS,
            thread_name_prefix="fseg-rpc",
        ),
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
            # gRPC shares ports by default: a second server on a busy port would
            # start and silently take half the connections.
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=config.max_queued_jobs + 64,
    )
    add_servicer(fseg_pb2_grpc.add_SegmentationServicer_to_server, service, server)
    health_servicer = health.HealthServicer()
    add_servicer(health_pb2_grpc.add_HealthServicer_to_server, health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = _bind(server, config, credentials)
    server.start()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    if config.port_file:
        _write_atomically(config.port_file, f"{port}\n")
    log.info(
        "serving %s on %s:%d (%s), extractors %s, banks %s",
        SERVICE_NAME, config.host, port, describe_device(device),
        ", ".join(resources.extractors), ", ".join(resources.banks) or "none",
    )  # fmt: skip
    return RunningServer(server, health_servicer, worker, port, draining, metrics)


def _metrics(
    config: ServeConfig, admission: Admission, worker: DeviceWorker, resources: Resources
) -> NoMetrics:
    """The server's metrics, already served, when ``--metrics-port`` asks for them."""
    if config.metrics_port is None:
        return NO_METRICS
    build = {
        "version": __version__,
        "extractor": resources.default_extractor,
        "extractors": ",".join(resources.extractors),
        "device": describe_device(resources.device),
    }
    metrics = Metrics(admission, worker, build, feature_cache=config.feature_cache is not None)
    address = f"{config.metrics_host}:{config.metrics_port}"
    try:
        port = metrics.serve(config.metrics_host, config.metrics_port)
    except OSError as exc:
        raise InvalidInput(f"cannot serve metrics on {address} ({exc.strerror or exc})") from None
    if config.metrics_port_file:
        _write_atomically(config.metrics_port_file, f"{port}\n")
    log.info("metrics (Prometheus text format) on http://%s:%d/metrics", config.metrics_host, port)
    return metrics


def serve_forever(config: ServeConfig) -> int:
    """Start, then serve until SIGTERM or SIGINT, draining gracefully."""
    running = start_server(config)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # Python runs handlers in the main thread only, and a signal the kernel hands
    # to a gRPC or worker thread does not wake a wait without a timeout: SIGTERM
    # would then be lost until the kill that follows it. Waking up now and then
    # lets the handler run.
    while not stop.wait(SIGNAL_CHECK_S):
        pass
    running.drain(config.grace_seconds)
    return 0


def _bind(server: grpc.Server, config: ServeConfig, credentials: object | None) -> int:
    address = f"{config.host}:{config.port}"
    try:
        if credentials is not None:
            port = server.add_secure_port(address, credentials)
        else:
            port = server.add_insecure_port(address)
    except RuntimeError:  # grpcio raises where it used to return 0
        port = 0
    if port == 0:
        raise InvalidInput(f"cannot listen on {address} (in use, or not a local address)")
    return port


def _server_credentials(config: ServeConfig) -> object | None:
    """TLS credentials from the certificate files, or None for a plaintext server.

    Read before anything is loaded, so a wrong combination or a missing file
    costs no model load.
    """
    if config.tls_client_ca and not (config.tls_cert and config.tls_key):
        raise InvalidInput("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")
    if not (config.tls_cert or config.tls_key):
        return None
    if not (config.tls_cert and config.tls_key):
        raise InvalidInput("TLS needs both --tls-cert and --tls-key")
    try:
        cert, key = tls_files.read_key_pair(
            config.tls_cert, config.tls_key, "--tls-cert", "--tls-key"
        )
        client_ca = (
            tls_files.read_certificates(config.tls_client_ca, "--tls-client-ca")
            if config.tls_client_ca
            else None
        )
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def _read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise InvalidInput(f"--token-file {path} cannot be read ({exc.strerror})") from None
    if not token:
        raise InvalidInput(f"--token-file {path} is empty")
    return token


def _existing_dirs(paths: list[Path]) -> list[Path]:
    for path in paths:
        if not Path(path).is_dir():
            raise InvalidInput(f"--slide-root {path} is not a directory")
    return paths


def _write_atomically(path: Path, text: str) -> None:
    tmp = Path(f"{path}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
