"""Choosing the windows that typify a concept: best first, spread over inputs, seeded."""

from __future__ import annotations

import numpy as np

from fseg_server.atlas.windows import (
    RELATIVE_FLOOR,
    CandidatePool,
    Candidates,
    choose_windows,
    window_shares,
)


def pool_of(inputs: list[int], shares: list[list[float]]) -> Candidates:
    boxes = np.array([[10 * i, 0, 8, 8] for i in range(len(inputs))])
    return Candidates(np.array(inputs), boxes, np.array(shares, np.float32))


def test_windows_come_from_every_input_where_the_concept_is_strong():
    # Input 0 holds the five best windows of concept 0; inputs 1 and 2 hold good ones too.
    shares = [[0.99, 0.01]] * 5 + [[0.9, 0.1]] * 2 + [[0.8, 0.2]] * 2
    pool = pool_of([0] * 5 + [1] * 2 + [2] * 2, shares)
    chosen = choose_windows(pool, 0, 6, seed=0)
    assert len(chosen) == 6
    assert {int(pool.inputs[r]) for r in chosen[:3]} == {0, 1, 2}
    assert chosen[0] < 5  # the best window leads


def test_a_faint_input_gives_way_to_better_windows_of_another():
    faint = 0.99 * RELATIVE_FLOOR * 0.9
    pool = pool_of([0, 0, 0, 1], [[0.99, 0], [0.98, 0], [0.97, 0], [faint, 1 - faint]])
    assert choose_windows(pool, 0, 3, seed=0) == [0, 1, 2]
    assert choose_windows(pool, 0, 4, seed=0)[-1] == 3  # it still fills a place left over


def test_the_choice_is_the_same_for_the_same_seed_and_breaks_ties_by_it():
    pool = pool_of([0] * 40, [[0.5, 0.5]] * 40)  # every window ties
    assert choose_windows(pool, 0, 12, seed=3) == choose_windows(pool, 0, 12, seed=3)
    assert choose_windows(pool, 0, 12, seed=3) != choose_windows(pool, 0, 12, seed=4)


def test_a_concept_with_no_weight_anywhere_has_no_windows():
    pool = pool_of([0, 1], [[1.0, 0.0], [1.0, 0.0]])
    assert choose_windows(pool, 1, 12, seed=0) == []


def test_pruning_keeps_each_inputs_best_windows_of_every_concept():
    rng = np.random.default_rng(0)
    pool = CandidatePool(k=3, count=4, limit=30)
    given = {i: rng.random((20, 3)).astype(np.float32) for i in range(3)}
    for input_index, shares in given.items():
        pool.add(input_index, np.zeros((20, 4), np.int64), shares)
    kept = pool.candidates()
    assert len(kept) < 60  # pruned when it passed 30 rows
    for input_index, shares in given.items():
        mine = kept.shares[kept.inputs == input_index]
        for concept in range(3):
            best = np.sort(shares[:, concept])[-4:]
            assert set(best.tolist()) <= set(mine[:, concept].tolist())


def test_window_shares_average_over_tissue_cells_and_skip_windows_mostly_on_glass():
    shares = np.zeros((2, 4, 4), np.float32)
    shares[0, :, :2] = 1.0  # concept 0 on the left half
    shares[1, :, 2:] = 1.0
    tissue = np.ones((4, 4), bool)
    tissue[2:, 2:] = False  # the bottom-right quarter is glass
    cells = np.array([[0, 0, 2, 2], [0, 0, 4, 4], [2, 2, 4, 4]])
    means, useful = window_shares(shares, tissue, cells)
    assert np.allclose(means[0], [1, 0])
    assert np.allclose(means[1], [8 / 12, 4 / 12])  # 12 tissue cells, 8 of concept 0
    assert useful.tolist() == [True, True, False]
