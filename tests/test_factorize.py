"""The factorizer: project (NNLS), classify (per-image NMF) and cluster modes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from conftest import shared
from fseg_server.factorize import (
    Mode,
    batched_nmf,
    concept_scores,
    guide_cells,
    guided_upsample,
    labels_from_scores,
    project_onto_concepts,
)


def mixtures(concepts: np.ndarray, n: int, noise: float, seed: int = 0) -> np.ndarray:
    """Non-negative features: sparse mixtures of two concepts plus rectified noise."""
    rng = np.random.default_rng(seed)
    k = len(concepts)
    weights = np.zeros((n, k), np.float32)
    pick = rng.integers(0, k, (n, 2))
    share = rng.dirichlet([1, 1], n).astype(np.float32)
    for j in range(2):
        weights[np.arange(n), pick[:, j]] += share[:, j]
    x = weights @ concepts + noise * rng.standard_normal((n, concepts.shape[1]))
    return np.maximum(x, 0).astype(np.float32)


def uni_concepts(k: int) -> np.ndarray:
    import joblib

    return np.clip(joblib.load(shared("concept-banks/uni.joblib"))[k], 0, None).astype(np.float32)


def test_project_matches_scikit_learns_reference_call():
    from sklearn.decomposition import non_negative_factorization

    h = uni_concepts(16)
    x = mixtures(h, 2000, noise=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w_ref, _, _ = non_negative_factorization(
            x, H=h, W=None, n_components=16, update_H=False, max_iter=10000, random_state=0
        )
    w = project_onto_concepts(x, h)
    assert (w.argmax(1) == w_ref.argmax(1)).mean() >= 0.99
    objective = np.linalg.norm(x - w @ h)
    assert objective <= np.linalg.norm(x - w_ref @ h) * (1 + 1e-4)


def test_project_recovers_exact_mixtures_and_stays_non_negative():
    rng = np.random.default_rng(1)
    h = rng.random((6, 30), dtype=np.float32)
    w_true = rng.random((500, 6), dtype=np.float32) * (rng.random((500, 6)) < 0.4)
    w = project_onto_concepts(w_true @ h, h)
    assert w.min() >= 0
    assert np.abs(w - w_true).max() < 1e-3


def test_project_returns_the_kind_it_was_given():
    h = np.eye(3, 5, dtype=np.float32)
    x = np.abs(np.random.default_rng(2).random((4, 5), dtype=np.float32))
    assert isinstance(project_onto_concepts(x, h), np.ndarray)
    out = project_onto_concepts(torch.from_numpy(x), torch.from_numpy(h))
    assert isinstance(out, torch.Tensor) and out.shape == (4, 3)


def test_project_works_inside_inference_mode_and_sees_concepts_change_in_place():
    rng = np.random.default_rng(3)
    h = torch.from_numpy(rng.random((4, 10), dtype=np.float32))
    w_true = torch.from_numpy(rng.random((50, 4), dtype=np.float32))
    with torch.inference_mode():
        frozen = h.clone()  # an inference tensor: it carries no version counter
        assert torch.allclose(project_onto_concepts(w_true @ frozen, frozen), w_true, atol=1e-3)
        frozen.mul_(2.0)  # the same tensor, new values: no stale solver may answer
        assert torch.allclose(project_onto_concepts(w_true @ h, frozen), w_true / 2, atol=1e-3)


def test_project_clips_negative_concepts_as_the_reference_does():
    h = np.array([[1.0, -5.0], [0.0, 1.0]], np.float32)
    x = np.array([[1.0, 0.0]], np.float32)
    w = project_onto_concepts(x, h)
    assert np.allclose(w, [[1.0, 0.0]], atol=1e-4)  # -5 clipped to 0: x is exactly concept 0


def test_project_handles_more_concepts_than_channels():
    rng = np.random.default_rng(3)
    h = rng.random((32, 20), dtype=np.float32)  # k > C: the Gram matrix is singular
    x = mixtures(h, 300, noise=0.05)
    w = project_onto_concepts(x, h)
    assert np.isfinite(w).all() and w.min() >= 0
    assert np.linalg.norm(x - w @ h) < np.linalg.norm(x)


def test_project_shape_errors_are_explained():
    with pytest.raises(ValueError, match=r"must be \(N, C\) and \(K, C\)"):
        project_onto_concepts(np.zeros((3, 4)), np.zeros((2, 5)))


def test_project_of_no_cells_is_empty():
    assert project_onto_concepts(np.zeros((0, 4), np.float32), np.eye(2, 4)).shape == (0, 2)


def test_nmf_reaches_scikit_learns_reconstruction_error():
    from sklearn.decomposition import NMF

    x = torch.rand(1, 400, 40) ** 3
    maps, concepts = batched_nmf(x, 6)
    ours = torch.linalg.norm(x[0] - maps[0] @ concepts[0])
    ref = NMF(6, init="random", random_state=0, max_iter=1000).fit(x[0].numpy())
    assert ours <= ref.reconstruction_err_ * 1.02
    assert bool((maps >= 0).all() and (concepts >= 0).all())


def test_nmf_is_deterministic():
    x = torch.rand(2, 50, 10)
    a, b = batched_nmf(x, 3), batched_nmf(x, 3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def two_region_features() -> tuple[torch.Tensor, torch.Tensor]:
    """A 6 x 8 grid: left half is concept 1, right half concept 2, of 3 concepts."""
    concepts = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0.2, 0], [0, 0, 0.2, 1.0]])
    grid = torch.zeros(1, 4, 6, 8)
    grid[0, :, :, :4] = concepts[1].view(4, 1, 1)
    grid[0, :, :, 4:] = concepts[2].view(4, 1, 1)
    return grid, concepts


@pytest.mark.parametrize("mode", list(Mode))
def test_every_mode_labels_two_regions_with_their_concepts(mode):
    grid, concepts = two_region_features()
    scores, index = concept_scores(grid, concepts, mode, components=2)
    labels = labels_from_scores(scores, index, 1)[0]
    assert (labels[:, :4] == 1).all() and (labels[:, 4:] == 2).all()


def test_classify_assigns_components_to_the_nearest_centre_by_cosine():
    grid, concepts = two_region_features()
    scores, index = concept_scores(grid * 7.0, concepts, Mode.CLASSIFY, components=2)
    assert scores.shape == (1, 2, 6, 8)
    assert sorted(index[0].tolist()) == [1, 2]


def test_upsampling_without_colours_is_bilinear_before_the_argmax():
    """Boundaries fall between cells, finer than the grid, where the reference puts them."""
    scores = torch.zeros(1, 2, 1, 2)
    scores[0, 0, 0, 0], scores[0, 1, 0, 1] = 1.0, 1.0
    labels = labels_from_scores(scores, torch.tensor([[0, 1]]), 4)[0, 0]
    assert labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    uneven = torch.tensor([[[[1.0, 0.0]], [[0.0, 0.5]]]])
    labels = labels_from_scores(uneven, torch.tensor([[0, 1]]), 4)[0, 0]
    assert labels.tolist() == [0, 0, 0, 0, 0, 1, 1, 1]  # the stronger class reaches further


def colour_row(colours: list[tuple[int, int, int]], u: int) -> torch.Tensor:
    """A (1, u, len(colours), 3) uint8 tile: one column per colour, u rows tall."""
    row = torch.tensor(colours, dtype=torch.uint8).view(1, 1, -1, 3)
    return row.expand(1, u, -1, 3).contiguous()


def test_guided_upsampling_puts_the_boundary_on_the_colour_edge():
    """Three cells of 4 label pixels: red | red blue blue blue | blue. The middle
    cell's scores are a tie; its boundary follows the colours, not the midpoint."""
    red, blue = (200, 40, 40), (40, 40, 200)
    tile = colour_row([red] * 4 + [red, blue, blue, blue] + [blue] * 4, 4)
    scores = torch.tensor([[1.0, 0.5, 0.0], [0.0, 0.5, 1.0]]).view(1, 2, 1, 3)
    index = torch.tensor([[0, 1]])
    guide = guide_cells(tile, stride=4, upsample=4)
    guided = labels_from_scores(scores, index, 4, guide)[0, 0]
    plain = labels_from_scores(scores, index, 4)[0, 0]
    assert guided.tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1]
    assert plain.tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]  # the midpoint


