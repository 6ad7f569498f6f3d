"""``fseg atlas``: a page, a mosaic and a names template that show what each concept is.

A bank is fitted with ``fseg-server fit-concepts`` on the shared CMU slide and
three WSSS4LUAD patches, and ``fseg atlas`` (the real client, with its
embedded server) draws its atlas from the same inputs. The page is opened in
a real headless Chromium.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from browser import loaded_page, screenshot
from PIL import Image

from conftest import shared
from fseg_server.concepts import load_bank
from servers import CLI_TIMEOUT_S, run_server_cli

K = 8
FILES = (f"atlas-k{K}.html", f"atlas-k{K}.png", f"names-k{K}.json")


def fseg(*args: str) -> subprocess.CompletedProcess:
    """The ``fseg`` client, as a user runs it."""
    command = [sys.executable, "-m", "fseg_client", *args, "--progress", "lines"]
    return subprocess.run(command, capture_output=True, text=True, timeout=CLI_TIMEOUT_S)


@pytest.fixture(scope="module")
def inputs() -> list[Path]:
    return [shared("slides/CMU-1-Small-Region.svs")] + [
        shared(f"wsss4luad-val/images/{n}.png") for n in ("01", "02", "03")
    ]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory, inputs: list[Path]) -> Path:
    bank = tmp_path_factory.mktemp("bank") / "cohort.safetensors"
    done = run_server_cli("fit-concepts", *map(str, inputs), "--k", str(K), "--out", str(bank))
    assert done.returncode == 0, done.stderr
    return bank


@pytest.fixture(scope="module")
def atlas(tmp_path_factory: pytest.TempPathFactory, fitted: Path, inputs: list[Path]) -> Path:
    out = tmp_path_factory.mktemp("atlas")
    done = fseg("atlas", str(fitted), "--k", str(K), *map(str, inputs), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "sample" in done.stderr  # progress, as for every command
    return out


def captions(page: str) -> list[tuple[str, int, int]]:
    """(slide, x, y) under every picture of the page."""
    found = re.findall(r"<figcaption>([^<]+)<br>x ([\d,]+), y ([\d,]+)", page)
    return [(name, int(x.replace(",", "")), int(y.replace(",", ""))) for name, x, y in found]


def test_the_atlas_writes_a_page_a_mosaic_and_a_names_template_and_nothing_else(atlas: Path):
    assert sorted(p.name for p in atlas.iterdir()) == sorted(FILES)
    page = (atlas / FILES[0]).read_text()
    assert "http://" not in page and "https://" not in page  # nothing from the network
    assert page.count('<img src="data:image/jpeg;base64,') >= 12
    mosaic = Image.open(atlas / FILES[1])
    assert mosaic.width > 800 and mosaic.height > 100 * K


def test_every_concept_section_and_its_pictures_render_in_a_headless_chromium(
    atlas: Path, fitted: Path, tmp_path: Path
):
    # stain's banks keep their last concept for glass: its pictures are glass.
    assert load_bank(fitted).classes[K][-1].name == f"F-SEG k{K} glass"
    page = atlas / FILES[0]
    loaded = loaded_page(page, tmp_path, width=1280)
    sections = [s for s in loaded["sections"] if s["id"].startswith("concept-")]
    assert [s["id"] for s in sections] == [f"concept-{i}" for i in range(K)]
    images = loaded["images"]
    assert images and all(i["complete"] and i["natural"] == 160 for i in images)  # none broken
    for section in sections:
        mine = [i for i in images if i["section"] == section["id"]]
        assert len(mine) == section["windows"]
        if "Absent" in section["text"]:
            assert not mine
        else:
            assert 12 <= len(mine) <= 24
    shot = screenshot(page, tmp_path, 1280, min(int(loaded["height"]) + 20, 30000))
    brightness: dict[bool, list[float]] = {True: [], False: []}  # by: is it glass's?
    for image in images:  # each picture is drawn, not a blank box
        x, y, w, h = (round(image[key]) for key in ("x", "y", "w", "h"))
        drawn = shot[y : y + h, x : x + w]
        glass = image["section"] == f"concept-{K - 1}"
        assert drawn.shape[:2] == (h, w) and drawn.std() > (2 if glass else 8), image
        brightness[glass].append(float(drawn.mean()))
    assert np.mean(brightness[True]) > max(np.mean(brightness[False]), 150)
    for section in sections:  # and every section has its heading drawn
        x, y, w = (round(section[key]) for key in ("x", "y", "w"))
        assert shot[y : y + 40, x : x + w].min() < 100, section["id"]


def test_windows_shown_are_windows_that_k_means_saw(atlas: Path, fitted: Path):
    provenance = load_bank(fitted).provenance
    seen = {(provenance.inputs[i].name, x, y) for i, x, y, _, _ in provenance.windows.tolist()}
    shown = captions((atlas / FILES[0]).read_text())
    assert len(shown) >= 12
    assert set(shown) <= seen  # CMU-1-Small-Region records no bounds: both frames agree
    assert len({name for name, _, _ in shown}) == 4  # drawn from every input


def test_the_atlas_is_the_same_when_made_again(atlas: Path, fitted: Path, inputs, tmp_path):
    again = fseg("atlas", str(fitted), "--k", str(K), *map(str, inputs), "--out", str(tmp_path))
    assert again.returncode == 0, again.stderr
    first, second = ((d / FILES[0]).read_text() for d in (atlas, tmp_path))
    assert captions(first) == captions(second)


def test_names_round_trip_through_name_concepts_into_the_atlas_and_segmentation(
    atlas: Path, fitted: Path, inputs: list[Path], tmp_path: Path
):
    bank = tmp_path / "named.safetensors"
    shutil.copy(fitted, bank)
    template = json.loads((atlas / FILES[2]).read_text())
    unchanged = run_server_cli("name-concepts", str(bank), "--k", str(K), "--names",
                               str(atlas / FILES[2]))  # fmt: skip
    assert unchanged.returncode == 0, unchanged.stderr
    assert load_bank(bank).classes[K] == load_bank(fitted).classes[K]

    template["3"]["name"] = "Stroma"
    template["5"] = {"name": "Tumour", "color": "#c8102e"}
    edited = tmp_path / "names.json"
    edited.write_text(json.dumps(template))
    named = run_server_cli("name-concepts", str(bank), "--k", str(K), "--names", str(edited))
    assert named.returncode == 0, named.stderr
    classes = load_bank(bank).classes[K]
    assert (classes[3].name, classes[5].name) == ("Stroma", "Tumour")
    assert classes[5].color == (200, 16, 46)

    again = fseg("atlas", str(bank), "--k", str(K), *map(str, inputs), "--out", str(tmp_path / "a"))
    assert again.returncode == 0, again.stderr
    assert "#3 Stroma" in (tmp_path / "a" / FILES[0]).read_text()
    assert json.loads((tmp_path / "a" / FILES[2]).read_text())["5"]["color"] == "#c8102e"

    seg = fseg("segment", str(inputs[1]), "--concepts", str(bank), "--k", str(K),
               "--out", str(tmp_path / "seg"))  # fmt: skip
    assert seg.returncode == 0, seg.stderr
    geojson = json.loads((tmp_path / "seg" / "01.geojson").read_text())
    names = {f["properties"]["classification"]["name"] for f in geojson["features"]}
    assert names <= {c.name for c in classes} and names & {"Stroma", "Tumour"}
    # QuPath imports the colour with the name; the summary (and the overlay's legend,
    # drawn from the same classes) and the batch CSV carry the names too.
    colours = {
        f["properties"]["classification"]["name"]: f["properties"]["classification"]["color"]
        for f in geojson["features"]
    }
    assert colours.get("Tumour", [200, 16, 46]) == [200, 16, 46]
    summary = json.loads((tmp_path / "seg" / "01.json").read_text())
    assert [(c["name"], c["color"]) for c in summary["classes"]][5] == ("Tumour", [200, 16, 46])
    assert summary["classes"][3]["name"] == "Stroma"
    header = (tmp_path / "seg" / "batch-summary.csv").read_text().splitlines()[0]
    assert "area_px2:Stroma" in header and "area_px2:Tumour" in header


def test_a_published_bank_draws_its_atlas_from_the_inputs_given(tmp_path: Path):
    bank = tmp_path / "resnet.safetensors"
    imported = run_server_cli("import-concepts", str(shared("concept-banks/resnet.joblib")),
                              "--extractor", "resnet50", "--out", str(bank))  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    images = [shared(f"wsss4luad-val/images/{n}.png") for n in ("04", "05")]
    # ResNet-50 with random weights: the UNI and ImageNet weights cannot be downloaded here.
    done = fseg("atlas", str(bank), "--k", "16", *map(str, images), "--out", str(tmp_path / "a"),
                "--weights", "resnet50=random", "--windows", "12")  # fmt: skip
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "a" / "atlas-k16.html").read_text()
    assert "k-means saw" not in page  # no provenance: windows from the inputs given
    assert {name for name, _, _ in captions(page)} <= {"04.png", "05.png"} and captions(page)
    template = json.loads((tmp_path / "a" / "names-k16.json").read_text())
    assert [template[str(i)]["name"] for i in range(16)] == [f"F-SEG k16 #{i}" for i in range(16)]


def blank_image(folder: Path) -> Path:
    path = folder / "glass.png"
    Image.fromarray(np.full((300, 300, 3), 244, np.uint8)).save(path)
    return path


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("extractor", "was fitted on stain features, not on resnet50"),
        ("k", "has no k=5; it holds k = 8"),
        ("no tissue", "glass.png holds no tissue that fseg can find"),
        ("unwritable", "cannot create the output folder"),
    ],
)
def test_bad_input_is_one_sentence_exit_2_and_nothing_written(
    case: str, says: str, fitted: Path, inputs: list[Path], tmp_path: Path
):
    out = tmp_path / "out"
    args = ["atlas", str(fitted), "--k", str(K), str(inputs[1]), "--out", str(out)]
    if case == "extractor":
        args += ["--extractor", "resnet50"]
    elif case == "k":
        args[3] = "5"
    elif case == "no tissue":
        args[4] = str(blank_image(tmp_path))
        args += ["--tissue", "on"]
    else:
        (tmp_path / "file").write_text("not a folder")
        out = tmp_path / "file" / "out"
        args[-1] = str(out)
    done = fseg(*args)
    assert done.returncode == 2, done.stderr
    error = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(error) == 1 and says in error[0] and "Traceback" not in done.stderr
    assert not out.exists() or list(out.iterdir()) == []
