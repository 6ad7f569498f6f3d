"""The pictures of a result: the label PNG (exact indices) and the overlay (for eyes)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from fseg_server.concepts.bank import ConceptClass
from fseg_server.pipeline.canvas import NODATA
from fseg_server.pipeline.render import OVERLAY_ALPHA, label_png, overlay_png

CLASSES = [ConceptClass("Tumour", (200, 30, 30)), ConceptClass("Stroma", (30, 200, 30))]


def decode(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def bare_overlay(thumbnail: np.ndarray, step: float, labels: np.ndarray, cell: float) -> np.ndarray:
    """The overlay without its legend, as ints."""
    picture = overlay_png(thumbnail, step, labels, cell, CLASSES, legend=False)
    return np.asarray(decode(picture)).astype(int)


def legend_panel(overlay: np.ndarray, width: int) -> tuple[np.ndarray, set[tuple[int, ...]]]:
    """The legend's pixels (right of a picture ``width`` px wide), and their colours."""
    panel = overlay[:, width:].reshape(-1, 3)
    return panel, {tuple(c) for c in panel.tolist()}


def test_the_overlay_tints_labelled_pixels_and_leaves_glass_untouched():
    thumbnail = np.full((40, 60, 3), (240, 230, 250), np.uint8)
    labels = np.full((4, 6), NODATA, np.uint8)  # each label covers 10 x 10 thumbnail pixels
    labels[0, 0], labels[3, 5] = 0, 1
    overlay = bare_overlay(thumbnail, 1.0, labels, 10.0)
    assert overlay.shape == thumbnail.shape
    for (row, col), colour in (((5, 5), (200, 30, 30)), ((35, 55), (30, 200, 30))):
        expected = (1 - OVERLAY_ALPHA) * thumbnail[row, col] + OVERLAY_ALPHA * np.array(colour)
        assert np.abs(overlay[row, col].astype(float) - expected).max() <= 1
    assert (overlay[15:25, 15:45] == thumbnail[15:25, 15:45]).all()


def test_the_overlay_puts_each_label_on_its_own_area_of_the_thumbnail():
    # Level-0 slide 60 x 60 px, thumbnail at downsample 2, labels at 20 px per label.
    thumbnail = np.full((30, 30, 3), 255, np.uint8)
    labels = np.array([[0, 1, NODATA]] * 3, np.uint8)  # three vertical bands
    overlay = bare_overlay(thumbnail, 2.0, labels, 20.0)
    reddish = overlay[..., 0] > overlay[..., 1] + 20
    greenish = overlay[..., 1] > overlay[..., 0] + 20
    assert reddish[:, :10].all() and not reddish[:, 10:].any()
    assert greenish[:, 10:20].all() and not greenish[:, :10].any() and not greenish[:, 20:].any()


def test_a_label_grid_overhanging_the_slide_is_not_squeezed_onto_it():
    # Whole edge cells make the grid 40 level-0 px wide for a 30 px slide:
    # label column 2 covers slide x 20 to 30, column 3 lies beyond the slide.
    thumbnail = np.full((30, 30, 3), 255, np.uint8)
    labels = np.array([[NODATA, NODATA, 0, 1]] * 4, np.uint8)
    overlay = bare_overlay(thumbnail, 1.0, labels, 10.0)
    tinted = overlay.sum(axis=2) < 3 * 255
    assert tinted[:, 20:].all() and not tinted[:, :20].any()
    assert not (overlay[..., 1] > overlay[..., 0]).any()  # class 1 is off the slide


def test_the_label_png_keeps_class_indices_exactly():
    labels = np.array([[0, 1], [NODATA, 1]], np.uint8)
    image = decode(label_png(labels, CLASSES))
    assert image.mode == "P"
    assert (np.asarray(image) == labels).all()
    palette = np.array(image.getpalette()[: 3 * 2]).reshape(2, 3)
    assert palette.tolist() == [[200, 30, 30], [30, 200, 30]]
    assert image.info["transparency"] == NODATA


def test_the_legend_names_each_class_present_beside_the_picture():
    thumbnail = np.full((40, 60, 3), 240, np.uint8)
    labels = np.full((4, 6), NODATA, np.uint8)
    labels[:, :3] = 0  # Tumour only; Stroma is absent and gets no row
    plain = bare_overlay(thumbnail, 1.0, labels, 10.0)
    overlay = np.asarray(decode(overlay_png(thumbnail, 1.0, labels, 10.0, CLASSES)))
    assert overlay.shape[0] >= 40 and overlay.shape[1] > 60 + 100
    assert (overlay[:40, :60] == plain).all()  # the picture itself is untouched
    panel, colours = legend_panel(overlay, 60)
    assert (200, 30, 30) in colours and (30, 200, 30) not in colours
    assert (panel.sum(axis=1) < 100).sum() > 50  # dark pixels: the text


def test_the_legend_takes_the_shares_it_is_given():
    # The pipeline gives the polygons' shares (what QuPath shows), which --min-area
    # may have moved away from the labels': here every labelled cell is Tumour,
    # but the polygons are all Stroma.
    thumbnail = np.full((40, 60, 3), 240, np.uint8)
    labels = np.zeros((4, 6), np.uint8)
    picture = overlay_png(thumbnail, 1.0, labels, 10.0, CLASSES, shares=[0.0, 1.0])
    _, colours = legend_panel(np.asarray(decode(picture)), 60)
    assert (30, 200, 30) in colours and (200, 30, 30) not in colours
