"""Issue 3's bad inputs through ``fseg segment FILE --out DIR`` and its embedded server.

Each row runs the real command line as a user would (a subprocess, which starts
the real local server): one sentence on stderr, a non-zero exit, no traceback,
and nothing half-written in DIR or in the temporary folder the client and its
server were given (TMPDIR).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_e2e_support import client_env, copy_images, csv_rows, need_server_package, temp_files

from conftest import shared


def not_a_slide(folder: Path) -> Path:
    path = folder / "notes.svs"
    path.write_text("these are my notes, not a slide\n" * 100)
    return path


def truncated_slide(folder: Path) -> Path:
    data = shared("slides/CMU-1-Small-Region.svs").read_bytes()
    path = folder / "cut.svs"
    path.write_bytes(data[: len(data) // 3])
    return path


def empty_file(folder: Path) -> Path:
    path = folder / "empty.svs"
    path.write_bytes(b"")
    return path


def slide_without_mpp(folder: Path) -> Path:
    return Path(shutil.copy(shared("slides/tcga-cr-7395-01a-01-ts1.svs"), folder / "tcga.svs"))


def fluorescence_rgb(folder: Path) -> Path:
    """A dark field with bright green spots, as a fluorescence channel looks."""
    rng = np.random.default_rng(3)
    image = np.full((400, 400, 3), 6, np.uint8)
    for y, x in rng.integers(10, 390, (80, 2)):
        image[y - 4 : y + 4, x - 4 : x + 4] = (30, 230, 60)
    path = folder / "dapi.png"
    Image.fromarray(image).save(path)
    return path


def fluorescence_16bit(folder: Path) -> Path:
    """A 16-bit single-channel TIFF, as fluorescence scanners write."""
    pixels = np.random.default_rng(4).integers(0, 4000, (300, 300)).astype(np.uint16)
    path = folder / "channel.tif"
    Image.fromarray(pixels).save(path)
    return path


ROWS = [
    pytest.param(not_a_slide, "not a slide OpenSlide can read", id="not-a-slide"),
    pytest.param(truncated_slide, "not a slide OpenSlide can read", id="truncated-slide"),
    pytest.param(empty_file, "is empty", id="empty-file"),
    pytest.param(slide_without_mpp, "pass --mpp", id="no-mpp"),
    pytest.param(fluorescence_rgb, "fluorescence", id="fluorescence-dark-rgb"),
    pytest.param(fluorescence_16bit, "fluorescence", id="fluorescence-16-bit"),
]


def leftovers(tmp_dir: Path) -> list[str]:
    """What the run left in its TMPDIR, torch's own compile cache aside."""
    return sorted(p.name for p in tmp_dir.iterdir() if not p.name.startswith("torchinductor_"))


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "fseg_client.cli", "segment", *args, "--quiet"]
    env = client_env(tmp_path / "tmpdir")
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize(("make", "fragment"), ROWS)
def test_bad_input_is_one_sentence_and_leaves_nothing(make, fragment: str, tmp_path: Path):
    need_server_package()
    folder = tmp_path / "in"
    folder.mkdir()
    slide = make(folder)
    out = tmp_path / "out"
    result = run_cli(tmp_path, str(slide), "--out", str(out))
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("fseg: error: ") and result.stderr.count("\n") == 1
    assert fragment in result.stderr and "Traceback" not in result.stderr + result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["batch-summary.csv"]
    assert [r["status"] for r in csv_rows(out)] == ["failed"]
    assert leftovers(tmp_path / "tmpdir") == []  # the local server cleaned up too


@pytest.mark.slow
def test_bad_inputs_in_a_batch_fail_alone(tmp_path: Path) -> None:
    """With a bank given, each bad slide fails its own Segment call; the good one is done."""
    need_server_package()
    folder = tmp_path / "in"
    (good,) = copy_images(folder, ("01",))
    bank_out = tmp_path / "bank"
    assert run_cli(tmp_path, str(good), "--out", str(bank_out)).returncode == 0
    bad = [make(folder) for make, _ in (row.values for row in ROWS)]
    out = tmp_path / "out"
    args = ["--out", str(out), "--concepts", str(bank_out / "fseg-bank.safetensors")]
    result = run_cli(tmp_path, str(folder), *args)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith(f"fseg: error: {len(bad)} of 7 slides failed")
    rows = {r["slide"]: r for r in csv_rows(out)}
    assert rows["01"]["status"] == "done"
    for path, (_, fragment) in zip(bad, (row.values for row in ROWS), strict=True):
        stem = path.name.rsplit(".", 1)[0]
        assert rows[stem]["status"] == "failed" and fragment in rows[stem]["error"]
        assert not list(out.glob(f"{stem}.*"))
    assert not temp_files(out) and leftovers(tmp_path / "tmpdir") == []


@pytest.mark.slow
def test_without_a_bank_the_batch_bank_is_fitted_on_the_readable_slides(tmp_path: Path) -> None:
    """One unreadable file in a cohort costs only its own row, not everyone's bank."""
    need_server_package()
    folder = tmp_path / "in"
    good = copy_images(folder, ("01", "02"))
    fragments = dict(row.values for row in ROWS)
    bad = {make(folder): fragments[make] for make in (not_a_slide, slide_without_mpp)}
    out = tmp_path / "out"
    result = run_cli(tmp_path, str(folder), "--out", str(out))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith("fseg: error: 2 of 4 slides failed")
    rows = {r["slide"]: r for r in csv_rows(out)}
    assert [rows[p.stem]["status"] for p in good] == ["done", "done"]
    for path, fragment in bad.items():
        stem = path.name.rsplit(".", 1)[0]
        assert fragment in rows[stem]["error"] and not list(out.glob(f"{stem}.*"))
    assert (out / "fseg-bank.safetensors").is_file()
    assert not temp_files(out) and leftovers(tmp_path / "tmpdir") == []
