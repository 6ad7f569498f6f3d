"""``fseg`` commands: info, health (against a real server), and one-sentence errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_e2e_support import dead_address, real_server

import fseg_client.batch
from fseg_client.cli import main


@pytest.fixture(scope="module")
def address(tmp_path_factory: pytest.TempPathFactory):
    with real_server(tmp_path_factory.mktemp("server")) as server:
        yield server.address


def test_info_is_readable_and_json_on_request(address: str, capsys) -> None:
    # Here, not at the top: the other tests of this file run with the client alone.
    from fseg_server.extract.stain import STAIN_SPEC

    assert main(["info", "--server", address]) == 0
    text = capsys.readouterr().out
    assert (
        f"server      {address}" in text
        and f"stain (default): {STAIN_SPEC.feature_dim} features" in text
    )
    assert main(["info", "--server", address, "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["server"] == address and payload["extractors"][0]["name"] == "stain"


def test_health(address: str, capsys) -> None:
    assert main(["health", "--server", address]) == 0
    assert capsys.readouterr().out == f"{address}: SERVING\n"
    dead = dead_address()
    assert main(["health", "--server", dead]) == 1
    line = capsys.readouterr().out
    assert line.startswith(f"{dead}: UNREACHABLE: ") and line.count("\n") == 1


def test_info_on_a_dead_server_is_one_sentence(capsys) -> None:
    assert main(["info", "--server", dead_address()]) == 1
    err = capsys.readouterr().err
    assert err.startswith("fseg: error: the server at ") and err.count("\n") == 1


@pytest.fixture
def slide(tmp_path: Path) -> Path:
    path = tmp_path / "a.svs"
    path.write_bytes(b"x")
    return path


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--k", "0"], "--k must be between 1 and 255"),
        (["--k", "256"], "--k must be between 1 and 255"),
        (["--outputs", "geojson,mask"], "--outputs takes"),
        (["--mpp", "-1"], "--mpp must be a positive, finite number of µm per pixel"),
        (["--mpp", "0"], "--mpp must be a positive, finite number of µm per pixel, not 0.0"),
        (["--target-mpp", "nan"], "--target-mpp must be a positive, finite number"),
        (["--min-area", "inf"], "--min-area must be a finite number of at least 0"),
        (["--server", "h:1", "--tls-cert", "c.pem"], "--tls-cert and --tls-key go together"),
        (["--tls-ca", "ca.pem"], "the TLS options need --server"),
        (["--concepts", "missing.safetensors"], "does not exist"),
        (["--server", "localhost"], "needs a port"),
        (["--concurrency", "0"], "--concurrency must be at least 1"),
        (["--roi", "nope.geojson"], "cannot read the ROI file"),
        (["--server", "h:1", "--device", "cuda"], "are for the embedded server"),
    ],
)
def test_bad_arguments_exit_2_with_one_sentence(
    slide: Path, tmp_path: Path, capsys, extra: list[str], message: str
) -> None:
    code = main(["segment", str(slide), "--out", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("fseg: error: ") and message in err and err.count("\n") == 1


def test_duplicate_stems_are_refused_before_anything_starts(tmp_path: Path, capsys) -> None:
    for folder in ("x", "y"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "same.svs").write_bytes(b"x")
    out = tmp_path / "out"
    code = main(["segment", str(tmp_path / "x"), str(tmp_path / "y"), "--out", str(out)])
    assert code == 2 and "would both write outputs named 'same'" in capsys.readouterr().err
    assert not out.exists()


def roi_with(geometry: dict) -> str:
    """A QuPath-like ROI file's text: a point annotation, then ``geometry``."""
    return json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 1]}},
        {"type": "Feature", "geometry": geometry},
    ]})  # fmt: skip


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("{not json", "is not valid GeoJSON"),
        (
            roi_with({"type": "Polygon", "coordinates": [[[0, 0], [10, 0]]]}),
            "is not valid GeoJSON: in feature 2, ring 1 has 2 positions",
        ),
        (
            roi_with({"type": "Polygon", "coordinates": [[[0, 0], [9, 0], [9, 9], [0, 9]]]}),
            "is not valid GeoJSON: in feature 2, ring 1 does not end where it starts",
        ),
        (
            roi_with(
                {"type": "MultiPolygon", "coordinates": [[[[0, 0], [1, 0], [0, 1], [0, 0]]], [[1]]]}
            ),
            "is not valid GeoJSON: in feature 2, polygon 2, ring 1 is not a list of [x, y] "
            "positions",
        ),
    ],
)
def test_a_bad_roi_file_is_refused_before_any_work(
    slide: Path, tmp_path: Path, capsys, text: str, said: str
) -> None:
    # Exit code 2 and the place in the file, not a geometry library's words from the server.
    roi = tmp_path / "roi.geojson"
    roi.write_text(text)
    out = tmp_path / "out"
    assert main(["segment", str(slide), "--out", str(out), "--roi", str(roi)]) == 2
    assert said in capsys.readouterr().err
    assert not out.exists()


def test_an_output_folder_without_write_permission_says_why(
    slide: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    # CI runs as root, for whom a chmod binds nothing, so the permission answer is
    # played by a stand-in for os.access; the folder itself is real.
    monkeypatch.setattr(fseg_client.batch.os, "access", lambda path, mode: False)
    out = tmp_path / "locked"
    out.mkdir()
    assert main(["segment", str(slide), "--out", str(out)]) == 2
    said = capsys.readouterr().err
    assert f"cannot write in the output folder {out} (no permission to write there)" in said
