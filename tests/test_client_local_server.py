"""The embedded server: its command line, start-up, death and shutdown.

A stand-in server script plays the part of ``python -m fseg_server serve``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from fseg_client import local_server
from fseg_client.cli import main
from fseg_client.errors import ClientError
from fseg_client.local_server import LocalServer, read_port, server_command

FAKE = Path(__file__).with_name("test_client_fake_server.py")


def test_server_command_has_exactly_the_agreed_flags(tmp_path: Path) -> None:
    command = server_command(
        tmp_path / "port",
        [Path("/a"), Path("/b"), Path("/a")],
        extractor="uni",
        weights=["/w/uni.safetensors"],
        concepts="/c/bank.safetensors",
        device="cuda",
    )
    assert command[:4] == [sys.executable, "-m", "fseg_server", "serve"]
    assert command[4:] == [
        "--host", "127.0.0.1", "--port", "0", "--port-file", str(tmp_path / "port"),
        "--slide-root", "/a", "--slide-root", "/b",
        "--extractor", "uni", "--weights", "/w/uni.safetensors",
        "--concepts", "/c/bank.safetensors", "--device", "cuda",
    ]  # fmt: skip
    bare = server_command(tmp_path / "port", [Path("/a")])
    assert "--extractor" not in bare and "--device" not in bare


@pytest.mark.parametrize(
    ("text", "port"),
    [("50051\n", 50051), ("127.0.0.1:4242", 4242), ('{"port": 7}', 7), ("", None), ("0", None)],
)
def test_port_file_formats(text: str, port: int | None) -> None:
    assert read_port(text) == port


def fake_command(port_file: Path, *args, **kwargs) -> list[str]:
    return [sys.executable, str(FAKE), "serve", "--port-file", str(port_file)]


@pytest.fixture(autouse=True)
def server_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand-in servers need no fseg_server; pretend it is installed (client-only venvs)."""
    monkeypatch.setattr(local_server, "server_installed", lambda: True)


def test_starts_waits_for_serving_and_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_server, "server_command", fake_command)
    server = LocalServer({"slide_roots": []})
    with server:
        assert server.address.startswith("127.0.0.1:")
        assert server.death_reason() is None
        process = server._process
    assert process is not None and process.poll() is not None
    assert not server.port_file.parent.exists()


def test_a_server_that_dies_at_start_is_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    def dying(port_file: Path, *args, **kwargs) -> list[str]:
        script = "import sys; print('loading'); print('CUDA is not available', file=sys.stderr)"
        return [sys.executable, "-c", script + "; sys.exit(3)"]

    monkeypatch.setattr(local_server, "server_command", dying)
    with pytest.raises(ClientError, match=r"stopped \(exit status 3\): CUDA is not available"):
        LocalServer({"slide_roots": []}).start()


def test_client_only_install_is_told_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_server, "server_installed", lambda: False)
    with pytest.raises(ClientError, match=r"pass --server HOST:PORT, or install the server extra"):
        LocalServer({"slide_roots": []})


def test_segment_without_server_uses_the_embedded_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(local_server, "server_command", fake_command)
    slide = tmp_path / "one.png"
    slide.write_bytes(b"not really a png")
    out = tmp_path / "out"
    assert main(["segment", str(slide), "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "one.json").read_text())
    assert summary["client"]["server"].startswith("127.0.0.1:")
    assert (out / "one.geojson").is_file() and (out / "fseg-bank.safetensors").is_file()

    def broken(*args, **kwargs) -> list[str]:
        raise AssertionError("a finished batch must not start a server")

    monkeypatch.setattr(local_server, "server_command", broken)
    assert main(["segment", str(slide), "--out", str(out), "--quiet"]) == 0
