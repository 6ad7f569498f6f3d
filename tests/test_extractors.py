"""Feature extractors: the registry, the stain extractor, padding, and weight loading.

No network here, so the real checkpoint-loading code is exercised by building
each architecture with random weights, saving them in the model authors' key
layout, and loading them back through the same path a user's file takes.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fseg_server.errors import InvalidInput, NotFound
from fseg_server.extract import available_extractors, create_extractor, extractor_spec
from fseg_server.extract.vit import prov_gigapath, uni


def test_registry_offers_every_required_extractor():
    names = available_extractors()
    for required in ("uni", "prov-gigapath", "resnet50", "stain", "timm:<architecture>"):
        assert required in names


def test_specs_declare_dimension_stride_and_resolution():
    assert (extractor_spec("uni").feature_dim, extractor_spec("uni").stride) == (1024, 16)
    assert extractor_spec("prov-gigapath").feature_dim == 1536
    assert (extractor_spec("resnet50").feature_dim, extractor_spec("resnet50").stride) == (1024, 16)
    stain = extractor_spec("stain")
    assert stain.stride == 4 and stain.mpp == 1.0 and stain.weights == "none needed"


def test_unknown_extractor_is_refused_with_the_available_names():
    with pytest.raises(NotFound, match=r"available: .*stain"):
        create_extractor("unet-from-mars")


@pytest.mark.parametrize("height,width", [(1, 1), (37, 53), (64, 64), (100, 129)])
def test_stain_features_are_non_negative_and_cover_odd_sizes(height, width):
    extractor = create_extractor("stain")
    images = torch.randint(0, 256, (2, 3, height, width), dtype=torch.uint8)
    features = extractor(images)
    stride = extractor.spec.stride
    assert features.shape == (
        2,
        extractor.spec.feature_dim,
        -(-height // stride),
        -(-width // stride),
    )
    assert bool((features >= 0).all())


def test_padding_replicates_edges_so_a_crop_matches_the_whole():
    """Cells fully inside an odd-sized input equal those of the same pixels in a larger input."""
    extractor = create_extractor("stain")
    big = torch.randint(0, 256, (1, 3, 96, 96), dtype=torch.uint8)
    uniform = torch.full((1, 3, 45, 45), 180, dtype=torch.uint8)
    padded = extractor(uniform)
    exact = extractor(torch.full((1, 3, 48, 48), 180, dtype=torch.uint8))
    assert torch.allclose(padded, exact, atol=1e-6)  # replication, not zeros
    assert extractor(big).shape[-1] == 24


def test_stain_separates_haematoxylin_from_eosin():
    extractor = create_extractor("stain")
    purple = torch.tensor([110, 50, 150], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 32, 32)
    pink = torch.tensor([235, 150, 200], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 32, 32)
    h_purple, e_purple = extractor(purple)[0, :2].mean(dim=(1, 2))
    h_pink, e_pink = extractor(pink)[0, :2].mean(dim=(1, 2))
    assert h_purple > h_pink and h_purple / e_purple > h_pink / e_pink


def test_stain_refuses_weights():
    with pytest.raises(InvalidInput, match="no weights"):
        create_extractor("stain", "some.pth")


def test_stain_context_sees_glass_a_gland_away():
    """Same pink sheet for 24 px around the centre; glass beyond that in one image only."""
    sheet = torch.tensor([200, 120, 170], dtype=torch.uint8).view(1, 3, 1, 1)
    solid = sheet.expand(1, 3, 96, 96).clone()
    amid_glass = torch.full((1, 3, 96, 96), 245, dtype=torch.uint8)
    amid_glass[..., 24:72, 24:72] = sheet
    extractor = create_extractor("stain")
    centre = 12  # the cell over px 48 to 51, 4 px each
    solid_cell = extractor(solid)[0, :, centre, centre]
    glass_cell = extractor(amid_glass)[0, :, centre, centre]
    narrow = 11 + 2 * 6  # the cell's own channels and its 8 and 20 µm context
    assert torch.allclose(solid_cell[:narrow], glass_cell[:narrow])
    assert (glass_cell[narrow:] - solid_cell[narrow:]).abs().max() > 0.05


def test_a_built_in_extractor_gets_a_new_fingerprint_when_its_recipe_changes():
    """Feature caches key on it, and stain has no weights to tell its versions apart."""
    before = create_extractor("stain").weights_fingerprint()
    assert create_extractor("stain").weights_fingerprint() == before
    changed = create_extractor("stain")
    changed.spec = dataclasses.replace(changed.spec, feature_dim=changed.spec.feature_dim + 1)
    assert changed.weights_fingerprint() != before


def _save(state: dict, path: Path) -> Path:
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path


@pytest.mark.slow
def test_uni_loads_a_full_size_checkpoint_in_mahmoodlab_layout(tmp_path):
    """UNI's published pytorch_model.bin is a timm ViT-L/16 state dict without a head."""
    source = uni("random")
    state = {k: v.half() for k, v in source.vit.state_dict().items()}
    assert "blocks.23.ls2.gamma" in state and not any(k.startswith("head.") for k in state)
    loaded = uni(_save(state, tmp_path / "pytorch_model.bin"))
    assert loaded.weights_state.startswith("loaded from")
    probe = "blocks.11.attn.qkv.weight"
    assert torch.equal(loaded.vit.state_dict()[probe], state[probe].float())
    features = loaded(torch.randint(0, 256, (1, 3, 64, 80), dtype=torch.uint8))
    assert features.shape == (1, 1024, 4, 5) and bool((features >= 0).all())


