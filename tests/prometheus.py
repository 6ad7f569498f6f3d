"""A real Prometheus (Debian's ``prometheus``) on loopback, scraping fseg servers.

Started as a subprocess with its own configuration and storage in a temporary
folder, a 1 s scrape interval, and its HTTP API on a free loopback port; used
by the metrics tests and by ``tools/metrics_picture.py``. Nothing is mocked.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT_S = 60
SCRAPE_INTERVAL = "1s"
API_TIMEOUT_S = 10


def prometheus_binary() -> str | None:
    """The ``prometheus`` executable (tools/system-deps.sh installs Debian's), if any."""
    return shutil.which("prometheus")


def free_port() -> int:
    """A loopback port nothing listens on now (Prometheus takes no port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Prometheus:
    process: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str, **params: str) -> object:
        """The ``data`` of a Prometheus HTTP API answer (``/api/v1/...``)."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=API_TIMEOUT_S) as r:
            answer = json.load(r)
        if answer.get("status") != "success":
            raise RuntimeError(f"Prometheus refused {path} {params}: {answer}")
        return answer["data"]

    def value(self, expression: str) -> float | None:
        """The single value of an instant query now, or None when it selects nothing."""
        result = self.api("query", query=expression)["result"]
        if not result:
            return None
        if len(result) > 1:
            raise AssertionError(f"{expression} selects {len(result)} series: {result}")
        return float(result[0]["value"][1])

    def targets(self) -> list[dict]:
        return self.api("targets")["activeTargets"]

    def scraped_since(self, moment: float) -> bool:
        """Whether every target has been scraped, successfully, after ``moment`` (epoch s)."""
        targets = self.targets()
        return bool(targets) and all(
            t["health"] == "up" and _epoch(t["lastScrape"]) > moment for t in targets
        )

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Prometheus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_prometheus(workdir: Path, targets: list[str]) -> Prometheus:
    """Prometheus scraping ``targets`` (``host:port`` of metrics endpoints) every second."""
    binary = prometheus_binary()
    if binary is None:
        raise RuntimeError("prometheus is not installed (run tools/system-deps.sh)")
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    # JSON is YAML: no YAML writer needed.
    config.write_text(
        json.dumps(
            {
                "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": "1s"},
                "scrape_configs": [{"job_name": "fseg", "static_configs": [{"targets": targets}]}],
            }
        )
    )
    port = free_port()
    log = workdir / "prometheus.log"
    command = [
        binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
    ]  # fmt: skip
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    prometheus = Prometheus(process, port, log)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not prometheus.ready():
        if process.poll() is not None or time.monotonic() > deadline:
            prometheus.stop()
            raise RuntimeError(f"Prometheus did not start: {log.read_text(errors='replace')}")
        time.sleep(0.2)
    return prometheus


def _epoch(rfc3339: str) -> float:
    """Prometheus' RFC 3339 times (nanosecond fractions, 'Z') as epoch seconds."""
    from datetime import datetime

    stamp, _, fraction = rfc3339.rstrip("Z").partition(".")
    offset = ""
    for sign in ("+", "-"):
        if sign in fraction:
            fraction, _, rest = fraction.partition(sign)
            offset = sign + rest
    base = datetime.fromisoformat(stamp + (offset or "+00:00")).timestamp()
    return base + float(f"0.{fraction or 0}")
