"""Real fseg servers on loopback for tests: started as subprocesses, stopped after.

Tests talk to them with the generated stubs (or the real client), exactly as
a remote user would; nothing here is mocked.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fseg_proto import fseg_pb2, fseg_pb2_grpc

START_TIMEOUT_S = 180
CLI_TIMEOUT_S = 300  # a hang guard for one-shot commands, not a speed limit


def run_server_cli(*args: str) -> subprocess.CompletedProcess:
    """``fseg-server ARGS`` run to its end, as a user would type it; output as text."""
    command = [sys.executable, "-m", "fseg_server", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=CLI_TIMEOUT_S)


@dataclass
class ServerProcess:
    """A started ``fseg-server serve``; ``port`` is 0 until its port file appears."""

    process: subprocess.Popen
    port: int
    log: Path
    token: str | None = None
    port_file: Path | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def metadata(self, token: str | None = ...) -> tuple:
        token = self.token if token is ... else token
        return (("authorization", f"Bearer {token}"),) if token else ()

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.address)

    def stub(self) -> fseg_pb2_grpc.SegmentationStub:
        return fseg_pb2_grpc.SegmentationStub(self.channel())

    def serving(self) -> bool:
        with self.channel() as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=5
                )
            except grpc.RpcError:
                return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    def info(self) -> fseg_pb2.ServerInfo:
        """The server's GetServerInfo answer (its jobs, extractors and banks)."""
        with self.channel() as channel:
            return fseg_pb2_grpc.SegmentationStub(channel).GetServerInfo(
                fseg_pb2.ServerInfoRequest(), timeout=10, metadata=self.metadata()
            )

    def idle(self) -> bool:
        """Whether no job is running or waiting on the server."""
        info = self.info()
        return info.running_jobs == 0 and info.queued_jobs == 0

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def spawn_server(
    workdir: Path, *args: str, token: str | None = None, env: dict[str, str] | None = None
) -> ServerProcess:
    """Start ``fseg-server serve --port 0 ARGS`` without waiting for it (see wait_serving)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port_file = workdir / f"port-{time.monotonic_ns()}"
    log = workdir / f"{port_file.name}.log"
    command = [sys.executable, "-m", "fseg_server", "serve", "--port", "0",
               "--port-file", str(port_file), "--log-level", "WARNING", *args]  # fmt: skip
    if token:
        token_file = workdir / "token"
        token_file.write_text(token)
        command += ["--token-file", str(token_file)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(log, "wb") as out:  # the child keeps its own descriptor
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    return ServerProcess(process, 0, log, token, port_file)


def wait_serving(
    server: ServerProcess,
    deadline: float,
    ready: Callable[[ServerProcess], bool] = ServerProcess.serving,
) -> ServerProcess:
    """Wait (until ``time.monotonic()`` passes ``deadline``) for its port and ``ready``.

    A server that is not returned (timeout, Ctrl-C, an error in ``ready``) is killed.
    """
    try:
        while True:
            if server.process.poll() is not None:
                code = server.process.returncode
                raise RuntimeError(f"server exited with {code}: {server.log_text()}")
            if not server.port and server.port_file and server.port_file.exists():
                server.port = int(server.port_file.read_text())
            if server.port and ready(server):
                return server
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not start serving: {server.log_text()}")
            time.sleep(0.1)
    except BaseException:
        server.stop(signal.SIGKILL)
        raise


def start_server(
    workdir: Path,
    *args: str,
    token: str | None = None,
    env: dict[str, str] | None = None,
    timeout_s: float = START_TIMEOUT_S,
    ready: Callable[[ServerProcess], bool] = ServerProcess.serving,
) -> ServerProcess:
    """Start ``fseg-server serve --port 0 ARGS`` and wait until it is ``ready`` (SERVING)."""
    server = spawn_server(workdir, *args, token=token, env=env)
    return wait_serving(server, time.monotonic() + timeout_s, ready)
