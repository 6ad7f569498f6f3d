"""Support for the client's real-server tests and the end-to-end tests (holds no tests).

Servers are real ``fseg-server serve`` subprocesses on loopback, started with
:func:`servers.start_server` or, for TLS, with :func:`start_tls_server` here;
clients are the real ``fseg`` command, in this process or as a subprocess.

Every test server computes on one CPU thread (``OMP_NUM_THREADS=1``): several
servers share this 2-core machine, and with OpenMP's default spinning workers
the project-mode factorization of a small image takes anywhere from 0.1 s to
20 s, which would make these tests slow at random (reported as a server issue).
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from conftest import shared
from fseg_client.connect import Connection, Credentials
from servers import ServerProcess, start_server

SERVER_ENV = {"OMP_NUM_THREADS": "1"}
OUTPUT_SUFFIXES = (".geojson", ".labels.png", ".overlay.png", ".json", ".safetensors")
# Small real H&E patches (WSSS4LUAD), 206 to 280 px a side: well under a second each.
SMALL_IMAGES = ("00", "01", "10", "21", "25", "27")
_DONE = re.compile(r" INFO (\S+) done: (.+) \([\d.]+ s\)$", re.MULTILINE)


def need_server_package() -> None:
    """Skip (saying why) where only the light client is installed."""
    if importlib.util.find_spec("fseg_server") is None:
        pytest.skip("the server package (fseg[server]) is not installed here")


def real_server(
    workdir: Path,
    *args: str,
    token: str | None = None,
    ready: Callable[[ServerProcess], bool] = ServerProcess.serving,
) -> ServerProcess:
    """A real server (see the module docstring) that logs each finished job."""
    need_server_package()
    return start_server(
        workdir, *args, "--log-level", "INFO", token=token, env=SERVER_ENV, ready=ready
    )


def dead_address() -> str:
    """A loopback address where nothing listens (a port just released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def finished_jobs(server: ServerProcess) -> list[str]:
    """File names of the slides the server finished segmenting, in order (from its log;
    fit and atlas jobs end with a line of their own, not counted here)."""
    return [name for job, name in _DONE.findall(server.log_text()) if job.startswith("segment-")]


def client_env(tmp_dir: Path | None = None, **extra: str) -> dict[str, str]:
    """Environment of a client subprocess: no token from the caller's environment."""
    env = {k: v for k, v in os.environ.items() if k != "FSEG_TOKEN"}
    env.update(SERVER_ENV, PYTHONUNBUFFERED="1", **extra)
    if tmp_dir is not None:
        tmp_dir.mkdir(parents=True, exist_ok=True)
        env["TMPDIR"] = str(tmp_dir)
    return env


def spawn_client(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``fseg segment ARGS`` as a subprocess (stderr piped, as text).

    Ctrl-C is given back its default action first. A suite started in the
    background by a non-interactive shell inherits SIGINT ignored, and Python
    then installs no KeyboardInterrupt handler, as a background job should;
    the Ctrl-C tests need the client a user would run in a terminal.
    """
    command = [sys.executable, "-m", "fseg_client.cli", "segment", *args]
    return subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env or client_env(),
        preexec_fn=_ctrl_c_by_default,
    )


def _ctrl_c_by_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def copy_images(folder: Path, names: tuple[str, ...] = SMALL_IMAGES[:4]) -> list[Path]:
    """Copies of small real H&E images (``NN.png``) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    return [
        Path(shutil.copy(shared(f"wsss4luad-val/images/{name}.png"), folder / f"{name}.png"))
        for name in names
    ]


def copy_cmu(folder: Path, count: int) -> list[Path]:
    """``count`` copies of the real CMU-1-Small-Region.svs, named cmu-1.svs, cmu-2.svs ..."""
    folder.mkdir(parents=True, exist_ok=True)
    source = shared("slides/CMU-1-Small-Region.svs")
    return [Path(shutil.copy(source, folder / f"cmu-{i}.svs")) for i in range(1, count + 1)]


def csv_rows(out: Path) -> list[dict[str, str]]:
    with open(out / "batch-summary.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def output_digests(out: Path, suffixes: tuple[str, ...] = OUTPUT_SUFFIXES) -> dict[str, str]:
    """SHA-256 of every result file (and the bank) in ``out``, by name."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.iterdir())
        if p.name.endswith(suffixes) and not p.name.startswith(".")
    }


def temp_files(folder: Path) -> list[str]:
    """Temporary files the client (``.NAME.PID.tmp``) or anyone else left in ``folder``."""
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith((".tmp", ".part")))


def wait_until(condition, what: str, process: subprocess.Popen | None = None, limit: float = 300):
    """Poll ``condition`` (a test deadline, not a timing assertion); fail if ``process`` exits."""
    deadline = time.monotonic() + limit
    while not (result := condition()):
        if process is not None and process.poll() is not None:
            pytest.fail(f"the client exited ({process.returncode}) before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"waited {limit:.0f} s for {what}")
        time.sleep(0.05)
    return result


# -- TLS ---------------------------------------------------------------------------------


def make_certificates(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for localhost and 127.0.0.1, and a client certificate.

    Made with the ``openssl`` command line (the ``cryptography`` package is not
    a dependency of fseg); the test is skipped where there is no openssl.
    """
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    folder.mkdir(parents=True, exist_ok=True)
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    run("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=fseg test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    for name, extensions in (
        ("server", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ):
        (folder / f"{name}.ext").write_text(extensions)
        run("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        sign = ["-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2"]
        run("x509", "-req", "-in", f"{name}.csr", *sign, "-out", f"{name}.pem",
            "-extfile", f"{name}.ext")  # fmt: skip
    names = ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")
    return {name.replace(".", "_"): folder / name for name in names}


def start_tls_server(
    workdir: Path, certs: dict[str, Path], *args: str, token: str, mutual: bool = False
) -> ServerProcess:
    """A real server over TLS with a bearer token; ``mutual`` asks clients for certificates.

    Started like every test server, but checked for SERVING over TLS.
    """
    tls = ["--tls-cert", str(certs["server_pem"]), "--tls-key", str(certs["server_key"])]
    if mutual:
        tls += ["--tls-client-ca", str(certs["ca_pem"])]
    creds = Credentials(
        token=token,
        ca=certs["ca_pem"].read_bytes(),
        cert=certs["client_pem"].read_bytes() if mutual else None,
        key=certs["client_key"].read_bytes() if mutual else None,
    )
    return real_server(
        workdir, *tls, *args, token=token, ready=lambda server: _tls_serving(server, creds)
    )


def _tls_serving(server: ServerProcess, creds: Credentials) -> bool:
    conn = Connection(server.address, creds)
    try:
        return conn.check_health(timeout_s=2) == "SERVING"
    except grpc.RpcError:  # not up yet
        return False
    finally:
        conn.close()
