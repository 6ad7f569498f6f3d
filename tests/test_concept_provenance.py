"""Banks fitted by fseg remember where their k-means samples came from; imported ones do not."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from conftest import shared
from fseg_server.concepts import ConceptBank, Reservoir, bank_from_bytes, load_bank
from fseg_server.concepts.bank import ConceptClass
from fseg_server.concepts.provenance import Provenance, SampledInput, file_fingerprint
from fseg_server.extract.stain import STAIN_SPEC
from fseg_server.slide.reader import open_slide
from servers import run_server_cli


def bank_with_provenance() -> ConceptBank:
    rng = np.random.default_rng(0)
    windows = np.array([[0, 10, 20, 64, 64], [1, 128, 0, 32, 32], [0, 500, 700, 64, 64]])
    return ConceptBank(
        extractor="stain",
        feature_dim=4,
        centres={4: rng.random((4, 4), dtype=np.float32)},
        provenance=Provenance(
            (SampledInput("a.svs", "head-tail-sha256:aa"), SampledInput("b.png", "x:bb")),
            windows,
        ),
    )


def test_provenance_survives_save_and_load(tmp_path: Path):
    bank = bank_with_provenance()
    loaded = load_bank(bank.save(tmp_path / "bank.safetensors"))
    assert loaded.provenance is not None
    assert loaded.provenance.inputs == bank.provenance.inputs
    assert np.array_equal(loaded.provenance.windows, bank.provenance.windows)
    assert np.array_equal(loaded.provenance.windows_of("x:bb"), [[128, 0, 32, 32]])


def test_naming_the_classes_keeps_the_provenance():
    bank = bank_with_provenance()
    named = bank.renamed(4, [ConceptClass(f"c{i}", (i, i, i)) for i in range(4)])
    reread = bank_from_bytes(named.to_bytes())
    assert np.array_equal(reread.provenance.windows, bank.provenance.windows)


def test_reservoir_tags_stay_with_their_vectors_when_the_sample_overflows():
    reservoir = Reservoir(50, 3, tag_columns=5)
    values = np.arange(1000, dtype=np.float32)
    vectors = np.repeat(values[:, None], 3, axis=1)
    tags = np.repeat(np.arange(1000)[:, None], 5, axis=1) * 7
    reservoir.add(vectors, tags)
    assert len(reservoir.sample) == 50
    # Each kept vector's value is its tag's source row: they were replaced together.
    assert np.array_equal(reservoir.tags[:, 0], reservoir.sample[:, 0].astype(np.int64) * 7)
    assert len(set(reservoir.sample[:, 0])) == 50


def test_a_fingerprint_is_of_the_content_not_of_the_name_or_place(tmp_path: Path):
    original = shared("wsss4luad-val/images/01.png")
    copy = tmp_path / "renamed.png"
    shutil.copy(original, copy)
    assert file_fingerprint(copy) == file_fingerprint(original)
    changed = bytearray(copy.read_bytes())
    changed[-1] ^= 0xFF
    copy.write_bytes(bytes(changed))
    assert file_fingerprint(copy) != file_fingerprint(original)


def test_fit_concepts_records_each_input_and_windows_on_its_tissue(tmp_path: Path, cmu_slide):
    image = shared("wsss4luad-val/images/01.png")
    out = tmp_path / "bank.safetensors"
    done = run_server_cli("fit-concepts", str(cmu_slide), str(image), "--k", "4", "--out", str(out))
    assert done.returncode == 0, done.stderr
    provenance = load_bank(out).provenance
    assert provenance is not None
    assert [s.name for s in provenance.inputs] == [cmu_slide.name, image.name]
    assert [s.fingerprint for s in provenance.inputs] == [
        file_fingerprint(cmu_slide),
        file_fingerprint(image),
    ]
    for index, path in enumerate((cmu_slide, image)):
        windows = provenance.windows[provenance.windows[:, 0] == index, 1:]
        assert len(windows) > 0
        with open_slide(path) as slide:
            width, height = slide.info.dimensions
            mpp = slide.info.mpp[0] if slide.info.mpp else STAIN_SPEC.mpp
        assert (windows[:, 0] >= 0).all() and (windows[:, 0] < width).all()
        assert (windows[:, 1] >= 0).all() and (windows[:, 1] < height).all()
        # A window is the extractor's concept window at the bank's 1 µm/px, in level-0 px.
        expected = STAIN_SPEC.concept_window * STAIN_SPEC.mpp / mpp
        assert np.allclose(windows[:, 2], expected, rtol=0.02)


def test_an_imported_published_bank_has_no_provenance(tmp_path: Path):
    joblib = shared("concept-banks/resnet.joblib")
    out = tmp_path / "resnet.safetensors"
    done = run_server_cli(
        "import-concepts", str(joblib), "--extractor", "resnet50", "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    assert load_bank(out).provenance is None