def test_prov_gigapath_full_architecture_has_the_published_layout():
    """Built on the meta device (no memory): ViT-g, 40 blocks, 1536 channels, SwiGLU MLP."""
    with torch.device("meta"):
        model = prov_gigapath("random")
    state = model.vit.state_dict()
    assert state["pos_embed"].shape == (1, 197, 1536)  # 224-px grid of 16-px patches + class
    assert state["patch_embed.proj.weight"].shape == (1536, 3, 16, 16)
    assert state["blocks.39.mlp.fc1.weight"].shape == (8192, 1536)  # packed SwiGLU
    assert state["blocks.39.mlp.fc2.weight"].shape == (1536, 4096)
    assert "blocks.39.ls1.gamma" in state


def test_prov_gigapath_loads_its_layout_through_the_same_path(tmp_path):
    """Full size is 4.5 GB; a 2-block model with the same key layout uses the same loader."""
    source = prov_gigapath("random", depth=2)
    path = _save(source.vit.state_dict(), tmp_path / "pytorch_model.bin")
    loaded = prov_gigapath(path, depth=2)
    assert loaded.weights_state == f"loaded from {path}"
    images = torch.randint(0, 256, (1, 3, 48, 64), dtype=torch.uint8)
    assert torch.allclose(loaded(images), source(images), atol=1e-5)


def test_resnet50_loads_a_torchvision_checkpoint_with_its_classifier(tmp_path):
    import torchvision

    reference = torchvision.models.resnet50(weights=None)
    path = _save(reference.state_dict(), tmp_path / "resnet50-0676ba61.pth")
    loaded = create_extractor("resnet50", path)
    assert torch.equal(loaded.resnet.layer3[0].conv1.weight, reference.layer3[0].conv1.weight)
    images = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
    assert loaded(images).shape == (1, 1024, 4, 4)


@pytest.mark.parametrize("variant", ["old-format", "fine-tuned-head", "headless"])
def test_resnet50_needs_only_the_layers_it_runs(tmp_path, variant):
    """Checkpoints without batch-norm step counters (older torchvision files), with
    another classifier or with no head and no layer4 all carry what layer3 needs."""
    import torchvision

    reference = torchvision.models.resnet50(weights=None, num_classes=2)
    state = reference.state_dict()
    if variant == "old-format":
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    if variant == "headless":
        state = {k: v for k, v in state.items() if not k.startswith(("fc.", "layer4."))}
    loaded = create_extractor("resnet50", _save(state, tmp_path / "resnet50.pth"))
    assert torch.equal(loaded.resnet.layer3[5].conv3.weight, reference.layer3[5].conv3.weight)


def test_generic_timm_model_loads_safetensors(tmp_path):
    source = create_extractor("timm:resnet18", "random")
    path = _save(source.net.state_dict(), tmp_path / "resnet18.safetensors")
    loaded = create_extractor("timm:resnet18", path)
    images = torch.randint(0, 256, (1, 3, 70, 70), dtype=torch.uint8)
    assert loaded.spec.stride == 16 and loaded.spec.feature_dim == 256
    assert torch.allclose(loaded(images), source(images))


@pytest.mark.parametrize("architecture", ["convnext_atto", "efficientnet_b0"])
def test_a_timm_checkpoint_with_its_classifier_loads_for_a_cnn_stage(tmp_path, architecture):
    """The state dict exactly as timm saves a whole model (stage names, head and all)."""
    import timm

    reference = timm.create_model(architecture, pretrained=False)
    path = _save(reference.state_dict(), tmp_path / f"{architecture}.safetensors")
    loaded = create_extractor(f"timm:{architecture}", path)
    for name, tensor in loaded.net.state_dict().items():
        assert torch.equal(tensor, reference.state_dict()[name]), name


