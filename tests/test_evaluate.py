"""Specification of ``fseg evaluate``: metrics, cluster mapping, folder I/O and the CLI."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fseg_client.evaluate import (
    NO_LABEL,
    add_arguments,
    ari,
    contingency,
    evaluate_arrays,
    format_report,
    linear_sum_assignment,
    merge_contingencies,
    nmi,
    run,
)

SHARED_MASKS = Path(__file__).resolve().parents[1].parent / "shared/data/wsss4luad-val/masks"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def save_png(path: Path, labels: np.ndarray, mode: str = "P") -> Path:
    """Write a label map as a palette ('P') or greyscale ('L') PNG."""
    image = Image.fromarray(labels.astype(np.uint8))
    if mode == "P":  # a colourful palette, so the grey value is not the pixel's colour
        image.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    assert image.mode == mode
    image.save(path)
    return path


def two_class_gt() -> np.ndarray:
    """A 6x6 mask: left half class 0, right half class 1."""
    gt = np.zeros((6, 6), dtype=np.uint8)
    gt[:, 3:] = 1
    return gt


# --- Hungarian algorithm -----------------------------------------------------------------


@pytest.mark.parametrize("maximize", [False, True])
def test_hungarian_matches_scipy_on_random_rectangular_matrices(maximize: bool) -> None:
    scipy_optimize = pytest.importorskip("scipy.optimize")
    rng = np.random.default_rng(0)
    for trial in range(300):
        rows, cols = rng.integers(1, 12, size=2)
        cost = rng.normal(size=(rows, cols)) if trial % 2 else rng.integers(0, 5, (rows, cols))
        want_r, want_c = scipy_optimize.linear_sum_assignment(cost, maximize=maximize)
        got_r, got_c = linear_sum_assignment(cost, maximize=maximize)
        assert len(got_r) == min(rows, cols)
        assert len(set(got_r.tolist())) == len(got_r) and len(set(got_c.tolist())) == len(got_c)
        assert np.all(np.diff(got_r) > 0), "rows come back sorted, as scipy returns them"
        assert cost[got_r, got_c].sum() == pytest.approx(cost[want_r, want_c].sum())


def test_hungarian_accepts_empty_matrices_and_refuses_nan() -> None:
    rows, cols = linear_sum_assignment(np.zeros((0, 3)))
    assert rows.size == 0 and cols.size == 0
    with pytest.raises(ValueError):
        linear_sum_assignment(np.array([[1.0, np.nan]]))


# --- mapping-free metrics ---------------------------------------------------------------


def test_nmi_and_ari_match_sklearn_on_random_labels() -> None:
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    for trial in range(60):
        n = int(rng.integers(1, 2000))
        gt = rng.integers(0, rng.integers(1, 7), n)
        # Half the trials make the prediction depend on the truth, so scores spread out.
        pred = rng.integers(0, rng.integers(1, 9), n)
        if trial % 2:
            pred = np.where(rng.random(n) < 0.7, gt * 3 % 5, pred)
        table = contingency(gt, pred, ignore_pred=()).table
        assert nmi(table) == pytest.approx(sk.normalized_mutual_info_score(gt, pred), abs=1e-9)
        assert ari(table) == pytest.approx(sk.adjusted_rand_score(gt, pred), abs=1e-9)


def test_nmi_and_ari_limit_cases_follow_sklearn() -> None:
    one_each = np.array([[10]])
    assert nmi(one_each) == 1.0 and ari(one_each) == 1.0
    independent = np.array([[5, 5], [5, 5]])
    assert nmi(independent) == 0.0
    assert ari(independent) < 0, "agreement below chance is negative"


# --- contingency tables -----------------------------------------------------------------


def test_contingency_leaves_out_ignored_gt_values_and_unlabelled_predictions() -> None:
    gt = np.array([[0, 0, 1, 1], [2, 2, 1, 1]])
    pred = np.array([[5, NO_LABEL, 6, 6], [5, 5, 7, 6]])
    cont = contingency(gt, pred, ignore_gt=[2])
    assert cont.gt_ids.tolist() == [0, 1]
    assert cont.pred_ids.tolist() == [5, 6, 7]
    assert cont.table.tolist() == [[1, 0, 0], [0, 3, 1]]
    assert cont.total == 5


def test_pooling_tables_equals_counting_all_pixels_at_once() -> None:
    rng = np.random.default_rng(2)
    gts = [rng.integers(0, k, (20, 30)) for k in (2, 4, 3)]
    preds = [rng.integers(3, k + 5, (20, 30)) for k in (1, 6, 9)]
    pooled = merge_contingencies(contingency(g, p) for g, p in zip(gts, preds, strict=True))
    whole = contingency(np.concatenate(gts), np.concatenate(preds))
    assert pooled.gt_ids.tolist() == whole.gt_ids.tolist()
    assert pooled.pred_ids.tolist() == whole.pred_ids.tolist()
    assert np.array_equal(pooled.table, whole.table)


# --- mapped metrics ---------------------------------------------------------------------


@pytest.mark.parametrize("method", ["many-to-one", "hungarian"])
def test_permuted_cluster_ids_score_perfectly_under_both_mappings(method: str) -> None:
    gt = np.random.default_rng(3).integers(0, 4, (40, 40))
    pred = np.array([7, 2, 9, 0])[gt]
    pooled = evaluate_arrays([("a", gt, pred)], method=method).pooled
    assert pooled.miou == 1.0 and pooled.mean_dice == 1.0 and pooled.pixel_accuracy == 1.0
    assert pooled.nmi == pytest.approx(1.0) and pooled.ari == pytest.approx(1.0)


def test_splitting_a_class_is_free_under_many_to_one_but_costs_under_hungarian() -> None:
    gt = two_class_gt()
    pred = gt.copy()
    pred[:3, 3:] = 2  # class 1 split over clusters 1 and 2
    many = evaluate_arrays([("a", gt, pred)], method="many-to-one")
    hung = evaluate_arrays([("a", gt, pred)], method="hungarian")
    assert many.mapping == {0: 0, 1: 1, 2: 1}
    assert many.pooled.miou == 1.0 and many.pooled.pixel_accuracy == 1.0
    assert len(hung.mapping) == 2, "one of the two halves stays unmatched"
    assert hung.pooled.pixel_accuracy == pytest.approx(27 / 36)
    assert hung.pooled.per_class[1].iou == pytest.approx(0.5)
    assert hung.pooled.miou == pytest.approx(0.75)


def test_iou_and_dice_on_a_hand_counted_example() -> None:
    gt = two_class_gt()
    pred = gt.copy()
    pred[0, :3] = 1  # three class-0 pixels predicted as class 1
    scores = evaluate_arrays([("a", gt, pred)], method="hungarian").pooled
    assert scores.per_class[0].iou == pytest.approx(15 / 18)
    assert scores.per_class[1].iou == pytest.approx(18 / 21)
    assert scores.per_class[0].dice == pytest.approx(2 * 15 / (18 + 15))
    assert scores.per_class[1].dice == pytest.approx(2 * 18 / (18 + 21))
    assert scores.miou == pytest.approx((15 / 18 + 18 / 21) / 2)
    assert scores.pixel_accuracy == pytest.approx(33 / 36)


def test_per_image_scores_use_the_pooled_mapping_and_count_classes_only_predicted() -> None:
    gt_a, pred_a = two_class_gt(), two_class_gt() + 4
    gt_b = np.zeros((6, 6), dtype=np.uint8)
    pred_b = np.full((6, 6), 4, dtype=np.uint8)
    pred_b[0, 0] = 5  # cluster 5 means class 1, which image b does not contain
    report = evaluate_arrays([("a", gt_a, pred_a), ("b", gt_b, pred_b)])
    assert report.mapping == {4: 0, 5: 1}
    image_b = report.images[1]
    assert image_b["per_class"]["1"]["iou"] == 0.0
    assert image_b["miou"] == pytest.approx((35 / 36 + 0.0) / 2)


def test_ignored_values_and_unlabelled_pixels_do_not_count() -> None:
    gt = two_class_gt()
    gt[:, :1] = 9  # an ignored border class
    pred = two_class_gt()
    pred[:, :1] = 1  # wrong, but only where the truth is ignored
    pred[5, :] = NO_LABEL
    report = evaluate_arrays([("a", gt, pred)], ignore=[9])
    assert report.pooled.pixel_accuracy == 1.0
    assert report.pooled.pixels == 5 * 5
    assert 9 not in report.pooled.per_class
    assert "25 of 36 pixels scored (69.4%)" in format_report(report)


# --- folders and the CLI ----------------------------------------------------------------


def folder_pair(tmp_path: Path) -> tuple[Path, Path]:
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    return gt_dir, pred_dir


def test_cli_writes_json_report_and_prefers_labels_png(tmp_path: Path, capsys) -> None:
    gt_dir, pred_dir = folder_pair(tmp_path)
    save_png(gt_dir / "01.png", two_class_gt(), "P")
    save_png(pred_dir / "01.labels.png", 1 - two_class_gt(), "L")
    save_png(pred_dir / "01.png", np.zeros((6, 6)), "L")  # must lose to 01.labels.png
    assert run(parse("--pred", str(pred_dir), "--gt", str(gt_dir))) == 0
    report = json.loads((pred_dir / "evaluation.json").read_text())
    assert report["mapping"]["clusters"] == {"0": 1, "1": 0}
    assert report["pooled"]["miou"] == 1.0
    assert report["images"][0]["pred"].endswith("01.labels.png")
    assert report["counts"]["images"] == 1
    assert [p.name for p in pred_dir.iterdir() if p.suffix == ".tmp"] == []
    out = capsys.readouterr().out
    assert "mIoU 1.000" in out and "class" in out


def test_cli_ignore_option_is_repeatable(tmp_path: Path) -> None:
    gt_dir, pred_dir = folder_pair(tmp_path)
    gt = np.array([[0, 1, 2, 3]] * 4)
    save_png(gt_dir / "a.png", gt)
    save_png(pred_dir / "a.png", np.array([[0, 5, 6, 0]] * 4))
    out = tmp_path / "r.json"
    assert (
        run(
            parse(
                "--pred",
                str(pred_dir),
                "--gt",
                str(gt_dir),
                "--out",
                str(out),
                "--ignore",
                "2",
                "--ignore",
                "3",
            )
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert report["ignore"] == [2, 3]
    assert set(report["pooled"]["per_class"]) == {"0", "1"}
    assert report["pooled"]["pixel_accuracy"] == 1.0


def test_missing_predictions_fail_the_run_unless_allowed(tmp_path: Path, capsys) -> None:
    gt_dir, pred_dir = folder_pair(tmp_path)
    save_png(gt_dir / "a.png", two_class_gt())
    save_png(gt_dir / "b.png", two_class_gt())
    save_png(pred_dir / "a.png", two_class_gt())
    assert run(parse("--pred", str(pred_dir), "--gt", str(gt_dir))) == 1
    assert "no prediction: b" in capsys.readouterr().err
    assert run(parse("--pred", str(pred_dir), "--gt", str(gt_dir), "--allow-missing")) == 0
    assert json.loads((pred_dir / "evaluation.json").read_text())["missing"] == ["b"]


def test_integer_multiple_predictions_are_upsampled_and_reported(tmp_path: Path, capsys) -> None:
    gt_dir, pred_dir = folder_pair(tmp_path)
    save_png(gt_dir / "a.png", np.kron([[0, 1], [2, 3]], np.ones((4, 4))))
    save_png(pred_dir / "a.png", np.array([[0, 1], [2, 3]]))
    assert run(parse("--pred", str(pred_dir), "--gt", str(gt_dir))) == 0
    assert "Resized prediction" in capsys.readouterr().err
    report = json.loads((pred_dir / "evaluation.json").read_text())
    assert report["images"][0]["resized_from"] == [2, 2]
    assert report["pooled"]["miou"] == 1.0


def test_predictions_at_an_integer_multiple_of_the_size_are_downsampled(tmp_path: Path) -> None:
    gt_dir, pred_dir = folder_pair(tmp_path)
    gt = np.array([[0, 1, 1], [2, 2, 3]])
    save_png(gt_dir / "a.png", gt)
    save_png(pred_dir / "a.png", np.kron(gt, np.ones((3, 3))))
    assert run(parse("--pred", str(pred_dir), "--gt", str(gt_dir))) == 0
    report = json.loads((pred_dir / "evaluation.json").read_text())
    assert report["images"][0]["resized_from"] == [9, 6]
    assert report["pooled"]["pixel_accuracy"] == 1.0


def test_a_label_grid_coarser_than_the_image_is_enlarged_by_its_summarys_cell(
    tmp_path: Path,
) -> None:
    # A 10 x 7 px image segmented at 4 px per label: fseg writes ceil(7/4) x ceil(10/4) labels
    # and says so in the summary; each label covers 4 x 4 px from the top-left corner.
    gt_dir, pred_dir = folder_pair(tmp_path)
    labels = np.array([[0, 1, 1], [2, 2, 3]])
    gt = np.kron(labels, np.ones((4, 4), int))[:7, :10]
    save_png(gt_dir / "a.png", gt)
    save_png(pred_dir / "a.labels.png", labels)
    summary = {"labels": {"downsample": 4.0}, "client": {"files": ["a.labels.png"]}}
    (pred_dir / "a.json").write_text(json.dumps(summary))
    assert run(parse("--pred", str(pred_dir), "--gt", str(gt_dir))) == 0
    report = json.loads((pred_dir / "evaluation.json").read_text())
    assert report["images"][0]["resized_from"] == [3, 2]
    assert report["pooled"]["pixel_accuracy"] == 1.0


def test_a_label_png_the_summary_does_not_list_is_refused_as_stale(tmp_path: Path, capsys) -> None:
    # A later run with --outputs geojson,overlay left the earlier run's labels in place.
    gt_dir, pred_dir = folder_pair(tmp_path)
    save_png(gt_dir / "a.png", two_class_gt())
    save_png(pred_dir / "a.labels.png", two_class_gt())
    summary = {"client": {"files": ["a.geojson", "a.overlay.png"]}}
    (pred_dir / "a.json").write_text(json.dumps(summary))
    assert run(parse("--pred", str(pred_dir), "--gt", str(gt_dir))) == 2
    err = one_line_error(capsys)
    assert "is left from an earlier run" in err and "a.geojson, a.overlay.png" in err


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_other_size_mismatches_are_refused_naming_both_files(tmp_path: Path, capsys) -> None:
    gt_dir, pred_dir = folder_pair(tmp_path)
    save_png(gt_dir / "a.png", np.zeros((6, 6)))
    save_png(pred_dir / "a.png", np.zeros((4, 6)))
    assert run(parse("--pred", str(pred_dir), "--gt", str(gt_dir))) == 2
    err = one_line_error(capsys)
    assert "6x6" in err and "6x4" in err
    assert str(gt_dir / "a.png") in err and str(pred_dir / "a.png") in err


@pytest.mark.parametrize("problem", ["no gt folder", "no pred folder", "empty gt", "no pairs"])
def test_bad_folders_give_exit_code_2_and_one_sentence(tmp_path: Path, capsys, problem) -> None:
    gt_dir, pred_dir = folder_pair(tmp_path)
    if problem != "empty gt":
        save_png(gt_dir / "a.png", two_class_gt())
    if problem == "no gt folder":
        gt_dir = tmp_path / "nowhere"
    if problem == "no pred folder":
        pred_dir = tmp_path / "nowhere"
    assert run(parse("--pred", str(pred_dir), "--gt", str(gt_dir))) == 2
    assert one_line_error(capsys).startswith("fseg evaluate: ")


def test_rgb_ground_truth_and_unreadable_pngs_are_refused(tmp_path: Path, capsys) -> None:
    gt_dir, pred_dir = folder_pair(tmp_path)
    Image.new("RGB", (6, 6)).save(gt_dir / "a.png")
    save_png(pred_dir / "a.png", two_class_gt())
    assert run(parse("--pred", str(pred_dir), "--gt", str(gt_dir))) == 2
    assert "RGB" in one_line_error(capsys)
    save_png(gt_dir / "a.png", two_class_gt())
    (pred_dir / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert run(parse("--pred", str(pred_dir), "--gt", str(gt_dir))) == 2
    assert "Cannot read" in one_line_error(capsys)


def test_client_evaluation_imports_no_scipy_sklearn_or_torch() -> None:
    import fseg_client.evaluate as evaluate

    client_root = Path(evaluate.__file__).resolve().parents[2]
    code = (
        "import sys, fseg_client.evaluate\n"
        "heavy = {'scipy', 'sklearn', 'torch'} & {m.split('.')[0] for m in sys.modules}\n"
        "assert not heavy, heavy\n"
    )
    env = {**os.environ, "PYTHONPATH": str(client_root)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# --- real annotated masks -----------------------------------------------------------------

needs_shared = pytest.mark.skipif(
    not SHARED_MASKS.is_dir(), reason=f"shared WSSS4LUAD masks not found at {SHARED_MASKS}"
)


@needs_shared
@pytest.mark.parametrize("method", ["many-to-one", "hungarian"])
def test_real_masks_scored_against_themselves_are_perfect(tmp_path: Path, method: str) -> None:
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    swap = np.array([2, 3, 0, 1, *range(4, 256)], dtype=np.uint8)
    for mask in sorted(SHARED_MASKS.glob("*.png")):
        labels = np.asarray(Image.open(mask))
        save_png(pred_dir / f"{mask.stem}.labels.png", swap[labels], "L")  # relabelled copy
    out = tmp_path / "report.json"
    assert (
        run(
            parse(
                "--pred",
                str(pred_dir),
                "--gt",
                str(SHARED_MASKS),
                "--mapping",
                method,
                "--out",
                str(out),
            )
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert report["counts"]["images"] == len(list(SHARED_MASKS.glob("*.png")))
    assert report["mapping"]["clusters"] == {"0": 2, "1": 3, "2": 0, "3": 1}
    pooled = report["pooled"]
    assert pooled["miou"] == 1.0 and pooled["pixel_accuracy"] == 1.0
    assert pooled["nmi"] == pytest.approx(1.0) and pooled["ari"] == pytest.approx(1.0)
    assert all(image["miou"] == 1.0 for image in report["images"])


@needs_shared
def test_real_masks_with_background_ignored_and_merged_classes(tmp_path: Path) -> None:
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    for mask in sorted(SHARED_MASKS.glob("*.png")):
        labels = np.asarray(Image.open(mask))
        save_png(pred_dir / mask.name, np.where(labels == 2, 0, labels), "L")  # normal -> tumour
    out = tmp_path / "report.json"
    assert (
        run(
            parse(
                "--pred",
                str(pred_dir),
                "--gt",
                str(SHARED_MASKS),
                "--ignore",
                "3",
                "--out",
                str(out),
            )
        )
        == 0
    )
    pooled = json.loads(out.read_text())["pooled"]
    assert set(pooled["per_class"]) == {"0", "1", "2"}
    assert pooled["per_class"]["2"]["iou"] == 0.0
    assert pooled["per_class"]["1"]["iou"] == 1.0
    assert pooled["miou"] < 0.8 and pooled["nmi"] < 1.0 and pooled["ari"] < 1.0
