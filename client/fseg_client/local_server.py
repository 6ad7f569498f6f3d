"""The embedded default: a local fseg server started for one ``fseg segment`` run.

The server runs as a subprocess (``python -m fseg_server serve``), never in this
process, so the client itself stays free of torch. It listens on a free
loopback port that it writes to a port file; the client waits for that file
and for the health service to say SERVING, then uses it like any other server.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc

from .connect import Connection, Credentials, connect_all
from .errors import EXIT_FAILED, ClientError

START_TIMEOUT_S = 120.0
STOP_GRACE_S = 15.0
_POLL_S = 0.02  # s; a port-file read: cheap, and start-up is on every run's clock


def server_installed() -> bool:
    """Whether the server package can be imported (without importing it)."""
    return importlib.util.find_spec("fseg_server") is not None


def server_command(
    port_file: Path,
    slide_roots: Sequence[Path],
    extractor: str = "",
    weights: Sequence[str] = (),
    concepts: str | None = None,
    device: str | None = None,
) -> list[str]:
    """The command line that starts the embedded server."""
    command = [sys.executable, "-m", "fseg_server", "serve", "--host", "127.0.0.1"]
    command += ["--port", "0", "--port-file", str(port_file)]
    for root in dict.fromkeys(str(r) for r in slide_roots):
        command += ["--slide-root", root]
    if extractor:
        command += ["--extractor", extractor]
    for weight in weights:
        command += ["--weights", weight]
    if concepts:
        command += ["--concepts", concepts]
    if device:
        command += ["--device", device]
    return command


def read_port(text: str) -> int | None:
    """The port in a port file: a bare number, ``host:port`` or JSON with ``port``."""
    text = text.strip()
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        payload = json.loads(text)
        if isinstance(payload, dict):
            return int(payload["port"])
    match = re.search(r"(\d+)\s*$", text)
    port = int(match.group(1)) if match else 0
    return port if 0 < port < 65536 else None


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the client dies (Linux only)."""
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class LocalServer:
    """Start, wait for, and stop the embedded server; a context manager."""

    def __init__(self, command_args: dict, creds: Credentials | None = None) -> None:
        if not server_installed():
            raise ClientError(
                "no --server was given and the fseg server is not installed here; pass "
                "--server HOST:PORT, or install the server extra (pip install 'fseg[server]')"
            )
        self._workdir = Path(tempfile.mkdtemp(prefix="fseg-local-"))
        self.port_file = self._workdir / "port"
        self._log_path = self._workdir / "server.log"
        self.command = server_command(self.port_file, **command_args)
        self.creds = creds or Credentials()
        self.address = ""
        self._process: subprocess.Popen | None = None

    def __enter__(self) -> LocalServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self, timeout_s: float = START_TIMEOUT_S) -> str:
        """Start the server; returns its address once it answers SERVING."""
        with open(self._log_path, "wb") as log:
            self._process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        try:
            return self._wait_until_serving(timeout_s)
        except BaseException:  # Ctrl-C or a failed start: never leave the server behind
            self.stop()
            raise

    def _wait_until_serving(self, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            problem = self.death_reason()
            if problem:
                raise ClientError(problem, exit_code=EXIT_FAILED)
            if self._serving():
                return self.address
            time.sleep(_POLL_S)
        raise ClientError(
            f"the local fseg server did not start within {timeout_s:.0f} s "
            f"(last output: {self.last_output() or 'none'})",
            exit_code=EXIT_FAILED,
        )

    def _serving(self) -> bool:
        try:
            port = read_port(self.port_file.read_text(encoding="utf-8"))
        except OSError:
            return False
        if port is None:
            return False  # being written
        self.address = f"127.0.0.1:{port}"
        conn = Connection(self.address, self.creds)
        try:
            return conn.check_health(timeout_s=2.0) == "SERVING"
        except grpc.RpcError:
            return False
        finally:
            conn.close()

    def death_reason(self) -> str | None:
        """None while the server runs; else one sentence with its last output line."""
        if self._process is None or self._process.poll() is None:
            return None
        return (
            f"the local fseg server stopped (exit status {self._process.returncode}): "
            f"{self.last_output() or 'it printed nothing'}"
        )

    def last_output(self) -> str:
        """The server's last non-empty output line."""
        try:
            lines = self._log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return ""
        lines = [line.strip() for line in lines if line.strip()]
        return lines[-1] if lines else ""

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM (the server drains), then SIGKILL after ``grace_s`` seconds."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(grace_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for path in (self.port_file, self._log_path):
            with contextlib.suppress(OSError):
                path.unlink()
        with contextlib.suppress(OSError):
            os.rmdir(self._workdir)


def connect_or_start(
    stack: contextlib.ExitStack,
    addresses: Sequence[str],
    command_args: Callable[[], dict],
    creds: Credentials | None,
    note: Callable[[str], None],
) -> tuple[list[Connection], LocalServer | None]:
    """Connections to ``addresses``, or, when none is given, to an embedded server
    started with ``command_args()`` (:func:`server_command`'s keywords); both are
    closed with ``stack``. ``note`` tells the user that a server is being started."""
    local = None
    if not addresses:
        local = LocalServer(command_args(), creds)
        note("fseg: starting a local fseg server (no --server given)")
        stack.enter_context(local)
        addresses = [local.address]
    conns = connect_all(addresses, creds)
    for conn in conns:
        stack.callback(conn.close)
    return conns, local