def test_generic_timm_vit_gives_patch_tokens():
    extractor = create_extractor("timm:vit_small_patch16_224", "random")
    out = extractor(torch.randint(0, 256, (1, 3, 32, 48), dtype=torch.uint8))
    assert out.shape == (1, 384, 2, 3) and bool((out >= 0).all())


def test_a_14_px_patch_vit_gets_whole_cells_of_context():
    # A margin that is not whole cells would shift every label by the remainder.
    spec = create_extractor("timm:vit_small_patch14_reg4_dinov2", "random").spec
    assert spec.stride == 14
    assert spec.margin % 14 == 0 and spec.tile_size % 14 == 0


def test_a_cnn_stage_needs_none_of_the_stages_after_it():
    # EfficientFormer's last stage attends over a fixed 7 x 7 grid; its stride-16
    # stage works on any input, and the later stages are never run.
    spec = create_extractor("timm:efficientformer_l1", "random").spec
    assert (spec.stride, spec.feature_dim) == (16, 224)


def test_a_timm_encoder_without_a_classifier_is_a_cnn_stage_too():
    # MobileNetV5's encoder is published headless: it has no reset_classifier.
    extractor = create_extractor("timm:mobilenetv5_300m_enc", "random")
    assert (extractor.spec.stride, extractor.spec.feature_dim) == (16, 640)
    out = extractor(torch.randint(0, 256, (1, 3, 48, 32), dtype=torch.uint8))
    assert out.shape == (1, 640, 3, 2)


@pytest.mark.parametrize(
    "architecture",
    ["swin_tiny_patch4_window7_224", "inception_v3", "hiera_tiny_224"],
)
def test_timm_architectures_whose_grid_is_not_input_over_stride_are_refused(architecture):
    with pytest.raises(InvalidInput, match=f"timm:{architecture} cannot be used as an fseg"):
        create_extractor(f"timm:{architecture}", "random")


def test_missing_checkpoint_names_the_expected_file(tmp_path):
    with pytest.raises(NotFound, match=r"does not exist; expected MahmoodLab/UNI pytorch_model"):
        create_extractor("uni", tmp_path / "nope.bin")


def test_mismatched_checkpoint_lists_the_keys_that_did_not_match(tmp_path):
    wrong = create_extractor("timm:resnet18", "random").net.state_dict()
    path = _save(wrong, tmp_path / "resnet18.pth")
    with pytest.raises(InvalidInput, match=r"\d+ missing keys \(layer1\.0\.conv3\.weight") as info:
        create_extractor("resnet50", path)
    assert "expected an ImageNet ResNet-50" in str(info.value)
    assert "keys of another shape (layer1.0.conv1.weight" in str(info.value)


def test_unreadable_checkpoint_is_refused(tmp_path):
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(InvalidInput, match="cannot be read"):
        create_extractor("resnet50", path)


@pytest.fixture
def unreachable_hub(tmp_path, monkeypatch):
    """An empty Hugging Face cache and a hub address that never resolves (.invalid is
    reserved for that), so nothing here depends on whether this machine has a network."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "ENDPOINT", "https://hub.invalid")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # restored after the test
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    return tmp_path / "hub"


def test_an_unreachable_hub_is_refused_at_once_without_retries(unreachable_hub, caplog):
    with pytest.raises(NotFound, match="pass --weights with a resnet18 state dict"):
        create_extractor("timm:resnet18")
    # huggingface_hub retries an unreachable host with back-off (about a minute).
    assert not [r for r in caplog.records if "Retry" in r.getMessage()]


def test_weights_in_the_hub_cache_load_with_no_hub(unreachable_hub):
    import timm
    from safetensors.torch import save_file

    repo_id = timm.models.get_pretrained_cfg("resnet18").hf_hub_id  # timm/resnet18.a1_in1k
    repo = unreachable_hub / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    reference = timm.create_model("resnet18", pretrained=False)
    save_file(reference.state_dict(), snapshot / "model.safetensors")
    loaded = create_extractor("timm:resnet18")
    for name, tensor in loaded.net.state_dict().items():
        assert torch.equal(tensor, reference.state_dict()[name]), name


def test_a_stain_server_starts_without_importing_timm():
    # timm loads torchvision's model zoo (over a second at start-up), which
    # only networks need; checked in a fresh interpreter.
    probe = (
        "import sys\n"
        "import fseg_server.serve\n"
        "from fseg_server.extract import create_extractor\n"
        "create_extractor('stain')\n"
        "print('timm' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
