"""Classify mode agrees with the F-SEG authors' algorithm on real H&E features.

The oracle is ``fseg_reference.py``: scikit-learn's NMF per image with the
reference's settings, components matched to the bank's centres by cosine.
Both factorize the same ``stain`` features of shared WSSS4LUAD patches
against the same bank, so any difference is the factorization's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import shared
from fseg_client.evaluate import evaluate_arrays
from fseg_reference import reference_classes, reference_components, reference_labels
from fseg_server.concepts import kmeans
from fseg_server.extract import create_extractor
from fseg_server.factorize import Mode, concept_scores, labels_from_scores
from fseg_server.pipeline.recipes import extract_features

# The four smallest patches: enough tissue of every class, a few seconds of NMF each.
PATCHES = ("26", "22", "02", "17")
K, COMPONENTS = 8, 8


@pytest.fixture(scope="module")
def patches() -> list[tuple[str, np.ndarray, torch.Tensor]]:
    """(name, mask, (1, C, h, w) stain features) of each patch."""
    extractor = create_extractor("stain").eval()
    out = []
    for name in PATCHES:
        pixels = np.asarray(Image.open(shared(f"wsss4luad-val/images/{name}.png")).convert("RGB"))
        mask = np.asarray(Image.open(shared(f"wsss4luad-val/masks/{name}.png")))
        with torch.no_grad():
            features = extract_features(extractor, torch.from_numpy(pixels.copy())[None])
        out.append((name, mask, features))
    return out


@pytest.fixture(scope="module")
def centres(patches) -> torch.Tensor:
    cells = torch.cat([f[0].flatten(1).T for _, _, f in patches])
    return kmeans(cells, K, seed=0)


@pytest.fixture(scope="module")
def both_labels(patches, centres) -> list[dict]:
    """Per patch: cell labels and pixel labels from fseg and from the reference."""
    stride = create_extractor("stain").spec.stride
    out = []
    for name, mask, features in patches:
        scores, index = concept_scores(features, centres, Mode.CLASSIFY, components=COMPONENTS)
        maps, concepts = reference_components(features[0].numpy(), COMPONENTS)
        classes = reference_classes(concepts, centres.numpy())
        cells = features.shape[-2:]
        out.append({
            "name": name,
            "mask": mask,
            "fseg_cells": labels_from_scores(scores, index, 1)[0].numpy(),
            "reference_cells": reference_labels(maps, classes, cells),
            "fseg_pixels": labels_from_scores(scores, index, stride)[0].numpy()[
                : mask.shape[0], : mask.shape[1]
            ],
            "reference_pixels": reference_labels(maps, classes, (cells[0] * stride,
                                                                 cells[1] * stride))[
                : mask.shape[0], : mask.shape[1]
            ],
        })  # fmt: skip
    return out


def test_classify_gives_the_reference_label_on_nearly_every_cell(both_labels):
    for patch in both_labels:
        agreement = (patch["fseg_cells"] == patch["reference_cells"]).mean()
        assert agreement >= 0.99, f"patch {patch['name']}: {agreement:.3f} of cells agree"


def test_classify_scores_the_reference_miou(both_labels):
    def miou(key: str) -> float:
        items = [(p["name"], p["mask"], p[key]) for p in both_labels]
        return evaluate_arrays(items, method="many-to-one").pooled.miou

    assert abs(miou("fseg_pixels") - miou("reference_pixels")) <= 0.01


def test_classify_stops_where_the_reference_stops():
    """Converged early: the same sweeps, so the same factors, not merely close ones."""
    from sklearn.decomposition import NMF

    from fseg_server.factorize import batched_nmf

    rng = np.random.default_rng(3)
    # Every cell one of three concepts, at its own strength: NMF converges in about 40 sweeps.
    weights = np.zeros((300, 3))
    weights[np.arange(300), rng.integers(0, 3, 300)] = rng.random(300) + 0.5
    x = (weights @ rng.random((3, 12))).astype(np.float32)
    model = NMF(3, init="random", random_state=0)
    concepts = model.fit_transform(x.T)
    assert model.n_iter_ < 200
    maps, ours = batched_nmf(torch.from_numpy(x)[None], 3)
    np.testing.assert_allclose(ours[0].numpy(), concepts.T, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(maps[0].numpy(), model.components_.T, rtol=1e-3, atol=1e-5)
