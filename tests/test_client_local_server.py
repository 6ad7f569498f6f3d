"""The embedded server: its command line, start-up, death and shutdown.

The real ``python -m fseg_server serve`` is started where the server package is
installed; a one-line script that dies plays a server that fails to start.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import pytest
from test_e2e_support import SERVER_ENV, copy_images, need_server_package

from conftest import shared
from fseg_client import local_server
from fseg_client.batch import local_server_args
from fseg_client.cli import build_parser, main
from fseg_client.errors import ClientError
from fseg_client.inputs import SlideInput
from fseg_client.local_server import LocalServer, read_port, server_command
from fseg_client.options import options_from_args


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


@pytest.fixture
def real_local_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The real server package, one compute thread, and a temporary folder of its own."""
    need_server_package()
    for name, value in SERVER_ENV.items():
        monkeypatch.setenv(name, value)
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.mark.slow
def test_starts_waits_for_serving_and_stops(real_local_server: Path) -> None:
    server = LocalServer({"slide_roots": []})
    with server:
        assert server.address.startswith("127.0.0.1:")
        assert server.death_reason() is None
        process = server._process
    assert process is not None and process.poll() is not None
    assert list(real_local_server.iterdir()) == []  # its port file and log are gone


def test_a_server_that_dies_at_start_is_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    def dying(port_file: Path, *args, **kwargs) -> list[str]:
        script = "import sys; print('loading'); print('CUDA is not available', file=sys.stderr)"
        return [sys.executable, "-c", script + "; sys.exit(3)"]

    monkeypatch.setattr(local_server, "server_installed", lambda: True)
    monkeypatch.setattr(local_server, "server_command", dying)
    with pytest.raises(ClientError, match=r"stopped \(exit status 3\): CUDA is not available"):
        LocalServer({"slide_roots": []}).start()


def test_client_only_install_is_told_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_server, "server_installed", lambda: False)
    with pytest.raises(ClientError, match=r"pass --server HOST:PORT, or install the server extra"):
        LocalServer({"slide_roots": []})


@pytest.mark.slow
def test_segment_without_server_uses_the_embedded_one(
    real_local_server: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (slide,) = copy_images(tmp_path / "slides", ("01",))
    out = tmp_path / "out"
    assert main(["segment", str(slide), "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "01.json").read_text())
    assert summary["client"]["server"].startswith("127.0.0.1:")
    assert summary["extractor"] == "stain" and summary["k"] == 8
    assert (out / "01.geojson").is_file() and (out / "fseg-bank.safetensors").is_file()
    assert list(real_local_server.iterdir()) == []

    def broken(*args, **kwargs) -> list[str]:
        raise AssertionError("a finished batch must not start a server")

    monkeypatch.setattr(local_server, "server_command", broken)
    assert main(["segment", str(slide), "--out", str(out), "--quiet"]) == 0


def test_the_embedded_server_may_read_a_slide_through_its_symlink(tmp_path: Path) -> None:
    (tmp_path / "slides").mkdir()
    (tmp_path / "slides" / "a.svs").write_bytes(b"x")
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "a.svs").symlink_to(tmp_path / "slides" / "a.svs")
    link = str(tmp_path / "links" / "a.svs")
    args = build_parser().parse_args(["segment", link, "--out", str(tmp_path / "out")])
    slide = SlideInput(tmp_path / "links" / "a.svs", "a")
    roots = local_server_args(args, [slide], options_from_args(args))["slide_roots"]
    assert set(roots) == {tmp_path / "links", tmp_path / "slides"}


@pytest.mark.slow
def test_an_mpp_that_overrides_the_slides_own_is_said_aloud(
    real_local_server: Path, cmu_slide: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A cohort given --mpp for its one uncalibrated slide must not silently rescale the
    # others: CMU-1-Small-Region records 0.499 µm/px, so --mpp 0.25 halves its pixels.
    out = tmp_path / "out"
    assert main(["segment", str(cmu_slide), "--out", str(out), "--quiet", "--mpp", "0.25"]) == 0
    said = capsys.readouterr()
    warning = (
        "--mpp 0.25 µm/px overrides the 0.499 µm/px the slide records; areas and the "
        "working resolution follow the value given"
    )
    assert f"fseg: warning: CMU-1-Small-Region: {warning}" in said.out + said.err
    summary = json.loads((out / "CMU-1-Small-Region.json").read_text())
    assert summary["warnings"] == [warning]
    assert summary["mpp"] == 0.25 and summary["mpp_y"] == 0.25


@pytest.mark.slow
def test_a_manifests_mpp_column_calibrates_one_slide_and_leaves_the_others(
    real_local_server: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The TCGA slide records no µm/px; the manifest gives it 0.25 while CMU keeps the
    # 0.499 its file records. The bank is fitted on both, each at its own resolution.
    manifest = tmp_path / "cohort.csv"
    manifest.write_text(
        "path,mpp\n"
        f"{shared('slides/CMU-1-Small-Region.svs')},\n"
        f"{shared('slides/tcga-cr-7395-01a-01-ts1.svs')},0.25\n"
    )
    out = tmp_path / "out"
    assert main(["segment", "--manifest", str(manifest), "--out", str(out), "--quiet"]) == 0
    said = capsys.readouterr()
    assert "warning" not in said.out + said.err
    cmu = json.loads((out / "CMU-1-Small-Region.json").read_text())
    tcga = json.loads((out / "tcga-cr-7395-01a-01-ts1.json").read_text())
    assert (cmu["mpp"], tcga["mpp"]) == (0.499, 0.25)
    assert cmu["warnings"] == [] and tcga["warnings"] == []
    # Asked again with another mpp for the TCGA slide, only that slide is redone.
    manifest.write_text(manifest.read_text().replace(",0.25", ",0.3"))
    assert main(["segment", "--manifest", str(manifest), "--out", str(out)]) == 0
    assert "1 done, 1 skipped" in capsys.readouterr().out
    assert json.loads((out / "tcga-cr-7395-01a-01-ts1.json").read_text())["mpp"] == 0.3
