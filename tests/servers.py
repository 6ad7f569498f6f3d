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
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fseg_proto import fseg_pb2_grpc

START_TIMEOUT_S = 180


@dataclass
class ServerProcess:
    process: subprocess.Popen
    port: int
    log: Path
    token: str | None = None

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
        try:
            reply = health_pb2_grpc.HealthStub(self.channel()).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=5
            )
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

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


def start_server(workdir: Path, *args: str, token: str | None = None) -> ServerProcess:
    """Start ``fseg-server serve --port 0 ARGS`` and wait until it is SERVING."""
    workdir.mkdir(parents=True, exist_ok=True)
    port_file = workdir / f"port-{time.monotonic_ns()}"
    log = workdir / f"{port_file.name}.log"
    command = [sys.executable, "-m", "fseg_server", "serve", "--port", "0",
               "--port-file", str(port_file), "--log-level", "WARNING", *args]  # fmt: skip
    if token:
        token_file = workdir / "token"
        token_file.write_text(token)
        command += ["--token-file", str(token_file)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as out:  # the child keeps its own descriptor
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not port_file.exists():
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {log.read_text()}")
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"server did not start: {log.read_text()}")
        time.sleep(0.1)
    server = ServerProcess(process, int(port_file.read_text()), log, token)
    while not server.serving():
        if time.monotonic() > deadline:
            server.stop(signal.SIGKILL)
            raise RuntimeError("server never reported SERVING")
        time.sleep(0.1)
    return server
