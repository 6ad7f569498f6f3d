"""The light client, installed alone in its own virtual environment, over TLS with a token.

A fresh venv gets ``pip install`` of this project without extras (no torch);
it segments the shared CMU-1 slide through a real server started from the
full install, over TLS with a bearer token, then with mutual TLS. The sources
are copied to a temporary folder first, because pip builds in the source tree
(build/, *.egg-info) and others work in this checkout.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_e2e_support import client_env, start_tls_server

from conftest import ROOT, shared

TOKEN = "e2e-token-7f3a"
SOURCES = ("pyproject.toml", "README.md", "client", "proto", "server")


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m venv`` plus ``pip install <this project>`` without extras; returns bin/."""
    base = tmp_path_factory.mktemp("client-only")
    source = base / "src"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
            shutil.copytree(ROOT / name, source / name, ignore=ignore)
        elif (ROOT / name).is_file():
            shutil.copy(ROOT / name, source / name)
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(source)]
    result = subprocess.run(pip, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return venv / "bin"


@pytest.fixture(scope="module")
def tls_server(certs, tmp_path_factory: pytest.TempPathFactory):
    with cmu_tls_server(tmp_path_factory.mktemp("tls-server"), certs) as server:
        yield server


def cmu_tls_server(workdir: Path, certs: dict[str, Path], mutual: bool = False):
    """A TLS server (token TOKEN) whose slide root holds the shared CMU-1 slide."""
    slides = str(shared("slides/CMU-1-Small-Region.svs").parent)
    return start_tls_server(workdir, certs, "--slide-root", slides, token=TOKEN, mutual=mutual)


def fseg(bin_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The client-only venv's ``fseg`` (no FSEG_TOKEN from the caller's environment)."""
    env = client_env(cwd / "tmp")
    env.pop("PYTHONPATH", None)
    command = [str(bin_dir / "fseg"), *args, "--progress", "none"]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def test_the_client_only_install_has_no_torch(client_venv: Path, tmp_path: Path) -> None:
    python = str(client_venv / "python")
    probe = "import importlib.util as u; print(u.find_spec('torch') is None)"
    assert subprocess.run([python, "-c", probe], capture_output=True, text=True).stdout == "True\n"
    light = subprocess.run([python, "-c", "import fseg_client.batch, grpc, tqdm"], cwd=tmp_path)
    assert light.returncode == 0


def segment_args(server, certs, out: Path) -> list[str]:
    cmu = shared("slides/CMU-1-Small-Region.svs")
    return ["segment", str(cmu), "--out", str(out), "--server", server.address,
            "--tls-ca", str(certs["ca_pem"])]  # fmt: skip


def check_outputs(out: Path) -> None:
    shapely = pytest.importorskip("shapely.geometry")
    collection = json.loads((out / "CMU-1-Small-Region.geojson").read_text())
    assert collection["type"] == "FeatureCollection" and collection["features"]
    assert all(shapely.shape(f["geometry"]).is_valid for f in collection["features"])
    for suffix in ("labels.png", "overlay.png", "json"):
        assert (out / f"CMU-1-Small-Region.{suffix}").stat().st_size > 0


@pytest.mark.slow
def test_segments_over_tls_with_the_token(client_venv, tls_server, certs, tmp_path) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    args = segment_args(tls_server, certs, tmp_path / "out")
    result = fseg(client_venv, *args, "--token-file", str(token), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    check_outputs(tmp_path / "out")


@pytest.mark.slow
def test_without_the_token_it_is_refused(client_venv, tls_server, certs, tmp_path) -> None:
    result = fseg(client_venv, *segment_args(tls_server, certs, tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("fseg: error: ") and result.stderr.count("\n") == 1
    assert "refused the credentials" in result.stderr and "--token-file" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "out").glob("CMU-1-Small-Region.*"))


@pytest.mark.slow
def test_mutual_tls(client_venv, certs, tmp_path) -> None:
    with cmu_tls_server(tmp_path / "server", certs, mutual=True) as server:
        token = tmp_path / "token"
        token.write_text(TOKEN)
        args = [*segment_args(server, certs, tmp_path / "out"), "--token-file", str(token)]
        mine = ["--tls-cert", str(certs["client_pem"]), "--tls-key", str(certs["client_key"])]
        result = fseg(client_venv, *args, *mine, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        check_outputs(tmp_path / "out")
        args[args.index(str(tmp_path / "out"))] = str(tmp_path / "refused")
        refused = fseg(client_venv, *args, "--retries", "1", cwd=tmp_path)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert refused.stderr.startswith("fseg: error: ") and "Traceback" not in refused.stderr
    assert "--tls-cert and --tls-key" in refused.stderr  # the handshake was refused: say why