def test_guided_upsampling_of_one_colour_blends_like_distance():
    tile = colour_row([(180, 120, 160)] * 8, 4)
    scores = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 2, 1, 2)
    guide = guide_cells(tile, stride=4, upsample=4)
    labels = labels_from_scores(scores, torch.tensor([[0, 1]]), 4, guide)[0, 0]
    assert labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]


def test_guided_upsampling_survives_a_pixel_unlike_every_neighbour():
    """A black speck in white cells: its weights would all underflow without a floor."""
    tile = torch.full((1, 4, 8, 3), 255, dtype=torch.uint8)
    tile[0, 1, 5] = 0
    scores = torch.tensor([[0.2, 0.9], [0.8, 0.1]]).view(1, 2, 1, 2)
    guide = guide_cells(tile, stride=4, upsample=4)
    upsampled = guided_upsample(scores, guide, 4)
    assert torch.isfinite(upsampled).all()
    assert upsampled[0, :, 1, 5].argmax() == 0  # cell 1's own class wins the speck


def test_the_colour_guide_follows_crops_of_the_feature_grid():
    tiles = torch.randint(0, 256, (2, 16, 24, 3), dtype=torch.uint8)
    guide = guide_cells(tiles, stride=4, upsample=2)
    assert guide.shape == (2, 12, 4, 6)
    pixels = torch.nn.functional.pixel_shuffle(guide[..., 1:3, 2:5], 2)
    expected = torch.nn.functional.avg_pool2d(tiles.permute(0, 3, 1, 2).float() / 255, 2)
    assert torch.allclose(pixels, expected[..., 2:6, 4:10])


@pytest.mark.parametrize("mode", list(Mode))
def test_a_tiles_labels_do_not_depend_on_its_batch(mode):
    """Servers batch tiles of different jobs together; results must not change with that."""
    generator = torch.Generator().manual_seed(0)
    grids = torch.rand(5, 21, 12, 12, generator=generator) ** 2
    concepts = torch.rand(8, 21, generator=generator)
    together, index = concept_scores(grids, concepts, mode, components=4)
    for i in range(len(grids)):
        alone, alone_index = concept_scores(grids[i : i + 1], concepts, mode, components=4)
        assert torch.equal(alone[0], together[i]) and torch.equal(alone_index[0], index[i])
