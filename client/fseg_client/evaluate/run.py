"""``fseg evaluate``: score predicted label PNGs against annotated ground-truth masks.

Ground truth ``GT/NN.png`` is paired with ``PRED/NN.labels.png`` (preferred) or
``PRED/NN.png``. One contingency table is kept per image; the data set is scored on
their sum, and each image is scored with the cluster mapping fitted on that sum.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..atomic import write_json_atomic
from ..outputs import client_section, read_summary, summary_path
from .matching import MANY_TO_ONE, MAPPING_METHODS, EvaluationReport, summarise
from .metrics import NO_LABEL, contingency

PRED_SUFFIXES = (".labels.png", ".png")
LABEL_MODES = ("P", "L", "1", "I;16", "I")


class EvaluationError(Exception):
    """A problem with the inputs; its message is one sentence meant for the user."""


@dataclass(frozen=True)
class Pair:
    """A ground-truth mask and the prediction found for it.

    ``cell``: image pixels per prediction pixel, when the prediction's fseg
    summary gives a whole number (a label grid coarser than the image).
    """

    name: str
    gt: Path
    pred: Path
    cell: int | None = None


def read_label_png(path: Path, role: str = "label map") -> np.ndarray:
    """Read a label image: palette index for 'P' images, grey value for 'L' images.

    Colour images are refused, since their pixel values are not class ids.
    """
    try:
        with Image.open(path) as image:
            if image.mode not in LABEL_MODES:
                raise EvaluationError(
                    f"The {role} {path} has image mode {image.mode}, but it must be a palette "
                    "or greyscale PNG whose pixel values are class ids."
                )
            labels = np.asarray(image)
    except (OSError, SyntaxError, ValueError) as exc:
        raise EvaluationError(f"Cannot read the {role} {path} as an image ({exc}).") from None
    return labels.astype(np.uint8) if labels.dtype == bool else labels


def find_pairs(pred_dir: Path, gt_dir: Path) -> tuple[list[Pair], list[str]]:
    """Pair every ``*.png`` in ``gt_dir`` with its prediction; also return unpaired names."""
    for folder, role in ((gt_dir, "ground-truth"), (pred_dir, "prediction")):
        if not folder.is_dir():
            raise EvaluationError(f"The {role} folder {folder} does not exist.")
    masks = sorted(p for p in gt_dir.glob("*.png") if p.is_file())
    if not masks:
        raise EvaluationError(f"The ground-truth folder {gt_dir} contains no .png masks.")
    pairs, missing = [], []
    for mask in masks:
        name = mask.name[: -len(".png")]
        candidates = [pred_dir / (name + suffix) for suffix in PRED_SUFFIXES]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            missing.append(name)
        else:
            pairs.append(Pair(name, mask, found, _label_cell(found, summary_path(pred_dir, name))))
    if not pairs:
        raise EvaluationError(
            f"No prediction in {pred_dir} matches a mask in {gt_dir} "
            "(for GT NN.png the prediction must be NN.labels.png or NN.png)."
        )
    return pairs, missing


def _label_cell(pred: Path, summary_file: Path) -> int | None:
    """Pixels per label pixel from the fseg summary beside ``pred``; refuses a stale ``pred``.

    A run with other ``--outputs`` leaves an earlier run's label PNG in place;
    its summary then does not list it, and scoring it would score another
    request's labels.
    """
    summary = read_summary(summary_file)
    if summary is None:
        return None  # not an fseg folder, or no summary: nothing to check against
    written = client_section(summary).get("files")
    if isinstance(written, list) and pred.name not in written:
        raise EvaluationError(
            f"The prediction {pred} is left from an earlier run: {summary_file.name} describes "
            f"a run that wrote {', '.join(map(str, written)) or 'no file'}. Segment again "
            "with labels among --outputs, or remove it."
        )
    labels = summary.get("labels")
    cell = labels.get("downsample") if isinstance(labels, dict) else None
    if isinstance(cell, int | float) and cell >= 1 and float(cell).is_integer():
        return int(cell)
    return None


def align_prediction(
    gt_shape: tuple[int, int], pred: np.ndarray, pair: Pair
) -> tuple[np.ndarray, str | None]:
    """Bring ``pred`` to the ground truth's size, resizing only by an exact integer factor.

    Returns the prediction and, if it was resized, a note saying so. Any other size
    difference is an error: guessing an alignment would give silently wrong scores.
    """
    (gh, gw), (ph, pw) = gt_shape, pred.shape
    if (gh, gw) == (ph, pw):
        return pred, None
    cell = pair.cell
    if cell and cell > 1 and (ph, pw) == (-(-gh // cell), -(-gw // cell)):
        # An fseg label grid of cell x cell px squares from the top-left corner; the last
        # row and column reach past the image's edge and are cut there.
        note = (
            f"Enlarged prediction {pair.pred} from {pw}x{ph} to {gw}x{gh} px "
            f"({cell} x {cell} px per label, as its summary says)."
        )
        return np.repeat(np.repeat(pred, cell, axis=0), cell, axis=1)[:gh, :gw], note
    upscale = gh % ph == 0 and gw % pw == 0 and gh // ph == gw // pw
    downscale = ph % gh == 0 and pw % gw == 0 and ph // gh == pw // gw
    if not (upscale or downscale):
        raise EvaluationError(
            f"Sizes differ: ground truth {pair.gt} is {gw}x{gh} px but prediction {pair.pred} "
            f"is {pw}x{ph} px, and neither is an integer multiple of the other."
        )
    # Nearest neighbour by sampling each target pixel's centre in the source grid.
    rows = ((2 * np.arange(gh) + 1) * ph) // (2 * gh)
    cols = ((2 * np.arange(gw) + 1) * pw) // (2 * gw)
    note = f"Resized prediction {pair.pred} from {pw}x{ph} to {gw}x{gh} px (nearest neighbour)."
    return pred[np.ix_(rows, cols)], note


def evaluate_folders(
    pred_dir: Path | str,
    gt_dir: Path | str,
    *,
    ignore: Iterable[int] = (),
    method: str = MANY_TO_ONE,
) -> EvaluationReport:
    """Evaluate every prediction in ``pred_dir`` that has a mask in ``gt_dir``.

    Masks without a prediction are listed in ``report.missing``; resized predictions
    are listed in ``report.notes``.
    """
    if method not in MAPPING_METHODS:
        raise EvaluationError(f"Unknown mapping {method!r}; use {' or '.join(MAPPING_METHODS)}.")
    ignore = list(ignore)
    pairs, missing = find_pairs(Path(pred_dir), Path(gt_dir))
    images, notes = [], []
    for pair in pairs:
        gt = read_label_png(pair.gt, "ground truth")
        raw = read_label_png(pair.pred, "prediction")
        pred, note = align_prediction(gt.shape, raw, pair)
        info = {"name": pair.name, "gt": str(pair.gt), "pred": str(pair.pred)}
        if note:
            info["resized_from"] = [raw.shape[1], raw.shape[0]]
            notes.append(note)
        info["pixels_total"] = int(gt.size)
        images.append((info, contingency(gt, pred, ignore_gt=ignore)))
    report = summarise(images, method, ignore, missing, notes)
    if report.pooled.pixels == 0:
        raise EvaluationError(
            "No pixels left to evaluate: every pixel has an ignored ground-truth value "
            f"or the prediction {NO_LABEL} (no label)."
        )
    return report


def format_report(report: EvaluationReport) -> str:
    """Human-readable table of per-class scores followed by a one-line summary."""
    header = (
        f"{report.method} mapping: {len(report.mapping)} of {len(report.clusters)} clusters "
        f"mapped, {len(report.images)} images"
    )
    total = report.pixels_total
    scored = report.pooled.pixels
    coverage = (
        f"all {total:,} pixels scored"
        if scored == total
        else f"{scored:,} of {total:,} pixels scored ({scored / total:.1%}); the rest hold an "
        "ignored ground-truth value or no label"
    )
    return "\n".join([header, *report.pooled.table_lines(), coverage])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``fseg evaluate`` options to ``parser``."""
    parser.add_argument("--pred", required=True, help="folder of predicted label PNGs")
    parser.add_argument("--gt", required=True, help="folder of ground-truth label PNGs")
    parser.add_argument(
        "--ignore",
        type=int,
        action="append",
        default=[],
        metavar="V",
        help="ground-truth value to leave out (repeatable)",
    )
    parser.add_argument(
        "--mapping",
        choices=MAPPING_METHODS,
        default=MANY_TO_ONE,
        help="how clusters are mapped to classes (default: many-to-one)",
    )
    parser.add_argument("--out", help="JSON report path (default: PRED/evaluation.json)")
    parser.add_argument(
        "--allow-missing",
        action="store_true",
        help="do not fail when some masks have no prediction",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``fseg evaluate``: 0 on success, 1 if predictions are missing, 2 on bad input."""
    out = Path(args.out) if getattr(args, "out", None) else Path(args.pred) / "evaluation.json"
    try:
        report = evaluate_folders(
            args.pred,
            args.gt,
            ignore=getattr(args, "ignore", None) or [],
            method=getattr(args, "mapping", MANY_TO_ONE),
        )
    except EvaluationError as exc:
        print(f"fseg evaluate: {exc}", file=sys.stderr)
        return 2
    try:
        write_json_atomic(out, report.to_dict())
    except OSError as exc:
        print(f"fseg evaluate: Cannot write the report {out} ({exc.strerror}).", file=sys.stderr)
        return 2
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    print(format_report(report))
    print(f"Report written to {out}")
    if report.missing:
        print(
            f"fseg evaluate: {len(report.missing)} masks have no prediction: "
            f"{', '.join(report.missing)}.",
            file=sys.stderr,
        )
        if not getattr(args, "allow_missing", False):
            return 1
    return 0
