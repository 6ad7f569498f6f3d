"""Which slides a batch holds: files, folders, globs, manifests, and refused stems."""

from __future__ import annotations

from pathlib import Path

import pytest

from fseg_client.errors import ClientError
from fseg_client.inputs import check_unique_stems, collect_inputs, stem_of


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_stem_drops_only_the_last_suffix() -> None:
    assert stem_of(Path("/a/b.svs")) == "b"
    assert stem_of(Path("b.ome.tiff")) == "b.ome"
    assert stem_of(Path("noext")) == "noext"


def test_folder_takes_slide_files_only(tmp_path: Path) -> None:
    for name in ["a.svs", "b.NDPI", "c.png", "notes.txt", ".hidden.svs", "c.labels.png"]:
        touch(tmp_path / name)
    (tmp_path / "sub").mkdir()
    touch(tmp_path / "sub" / "deep.svs")
    slides = collect_inputs([str(tmp_path)], None, allow_remote=False)
    assert [s.path.name for s in slides] == ["a.svs", "b.NDPI", "c.png"]
    assert all(s.path.is_absolute() and s.local for s in slides)


def test_a_folder_of_dicom_levels_is_one_slide(tmp_path: Path) -> None:
    for level in range(3):
        touch(tmp_path / f"level_{level}.dcm")
    slides = collect_inputs([str(tmp_path)], None, allow_remote=False)
    assert [s.path.name for s in slides] == ["level_0.dcm"]


def test_globs_and_repeats(tmp_path: Path) -> None:
    a, b = touch(tmp_path / "x" / "a.svs"), touch(tmp_path / "y" / "b.tif")
    slides = collect_inputs(
        [str(tmp_path / "*" / "*.svs"), str(b), str(a), str(tmp_path / "**" / "*.tif")],
        None,
        allow_remote=False,
    )
    assert [s.stem for s in slides] == ["a", "b"]  # each file once, first mention wins
    with pytest.raises(ClientError, match="matches no slide files"):
        collect_inputs([str(tmp_path / "*.czi")], None, allow_remote=False)


def test_a_glob_over_an_output_folder_takes_the_images_not_earlier_outputs(
    tmp_path: Path,
) -> None:
    # `fseg segment 'imgs/*' --out imgs` run twice must not segment its own outputs.
    for name in ["a.png", "a.labels.png", "a.overlay.png", "a.geojson", "a.json"]:
        touch(tmp_path / name)
    for pattern in ("*.png", "*"):
        slides = collect_inputs([str(tmp_path / pattern)], None, allow_remote=False)
        assert [s.path.name for s in slides] == ["a.png"]


def test_a_glob_takes_any_image_it_names(tmp_path: Path) -> None:
    # The server reads plain images of every format Pillow opens, not only slide suffixes.
    touch(tmp_path / "b.bmp")
    slides = collect_inputs([str(tmp_path / "*.bmp")], None, allow_remote=False)
    assert [s.path.name for s in slides] == ["b.bmp"]


def test_missing_file_is_refused_unless_it_may_live_on_the_server(tmp_path: Path) -> None:
    with pytest.raises(ClientError, match="does not exist"):
        collect_inputs([str(tmp_path / "gone.svs")], None, allow_remote=False)
    (slide,) = collect_inputs(["/srv/slides/gone.svs"], None, allow_remote=True)
    assert not slide.local and slide.stem == "gone"


def test_nothing_to_do_is_an_error_naming_the_empty_folder(tmp_path: Path) -> None:
    touch(tmp_path / "sub" / "deeper.svs")  # folders are not searched recursively
    with pytest.raises(ClientError, match=f"no slides to segment: {tmp_path} holds no slide"):
        collect_inputs([str(tmp_path)], None, allow_remote=False)


def test_every_bad_manifest_row_is_named_at_once(tmp_path: Path) -> None:
    # A cohort of a thousand rows is fixed in one pass, not one missing file per run.
    touch(tmp_path / "one.svs")
    manifest = tmp_path / "m.csv"
    rows = ["one.svs", *(f"gone{i}.svs" for i in range(7))]
    manifest.write_text("path\n" + "\n".join(rows) + "\n")
    with pytest.raises(ClientError) as info:
        collect_inputs([], manifest, allow_remote=False)
    said = str(info.value)
    assert said.startswith(f"7 rows of {manifest} cannot be used: line 3 of")
    assert "gone4.svs does not exist" in said and "gone5.svs" not in said
    assert said.endswith("; and 2 more")


def test_a_manifest_mpp_belongs_to_its_row_alone(tmp_path: Path) -> None:
    touch(tmp_path / "one.svs")
    touch(tmp_path / "two.svs")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,mpp\none.svs, 0.25 \ntwo.svs,\n")
    slides = collect_inputs([], manifest, allow_remote=False)
    assert [s.mpp for s in slides] == [0.25, None]


def test_manifest_paths_are_relative_to_it_and_names_rename(tmp_path: Path) -> None:
    touch(tmp_path / "data" / "one.svs")
    touch(tmp_path / "data" / "two.svs")
    manifest = tmp_path / "data" / "slides.csv"
    manifest.write_text("Path,Name,extra\none.svs,patient-1,\n,,\ntwo.svs,,z\n")
    slides = collect_inputs([], manifest, allow_remote=False)
    assert [(s.path.name, s.stem) for s in slides] == [("one.svs", "patient-1"), ("two.svs", "two")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name\nx\n", "needs a 'path' column"),
        ("path\nmissing.svs\n", "line 2 .* does not exist"),
        ("path,name\none.svs,../escape\n", "cannot name output files"),
        ("path,mpp\none.svs,0.25um\n", "line 2 .* mpp must be a positive number .*'0.25um'"),
        ("path,mpp\none.svs,-1\n", "mpp must be a positive number"),
        ("path,name\none.svs,a\x00b\n", r"line 2 .* name holds a control character \(U\+0000\)"),
        ('path,name\none.svs,"two\nlines"\n', r"the name holds a control character \(U\+000A\)"),
        ("path\none\x00.svs\n", r"the path holds a control character \(U\+0000\)"),
    ],
)
def test_bad_manifests(tmp_path: Path, text: str, message: str) -> None:
    touch(tmp_path / "one.svs")
    manifest = tmp_path / "m.csv"
    manifest.write_text(text)
    with pytest.raises(ClientError, match=message):
        collect_inputs([], manifest, allow_remote=False)


def test_two_inputs_with_one_stem_are_refused(tmp_path: Path) -> None:
    touch(tmp_path / "a" / "slide.svs")
    touch(tmp_path / "b" / "Slide.tif")
    with pytest.raises(ClientError, match="would both write outputs named") as info:
        collect_inputs([str(tmp_path / "a"), str(tmp_path / "b")], None, allow_remote=False)
    assert "\n" not in str(info.value)


def test_manifest_names_resolve_stem_clashes(tmp_path: Path) -> None:
    touch(tmp_path / "a" / "slide.svs")
    touch(tmp_path / "b" / "slide.svs")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,name\na/slide.svs,a\nb/slide.svs,b\n")
    slides = collect_inputs([], manifest, allow_remote=False)
    check_unique_stems(slides)
    assert [s.stem for s in slides] == ["a", "b"]
