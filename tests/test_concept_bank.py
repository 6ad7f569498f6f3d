"""Concept banks: the safe on-disk format, the joblib import, naming, and refusals."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from conftest import shared
from fseg_server.cli import main as server_main
from fseg_server.concepts import ConceptBank, ConceptClass, import_joblib, load_bank
from fseg_server.errors import InvalidInput, NotFound
from servers import run_server_cli as run_cli

RNG = np.random.default_rng(0)


def small_bank(dim: int = 20) -> ConceptBank:
    return ConceptBank(
        extractor="stain",
        feature_dim=dim,
        centres={k: RNG.random((k, dim), dtype=np.float32) for k in (4, 8)},
        mpp=1.0,
        source="test",
    )


def test_round_trip_keeps_centres_metadata_and_names(tmp_path):
    bank = small_bank()
    named = bank.renamed(4, [ConceptClass(f"T{i}", (i, 2 * i, 3 * i)) for i in range(4)])
    loaded = load_bank(named.save(tmp_path / "bank.safetensors"))
    assert loaded.ks == [4, 8] and loaded.extractor == "stain" and loaded.mpp == 1.0
    assert np.array_equal(loaded.concepts(8), bank.concepts(8))
    assert [c.name for c in loaded.classes[4]] == ["T0", "T1", "T2", "T3"]
    assert loaded.classes[4][3].color == (3, 6, 9)
    assert len(loaded.digest) == 64


def test_default_names_are_unique_across_k_and_colours_distinct():
    bank = small_bank()
    names = [c.name for k in bank.ks for c in bank.classes[k]]
    assert len(set(names)) == len(names)
    assert len({c.color for c in bank.classes[8]}) == 8


def test_the_file_is_safetensors_and_holds_no_pickle(tmp_path):
    path = small_bank().save(tmp_path / "bank.safetensors")
    header_size = int.from_bytes(path.read_bytes()[:8], "little")
    header = json.loads(path.read_bytes()[8 : 8 + header_size])
    assert set(header) == {"__metadata__", "centres/4", "centres/8"}
    assert json.loads(header["__metadata__"]["fseg"])["format"] == "fseg-concept-bank/1"


def test_save_leaves_no_temporary_file(tmp_path):
    small_bank().save(tmp_path / "bank.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["bank.safetensors"]


def test_k_missing_from_the_bank_is_refused_with_the_available_k():
    with pytest.raises(InvalidInput, match="no k=16; it holds k = 4, 8"):
        small_bank().concepts(16)


def test_bank_of_another_extractor_or_dimension_is_refused():
    bank = small_bank()
    with pytest.raises(InvalidInput, match=r"fitted on stain features .20 channels., not on uni"):
        bank.check_extractor("uni", 1024)
    with pytest.raises(InvalidInput, match=r"not on stain .24 channels"):
        bank.check_extractor("stain", 24)
    bank.check_extractor("stain", 20)


def test_a_file_that_is_not_a_bank_is_refused(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(InvalidInput, match="not a concept bank"):
        load_bank(junk)
    with pytest.raises(NotFound):
        load_bank(tmp_path / "absent.safetensors")


def test_a_safetensors_file_without_bank_metadata_is_refused(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "weights.safetensors"
    save_file({"w": np.zeros((2, 2), np.float32)}, str(path))
    with pytest.raises(InvalidInput, match="no fseg concept-bank metadata"):
        load_bank(path)


def test_shapes_must_match_k_and_dimension():
    with pytest.raises(InvalidInput, match="shape"):
        ConceptBank("stain", 20, {4: np.zeros((5, 20), np.float32)})


@pytest.mark.parametrize(
    "file,extractor,dim,ks",
    [
        ("uni.joblib", "uni", 1024, [8, 16, 32, 64, 128, 256]),
        ("prov_gigapath.joblib", "prov-gigapath", 1536, [8, 16, 32, 64, 128, 256]),
        ("resnet.joblib", "resnet50", 1024, [16, 32, 64, 128, 256]),
    ],
)
def test_the_authors_published_banks_import(tmp_path, capsys, file, extractor, dim, ks):
    source = shared(f"concept-banks/{file}")
    bank = import_joblib(source, extractor, dim)
    assert "pickle" in capsys.readouterr().err  # the user is warned
    loaded = load_bank(bank.save(tmp_path / "bank.safetensors"))
    assert loaded.ks == ks and loaded.feature_dim == dim and loaded.mpp == 1.0
    import joblib

    raw = joblib.load(source)
    assert np.array_equal(loaded.concepts(ks[0]), raw[ks[0]].astype(np.float32))


def test_import_refuses_a_bank_of_the_wrong_dimension():
    with pytest.raises(InvalidInput, match="1536-dimensional centres but uni features have 1024"):
        import_joblib(shared("concept-banks/prov_gigapath.joblib"), "uni", 1024)


@pytest.mark.parametrize(
    "content,message",
    [
        ({"eight": np.ones((8, 4))}, "entry 'eight' is not k -> an array of centres"),
        ({2: np.array([[1.0, np.nan, 0, 0], [0, 1, 0, 0]])}, r"bank\.joblib: .*k=2 .* finite"),
    ],
)
def test_import_refuses_malformed_published_banks_in_one_sentence(tmp_path, content, message):
    import joblib

    joblib.dump(content, tmp_path / "bank.joblib")
    with pytest.raises(InvalidInput, match=message):
        import_joblib(tmp_path / "bank.joblib", "stain", 4)


def test_import_and_name_concepts_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "uni.safetensors"
    done = run_cli(
        "import-concepts", str(shared("concept-banks/uni.joblib")), "--extractor", "uni",
        "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # The published banks go up to k = 256; labels are one byte, so that one is unusable.
    assert "k = 256 is kept in the bank but cannot be used" in done.stderr
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"3": "Stroma", "5": {"name": "Tumour", "color": "#ff0000"}}))
    done = run_cli("name-concepts", str(out), "--k", "8", "--names", str(names))
    assert done.returncode == 0, done.stderr
    classes = load_bank(out).classes[8]
    assert classes[3].name == "Stroma" and classes[5] == ConceptClass("Tumour", (255, 0, 0))
    assert classes[0].name == "F-SEG k8 #0"  # untouched entries keep their names

    # show-concepts in-process: the subprocess runs above cover the command line's wiring.
    def shown(*args: str) -> str:
        assert server_main(["show-concepts", str(out), *args]) == 0
        return capsys.readouterr().out

    described = shown()
    assert "extractor uni, 1024 channels, fitted at 1 µm/px" in described
    assert "k = 8: 2 named: Stroma, Tumour" in described
    assert "k = 256: default names; cannot segment" in described
    assert "   5  #ff0000  Tumour" in shown("--k", "8")
    assert json.loads(shown("--json"))["k"][0] == 8


@pytest.mark.parametrize(
    "names,message",
    [
        ('{"9": "x"}', "outside 0..7"),
        ('["a", "b"]', "has 2 entries"),
        ('{"1": {"name": "x", "color": "red"}}', "neither"),
        ('{"1": "x", "2": "x"}', "unique"),
        ('{"1": " "}', "class 1 of the bank for k=8 needs a name that is not blank"),
        ('{"1": "Stroma\\nTumour"}', "class 1 of the bank for k=8 has a control character"),
        ("not json", "not readable JSON"),
    ],
)
def test_bad_names_get_one_clear_line(tmp_path, names, message):
    bank = small_bank().save(tmp_path / "bank.safetensors")
    path = tmp_path / "names.json"
    path.write_text(names)
    done = run_cli("name-concepts", str(bank), "--k", "8", "--names", str(path))
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "classes,message",
    [
        ([ConceptClass("A", (1, 2, 3))] * 2, "names 2 classes for k=4; it needs 4"),
        ([ConceptClass("A", (300, -5, 2))] * 4, "three integers 0-255"),
        ([ConceptClass("A", (1, 2))] * 4, "three integers 0-255"),
        ([ConceptClass(" ", (1, 2, 3))] * 4, "needs a name"),
        ([ConceptClass("Stroma\nTumour", (1, 2, 3))] * 4, r"control character \(U\+000A\)"),
        ([ConceptClass("A\x00", (1, 2, 3))] * 4, r"control character \(U\+0000\)"),
        ([ConceptClass("x" * 101, (1, 2, 3))] * 4, "101 characters; at most 100"),
    ],
)
def test_inconsistent_class_names_and_colours_are_refused_when_the_bank_is_made(classes, message):
    with pytest.raises(InvalidInput, match=message):
        ConceptBank("stain", 3, {4: np.ones((4, 3), np.float32)}, classes={4: classes})


def forged_bank(folder, name: str, k=None, poison: bool = False, dtype=None):
    """A saved bank rewritten with its metadata's k list replaced, one centre made
    infinite, or its centres stored as ``dtype``: what a hand-edited, corrupted or
    home-made file holds."""
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    path = folder / "bank.safetensors"
    small_bank().save(path)
    with safe_open(path, "np") as handle:
        stored = handle.metadata()
    if k is not None:
        stored["fseg"] = json.dumps({**json.loads(stored["fseg"]), "k": k})
    tensors = load_file(path)
    if poison:
        next(iter(tensors.values()))[0, 0] = np.inf
    if dtype is not None:
        tensors = {name: values.astype(dtype) for name, values in tensors.items()}
    save_file(tensors, folder / name, metadata=stored)
    return folder / name


@pytest.mark.parametrize(
    ("k", "message"),
    [
        ([4, 8, 16], r"lists k = \[4, 8, 16\] but holds centres"),  # centres for 4 and 8 only
        ("x", "malformed concept-bank metadata: k = 'x'"),
    ],
)
def test_a_bank_file_whose_k_list_disagrees_with_its_centres_is_refused(tmp_path, k, message):
    with pytest.raises(InvalidInput, match=message):
        load_bank(forged_bank(tmp_path, "forged.safetensors", k=k))


def test_a_bank_file_with_non_finite_centres_is_refused_naming_the_file(tmp_path):
    with pytest.raises(InvalidInput, match=r"broken\.safetensors: .* not all finite"):
        load_bank(forged_bank(tmp_path, "broken.safetensors", poison=True))


@pytest.mark.parametrize(
    ("out", "message"),
    [(".", "is a folder; give the name of the file"), ("nope/bank.safetensors", "is not a folder")],
)
def test_fit_concepts_refuses_an_unwritable_out_before_fitting(tmp_path, out, message):
    image = shared("wsss4luad-val/images/01.png")
    done = run_cli("fit-concepts", str(image), "--k", "2", "--out", str(tmp_path / out))
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    assert "[1/1]" not in done.stderr  # refused before the first input was read


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_centres_stored_in_another_float_width_load_as_float32(tmp_path, dtype):
    stored = forged_bank(tmp_path, "wide.safetensors", dtype=dtype)
    original = load_bank(tmp_path / "bank.safetensors")
    loaded = load_bank(stored)
    for k in original.ks:
        assert loaded.concepts(k).dtype == np.float32
        expected = original.concepts(k).astype(dtype).astype(np.float32)
        assert np.array_equal(loaded.concepts(k), expected)


DTYPE_RULE = (
    "concept centres are feature vectors, stored as float32 (float16 and float64 are converted)"
)


@pytest.mark.parametrize(
    "dtype,words",
    [(np.int8, "int8"), (np.bool_, "bool"), (np.uint8, "uint8"), (np.int64, "int64")],
)
def test_centres_stored_as_integers_or_booleans_are_refused_naming_the_type(tmp_path, dtype, words):
    """Not silently made float: a label map or a mask saved as centres is no concept bank."""
    with pytest.raises(InvalidInput) as refused:
        load_bank(forged_bank(tmp_path, "ints.safetensors", dtype=dtype))
    said = rf".*ints\.safetensors: the centres for k=(4|8) are stored as {words}; "
    assert re.fullmatch(said + re.escape(DTYPE_RULE), str(refused.value))


def test_bfloat16_centres_are_refused_in_one_sentence_not_a_dtype_code(tmp_path):
    import torch
    from safetensors.torch import save_file

    bank = ConceptBank("stain", 20, {4: np.ones((4, 20), np.float32)})
    centres = {"centres/4": torch.ones((4, 20), dtype=torch.bfloat16)}
    metadata = {"fseg": json.dumps(bank.metadata())}
    save_file(centres, tmp_path / "bf16.safetensors", metadata=metadata)
    with pytest.raises(
        InvalidInput, match=f"centres for k=4 are stored as bfloat16; {re.escape(DTYPE_RULE)}"
    ):
        load_bank(tmp_path / "bf16.safetensors")


@pytest.mark.parametrize(
    "values,accepted",
    [
        (np.ones((2, 4), np.float64), True),
        ([[1.0, 0.5, 0, 0], [0, 1, 0, 0.5]], True),
        (np.ones((2, 4), np.int8), False),
        (np.ones((2, 4), bool), False),
    ],
)
def test_importing_converts_float_centres_and_refuses_the_rest(tmp_path, values, accepted):
    import joblib

    joblib.dump({2: values}, tmp_path / "bank.joblib")
    if accepted:
        bank = import_joblib(tmp_path / "bank.joblib", "stain", 4)
        assert bank.concepts(2).dtype == np.float32
        assert np.array_equal(bank.concepts(2), np.asarray(values, np.float32))
    else:
        words = np.asarray(values).dtype
        with pytest.raises(
            InvalidInput, match=f"k=2 are stored as {words}; {re.escape(DTYPE_RULE)}"
        ):
            import_joblib(tmp_path / "bank.joblib", "stain", 4)
