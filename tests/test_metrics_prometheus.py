"""A real Prometheus scrapes a real fseg server while it segments the shared slides.

The scenario runs once (module fixture) and the tests read what Prometheus
recorded through its HTTP API, never the server's endpoint directly:

1. the real client segments two shared slides (``stain`` extractor, k 4);
2. with ``--max-running-jobs 1 --max-queued-jobs 2``, a long job runs (CMU at
   0.125 µm/px, so it lasts many scrapes), a second one queues behind it, a
   third is refused (RESOURCE_EXHAUSTED); once Prometheus has seen the queue,
   the long job is cancelled and the queued one runs.

Amounts are compared with what the job summaries say; nothing is timed. The
Prometheus is Debian's (``tools/system-deps.sh`` installs it).
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import psutil
import pytest
from prometheus import Prometheus, prometheus_binary, start_prometheus
from test_deploy_metrics import adapter_rules, dashboard_queries
from test_e2e_support import client_env, csv_rows, real_server, wait_until

from conftest import SLIDES, shared
from fseg_proto import fseg_pb2
from servers import ServerProcess

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        prometheus_binary() is None, reason="prometheus is not installed (tools/system-deps.sh)"
    ),
]
BATCH = ("CMU-1-Small-Region.svs", "small.svs")
STAGES = ("plan", "read", "extract", "factorize", "vectorize", "render")


def metrics_server(workdir: Path, *args: str) -> tuple[ServerProcess, int]:
    """A real server with ``--metrics-port 0``; returns it and its metrics port."""
    port_file = workdir / "metrics-port"
    server = real_server(
        workdir, "--metrics-port", "0", "--metrics-port-file", str(port_file), *args
    )
    return server, int(port_file.read_text())


def settled(prometheus: Prometheus, what: str) -> None:
    """Wait for a scrape that began after now, so queries see everything done so far."""
    moment = time.time()
    wait_until(lambda: prometheus.scraped_since(moment), f"a scrape after {what}", limit=60)


def run_batch(server: ServerProcess, out: Path) -> None:
    command = [sys.executable, "-m", "fseg_client.cli", "segment", "--server", server.address,
               "--out", str(out), "--extractor", "stain", "--k", "4", "--progress", "none",
               *(str(shared(f"slides/{name}")) for name in BATCH)]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, env=client_env(), timeout=600)
    assert run.returncode == 0, run.stderr + server.log_text()[-2000:]


class Call:
    """A Segment call read to its end in a thread; ``events`` and ``error`` once ended."""

    def __init__(self, server: ServerProcess, slide: str, **fields: object) -> None:
        request = fseg_pb2.SegmentRequest(
            slide=fseg_pb2.SlideRef(path=slide), extractor="stain", k=4, **fields
        )
        self.call = server.stub().Segment(request, timeout=600)
        self.events: list[fseg_pb2.SegmentEvent] = []
        self.error: grpc.RpcError | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for event in self.call:
                self.events.append(event)
        except grpc.RpcError as exc:
            self.error = exc

    def summary(self) -> dict:
        self.thread.join(600)
        assert self.error is None, self.error
        return json.loads(self.events[-1].summary.json)


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("metrics")
    server, metrics_port = metrics_server(
        work, "--slide-root", str(SLIDES), "--extractor", "stain", "--upload-dir", str(work / "up"),
        "--max-running-jobs", "1", "--max-queued-jobs", "2",
    )  # fmt: skip
    with server, start_prometheus(work / "prometheus", [f"127.0.0.1:{metrics_port}"]) as prom:
        settled(prom, "the server started")
        facts: dict = {"prometheus": prom, "server": server, "metrics_port": metrics_port}
        out = work / "out"
        run_batch(server, out)
        settled(prom, "the batch")
        facts["batch"] = {
            "rows": csv_rows(out),
            "summaries": [json.loads((out / f"{Path(n).stem}.json").read_text()) for n in BATCH],
            "done": prom.value('fseg_slides_total{outcome="done"}'),
            "tiles": prom.value("fseg_tiles_processed_total"),
            "stage_counts": {
                s: prom.value(f'fseg_stage_seconds_count{{stage="{s}"}}') for s in STAGES
            },
            "slide_count": prom.value("fseg_slide_seconds_count"),
        }
        bank = (out / "fseg-bank.safetensors").read_bytes()  # the batch's, fitted by the client
        facts["overlap"] = overlap(server, prom, bank)
        facts["uploads"] = uploads(server)
        settled(prom, "the overlapping jobs")
        yield facts


def overlap(server: ServerProcess, prom: Prometheus, bank: bytes) -> dict:
    """One long job, one queued behind it, one refused; the long one cancelled once
    Prometheus has seen the queue."""
    long_job = Call(server, "CMU-1-Small-Region.svs", bank_safetensors=bank, target_mpp=0.125)
    wait_until(lambda: server.info().running_jobs == 1, "the long job to run")
    queued = Call(server, "CMU-1-Small-Region.svs", bank_safetensors=bank)
    wait_until(lambda: server.info().queued_jobs == 1, "the second job to queue")
    third = fseg_pb2.SegmentRequest(slide=fseg_pb2.SlideRef(path="small.svs"), extractor="stain")
    with pytest.raises(grpc.RpcError) as refused:
        next(server.stub().Segment(third, timeout=60))
    seen = wait_until(
        lambda: prom.value("max_over_time(fseg_jobs_queued[10m])"), "Prometheus to see the queue"
    )
    running_then = prom.value("max_over_time(fseg_jobs_running[10m])")
    long_job.call.cancel()
    queued_summary = queued.summary()
    wait_until(server.idle, "the server to finish")
    return {
        "queued_seen": seen,
        "running_seen": running_then,
        "refused_code": refused.value.code(),
        "queued_summary": queued_summary,
        "long_job_error": (long_job.thread.join(60), long_job.error)[1],
    }


def uploads(server: ServerProcess) -> dict:
    """small.svs uploaded twice: under a header that lies about its size, then whole."""
    data = shared("slides/small.svs").read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    sent, codes = 0, []
    for size in (1, len(data)):  # the lie first: a stored file would be skipped
        messages = [
            fseg_pb2.UploadChunk(
                header=fseg_pb2.UploadHeader(name="small.svs", sha256=digest, size_bytes=size)
            ),
            fseg_pb2.UploadChunk(data=data),
        ]
        sent += sum(m.ByteSize() for m in messages)
        try:
            server.stub().UploadSlide(iter(messages), timeout=60)
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as exc:
            codes.append(exc.code())
    return {"bytes": sent, "codes": codes}


def test_slides_done_and_tiles_processed_match_the_job_summaries(scraped: dict) -> None:
    batch = scraped["batch"]
    assert [row["status"] for row in batch["rows"]] == ["done"] * len(BATCH)
    assert batch["done"] == len(BATCH)
    assert batch["tiles"] == sum(s["tiles"]["processed"] for s in batch["summaries"])
    assert batch["tiles"] > 0


def test_each_stage_is_timed_once_per_slide(scraped: dict) -> None:
    batch = scraped["batch"]
    assert batch["slide_count"] == len(BATCH)
    assert batch["stage_counts"] == dict.fromkeys(STAGES, float(len(BATCH)))


def test_the_queue_gauge_rose_while_two_jobs_overlapped(scraped: dict) -> None:
    overlap = scraped["overlap"]
    assert overlap["queued_seen"] >= 1
    assert overlap["running_seen"] == 1  # the admission limit held
    assert overlap["queued_summary"]["slide"] == "CMU-1-Small-Region.svs"


def test_a_refused_request_shows_under_its_status(scraped: dict) -> None:
    prom = scraped["prometheus"]
    assert scraped["overlap"]["refused_code"] == grpc.StatusCode.RESOURCE_EXHAUSTED
    query = 'fseg_grpc_requests_total{method="Segment",code="RESOURCE_EXHAUSTED"}'
    assert prom.value(query) == 1
    ok = prom.value('fseg_grpc_requests_total{method="Segment",code="OK"}')
    assert ok == len(BATCH) + 1  # the batch and the job that waited in the queue
    upload = 'fseg_grpc_requests_total{method="UploadSlide",code="INVALID_ARGUMENT"}'
    assert prom.value(upload) == 1


def test_the_cancelled_job_counts_as_cancelled_not_failed(scraped: dict) -> None:
    prom = scraped["prometheus"]
    assert scraped["overlap"]["long_job_error"].code() == grpc.StatusCode.CANCELLED
    assert prom.value('fseg_slides_total{outcome="cancelled"}') == 1
    assert prom.value('fseg_slides_total{outcome="failed"}') == 0
    assert prom.value('fseg_slides_total{outcome="done"}') == len(BATCH) + 1


def test_prometheus_scraped_the_server_without_errors(scraped: dict) -> None:
    prom = scraped["prometheus"]
    (target,) = prom.targets()
    assert target["health"] == "up" and target["lastError"] == ""
    assert target["scrapeUrl"] == f"http://127.0.0.1:{scraped['metrics_port']}/metrics"
    assert prom.value('min_over_time(up{job="fseg"}[10m])') == 1  # every scrape succeeded


def test_build_info_names_version_extractor_and_device(scraped: dict) -> None:
    result = scraped["prometheus"].api("query", query="fseg_build_info")["result"]
    labels = result[0]["metric"]
    info = scraped["server"].info()
    assert labels["version"] == info.version
    assert labels["extractor"] == "stain" and labels["device"] == info.device


def test_the_metrics_port_listens_on_loopback_only_when_asked(tmp_path: Path) -> None:
    with_metrics, port = metrics_server(tmp_path / "on")
    without = real_server(tmp_path / "off")
    with with_metrics, without:
        assert listening(with_metrics) == {("127.0.0.1", with_metrics.port), ("127.0.0.1", port)}
        assert listening(without) == {("127.0.0.1", without.port)}


def listening(server: ServerProcess) -> set[tuple[str, int]]:
    """The (IPv4 address, port) pairs the server process listens on (an IPv6 socket bound
    to an IPv4-mapped address, as Python's HTTP server may make, counts as that address)."""
    connections = psutil.Process(server.process.pid).net_connections(kind="inet")
    return {
        (c.laddr.ip.removeprefix("::ffff:"), c.laddr.port)
        for c in connections
        if c.status == psutil.CONN_LISTEN
    }


def test_upload_bytes_and_a_refused_upload_are_counted(scraped: dict) -> None:
    prom, sent = scraped["prometheus"], scraped["uploads"]
    assert sent["codes"] == [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OK]
    assert prom.value('fseg_upload_rejections_total{code="INVALID_ARGUMENT"}') == 1
    assert prom.value("sum(fseg_upload_rejections_total)") == 1
    assert prom.value("fseg_upload_bytes_total") == sent["bytes"]


def local(query: str) -> str:
    """A cluster query (by namespace) as it reads against this one local server."""
    return query.replace('namespace="$namespace"', 'job="fseg"')


def test_the_dashboard_names_only_metrics_the_server_exports(scraped: dict) -> None:
    exported = set(scraped["prometheus"].api("label/__name__/values"))
    named = {n for q in dashboard_queries() for n in re.findall(r"\bfseg_\w+", q)}
    assert named and named <= exported, named - exported


def test_every_dashboard_query_runs_in_prometheus(scraped: dict) -> None:
    prom = scraped["prometheus"]
    for query in dashboard_queries():
        prom.api("query", query=local(query))  # raises on a query Prometheus refuses
    assert prom.value(local(dashboard_queries()[0].replace(" by (pod)", ""))) == 0  # idle now


def test_the_adapter_rule_gives_queued_plus_running_jobs(scraped: dict) -> None:
    (rule,) = adapter_rules()
    query = rule["metricsQuery"].replace("<<.LabelMatchers>>", 'job="fseg"')
    query = query.replace("<<.GroupBy>>", "instance")
    assert rule["seriesQuery"].split("{")[0] in scraped["prometheus"].api("label/__name__/values")
    assert scraped["prometheus"].value(query) == 0  # the server is idle: nothing waits
    window = query.replace("sum(", "max_over_time(sum(", 1).replace(
        "by (instance)", "by (instance)[10m:1s])"
    )
    assert scraped["prometheus"].value(window) >= 2  # one running and one queued, at once
