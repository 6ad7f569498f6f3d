"""Prometheus metrics of one server, served over HTTP when ``--metrics-port`` is given.

The rest of the server talks to a :class:`Metrics` (or, without the flag, to
:data:`NO_METRICS`, whose methods do nothing) through four calls: the gRPC
interceptors, a wrapper that counts tiles off the progress callback, the end
of a job with its summary, and close. Gauges (jobs, device) are read from the
admission and the device worker when Prometheus scrapes, so nothing is kept
up to date between scrapes. Each server has its own registry, so several run
in one process (tests) without clashing.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import grpc

from ..pipeline.progress import Progress
from .handlers import behaviour_of, same_shape

if TYPE_CHECKING:
    from ..pipeline.device_worker import DeviceWorker
    from .admission import Admission

#: A slide's stages as its summary's ``timings_s`` names them -> the metric's label.
#: ``read`` is summed over the reader threads, so it can exceed the slide's seconds.
STAGES = {
    "plan": "plan",
    "fit": "fit",
    "read_threads": "read",
    "extract": "extract",
    "factorize": "factorize",
    "vectorize": "vectorize",
    "render": "render",
}
OUTCOMES = ("done", "failed", "cancelled")
SLIDE_BUCKETS_S = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
STAGE_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
BUSY_WINDOW_S = 60.0  # the device busy fraction is over about this many seconds
#: Methods whose request stream is a file being uploaded (its bytes are counted).
UPLOAD_PREFIX = "Upload"


class NoMetrics:
    """The server without ``--metrics-port``: every call is free."""

    port = 0

    def interceptors(self) -> list[grpc.ServerInterceptor]:
        return []

    def count_tiles(self, progress: Progress) -> Progress:
        return progress

    def job_ended(self, outcome: str, summary: dict | None) -> None:
        pass

    def close(self) -> None:
        pass


NO_METRICS = NoMetrics()


class Metrics(NoMetrics):
    """The server's metrics in a registry of their own, served on ``host:port``."""

    def __init__(
        self,
        admission: Admission,
        worker: DeviceWorker,
        build: dict[str, str],
        feature_cache: bool,
    ) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

        self.registry = CollectorRegistry(auto_describe=True)
        self._feature_cache = feature_cache
        r = self.registry
        self.requests = Counter(
            "fseg_grpc_requests", "gRPC calls finished, by method and status code",
            ["service", "method", "code"], registry=r,
        )  # fmt: skip
        running = Gauge("fseg_jobs_running", "jobs running now", registry=r)
        queued = Gauge("fseg_jobs_queued", "admitted jobs waiting for a slot", registry=r)
        running.set_function(lambda: admission.counts[0])
        queued.set_function(lambda: admission.counts[1])
        Gauge("fseg_jobs_running_limit", "--max-running-jobs", registry=r).set(
            admission.max_running
        )
        self.slides = Counter(
            "fseg_slides", "slides segmented, by outcome", ["outcome"], registry=r
        )
        for outcome in OUTCOMES:  # present at 0, so increase() sees the first one
            self.slides.labels(outcome)
        self.tiles = Counter("fseg_tiles_processed", "tiles through the device", registry=r)
        self.slide_seconds = Histogram(
            "fseg_slide_seconds", "wall seconds per segmented slide",
            buckets=SLIDE_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.stage_seconds = Histogram(
            "fseg_stage_seconds", "seconds per slide in each stage (read: summed over threads)",
            ["stage"], buckets=STAGE_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.upload_bytes = Counter(
            "fseg_upload_bytes", "bytes of upload messages received", registry=r
        )
        self.upload_rejections = Counter(
            "fseg_upload_rejections", "uploads that ended in an error, by status code",
            ["code"], registry=r,
        )  # fmt: skip
        self.cache_hits = Counter(
            "fseg_feature_cache_hits", "tiles whose features came from the cache", registry=r
        )
        self.cache_misses = Counter(
            "fseg_feature_cache_misses", "tiles the cache did not hold", registry=r
        )
        Info("fseg_build", "version, default extractor and device", registry=r).info(build)
        r.register(_DeviceCollector(worker))
        self._http: object | None = None
        self.port = 0

    def serve(self, host: str, port: int) -> int:
        """Serve the text format on ``host:port`` (0: a free port); returns the port.

        Raises:
            OSError: the address cannot be bound.
        """
        from prometheus_client import start_http_server

        self._http, _ = start_http_server(port, host, registry=self.registry)
        self.port = self._http.server_port
        return self.port

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    def interceptors(self) -> list[grpc.ServerInterceptor]:
        return [_CallCounter(self)]

    def count_tiles(self, progress: Progress) -> Progress:
        """``progress``, counting the segment stage's tiles as they are done."""
        counted = [0]

        def counting(stage: str, done: int, total: int) -> None:
            if stage == "segment" and done > counted[0]:
                self.tiles.inc(done - counted[0])
                counted[0] = done
            progress(stage, done, total)

        return counting

    def job_ended(self, outcome: str, summary: dict | None) -> None:
        """A segment job ended (one of OUTCOMES); a done one brings its summary."""
        self.slides.labels(outcome).inc()
        if summary is None:
            return
        timings = summary.get("timings_s", {})
        if "total" in timings:
            self.slide_seconds.observe(timings["total"])
        for key, stage in STAGES.items():
            if key in timings:
                self.stage_seconds.labels(stage).observe(timings[key])
        if self._feature_cache:
            tiles = summary.get("tiles", {})
            hits = tiles.get("from_feature_cache", 0)
            self.cache_hits.inc(hits)
            self.cache_misses.inc(max(0, tiles.get("processed", 0) - hits))


class _DeviceCollector:
    """The device thread's busy seconds, and their fraction of the last minute or so."""

    def __init__(self, worker: DeviceWorker) -> None:
        self._worker = worker
        self._samples: deque[tuple[float, float]] = deque([(time.monotonic(), worker.busy_s)])
        self._lock = threading.Lock()

    def describe(self) -> list:
        return []

    def collect(self) -> Iterator[object]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        now, busy = time.monotonic(), self._worker.busy_s
        yield CounterMetricFamily(
            "fseg_device_busy_seconds", "seconds the device spent on batches", value=busy
        )
        yield GaugeMetricFamily(
            "fseg_device_busy_ratio",
            f"fraction of the last {BUSY_WINDOW_S:.0f} s (since start, before) the device was busy",
            value=self._ratio(now, busy),
        )

    def _ratio(self, now: float, busy: float) -> float:
        with self._lock:
            self._samples.append((now, busy))
            # Keep one sample at least BUSY_WINDOW_S old, so the window is full once
            # the server has run that long, whatever the scrape interval.
            while len(self._samples) > 2 and now - self._samples[1][0] >= BUSY_WINDOW_S:
                self._samples.popleft()
            then, busy_then = self._samples[0]
        span = now - then
        return min(1.0, max(0.0, (busy - busy_then) / span)) if span > 0 else 0.0


class _CallCounter(grpc.ServerInterceptor):
    """Counts every finished call by method and status code; counts upload bytes."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None:  # an unknown method: not counted, its names are unbounded
            return None
        service, _, method = details.method.lstrip("/").rpartition("/")
        upload = method.startswith(UPLOAD_PREFIX) and handler.request_streaming

        def finished(context: grpc.ServicerContext, code: grpc.StatusCode | None) -> None:
            code = code or context.code() or grpc.StatusCode.OK
            self._metrics.requests.labels(service, method, code.name).inc()
            if upload and code is not grpc.StatusCode.OK:
                self._metrics.upload_rejections.labels(code.name).inc()

        return _wrapped(handler, finished, self._counted if upload else None)

    def _counted(self, messages: Iterator[object]) -> Iterator[object]:
        for message in messages:
            self._metrics.upload_bytes.inc(message.ByteSize())
            yield message


def _wrapped(
    handler: grpc.RpcMethodHandler,
    finished: Callable[[grpc.ServicerContext, grpc.StatusCode | None], None],
    requests: Callable[[Iterator[object]], Iterator[object]] | None,
) -> grpc.RpcMethodHandler:
    """``handler`` with ``finished(context, code)`` called once its call ends."""
    behaviour = behaviour_of(handler)
    requests = requests or (lambda r: r)

    def unary(request: object, context: grpc.ServicerContext) -> object:
        try:
            response = behaviour(requests(request), context)
        except BaseException:
            finished(context, _failure(context))
            raise
        finished(context, None)
        return response

    def streaming(request: object, context: grpc.ServicerContext) -> Iterator[object]:
        try:
            yield from behaviour(requests(request), context)
        except BaseException:  # GeneratorExit too: gRPC closes the stream of a gone caller
            finished(context, _failure(context))
            raise
        finished(context, None)

    return same_shape(handler, streaming if handler.response_streaming else unary)


def _failure(context: grpc.ServicerContext) -> grpc.StatusCode:
    """The status of a call that raised: the one it aborted with, else what gRPC sends."""
    code = context.code()
    if code is not None:
        return code
    if not context.is_active():
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN
