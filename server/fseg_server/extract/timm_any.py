"""Any timm architecture: ``timm:<architecture>``.

Convolutional networks give the stage whose stride is 16 (as ResNet-50's
layer3), or their deepest stage when none is; vision transformers give their
last block's patch tokens. A ReLU makes every choice non-negative.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import InvalidInput, NotFound
from .base import PROBE_CELLS, Extractor, ExtractorSpec
from .imagenet import key_converter, package_name, packaged_checkpoint
from .registry import register_prefix
from .vit import ViTExtractor
from .weights import apply_weights, load_from_hub, load_weights

PREFERRED_STRIDE = 16
GENERIC_MPP = 1.0  # ImageNet models have no native scale; 10x is the F-SEG recipe.


class TimmStage(Extractor):
    """One stage of a timm network, through its ``forward_intermediates``.

    The whole network is kept (classifier removed), so checkpoints in timm's
    own key layout load as they are.
    """

    prefers_channels_last = True

    def __init__(self, spec: ExtractorSpec, net: nn.Module, stage: int, weights_state: str) -> None:
        super().__init__(spec)
        self.net, self.stage = net, stage
        self.weights_state = weights_state

    def features(self, x: torch.Tensor) -> torch.Tensor:
        # stop_early: the later stages would be computed and thrown away.
        (out,) = self.net.forward_intermediates(
            x, indices=[self.stage], intermediates_only=True, stop_early=True
        )
        return torch.relu(out)


class TimmFeatures(Extractor):
    """One stage of a timm ``features_only`` network (architectures without
    ``forward_intermediates``; their checkpoints use the wrapper's key names)."""

    prefers_channels_last = True

    def __init__(self, spec: ExtractorSpec, net: nn.Module, weights_state: str) -> None:
        super().__init__(spec)
        self.net = net
        self.weights_state = weights_state

    def features(self, x: torch.Tensor) -> torch.Tensor:
        (stage,) = self.net(x)
        return torch.relu(stage)


@register_prefix("timm")
def timm_model(architecture: str, weights: str | Path | None = None) -> Extractor:
    """Build ``timm:<architecture>`` from the hub cache, a checkpoint or random weights.

    Without ``weights``, an architecture whose ImageNet weights a registry
    package ships (``fseg[imagenet]``: EfficientNet-Lite0 and -Lite2) loads them
    from that package, ahead of the hub (see ``imagenet.py``).

    Plain vision transformers and convolutional networks are supported; an
    architecture whose feature grid is not the input divided by its stride
    (shifted windows, hybrids, unpadded convolutions) is refused in one
    sentence rather than segmented at the wrong place.
    """
    import timm  # here, not at the top: see extract/__init__.py

    if not timm.is_model(architecture):
        raise NotFound(f"timm has no architecture {architecture!r} (see timm.list_models())")
    probe = timm.create_model(architecture, pretrained=False)
    try:
        if hasattr(probe, "forward_intermediates") and hasattr(probe, "patch_embed"):
            extractor = _vit(architecture, probe, weights)
        else:
            extractor = _cnn(architecture, probe, weights)
    except (AttributeError, TypeError) as exc:
        raise _unsupported(
            f"timm:{architecture}", f"its layout is not a plain ViT or CNN ({exc})"
        ) from None
    _check_grid(extractor)
    return extractor


def _check_grid(extractor: Extractor) -> None:
    """One small forward pass: the grid must be (C, H/stride, W/stride) as declared."""
    spec = extractor.spec
    side = PROBE_CELLS * spec.stride
    expected = (1, spec.feature_dim, PROBE_CELLS, PROBE_CELLS)
    extractor.eval()  # in training mode, batch norm would learn from the probe
    try:
        with torch.no_grad():
            shape = tuple(extractor.features(torch.zeros(1, 3, side, side)).shape)
    except (RuntimeError, ValueError, AssertionError) as exc:
        raise _unsupported(spec.name, f"a {side} px input fails in it ({exc})") from None
    if shape != expected:
        raise _unsupported(
            spec.name,
            f"a {side} px input gives a {shape[1:]} feature grid, not the {expected[1:]} "
            f"that a stride of {spec.stride} px and {spec.feature_dim} channels imply",
        )


def _unsupported(name: str, why: str) -> InvalidInput:
    return InvalidInput(f"{name} cannot be used as an fseg extractor: {why}")


def _vit(architecture: str, probe: nn.Module, weights: str | Path | None) -> Extractor:
    import timm  # here, not at the top: see extract/__init__.py

    cfg = probe.pretrained_cfg
    patch = probe.patch_embed.patch_size
    stride = int(patch[0] if isinstance(patch, tuple) else patch)
    spec = ExtractorSpec(
        name=f"timm:{architecture}",
        feature_dim=probe.num_features,
        stride=stride,
        mpp=GENERIC_MPP,
        mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
        # Whole cells: 14-px patches (the DINOv2 family) get 448 = 32 x 14 and 28.
        tile_size=-(-448 // stride) * stride,
        margin=2 * stride,
        weights=f"a {architecture} state dict in timm layout",
    )
    args = {"dynamic_img_size": True, "num_classes": 0}
    if weights is None:
        vit = load_from_hub(architecture, spec.weights, **args)
        return ViTExtractor(spec, vit, f"hub timm/{architecture}")
    vit = timm.create_model(architecture, pretrained=False, **args)
    return ViTExtractor(spec, vit, apply_weights(vit, weights, spec.weights))


def _cnn(architecture: str, probe: nn.Module, weights: str | Path | None) -> Extractor:
    if hasattr(probe, "reset_classifier"):  # encoders without a head have none
        probe.reset_classifier(0)  # a checkpoint's head is ignored; the stage is all we run
    if not hasattr(probe, "forward_intermediates"):
        return _features_only(architecture, weights)
    reductions = [info["reduction"] for info in probe.feature_info]
    stage = _preferred_stage(reductions)
    expected = f"a {architecture} state dict in timm layout"
    convert = key_converter(architecture, probe)
    packaged = packaged_checkpoint(architecture) if weights is None else None
    if packaged is not None:
        load_weights(probe, packaged, expected, convert)
        net, state = probe, f"ImageNet, from the {package_name(architecture)} package ({packaged})"
    elif weights is None:
        net = load_from_hub(architecture, expected, num_classes=0)
        state = f"hub timm/{architecture}"
    else:
        net, state = probe, apply_weights(probe, weights, expected, convert)
    spec = _cnn_spec(architecture, net, reductions[stage], probe.feature_info[stage]["num_chs"])
    return TimmStage(spec, net, stage, state)


def _features_only(architecture: str, weights: str | Path | None) -> Extractor:
    import timm  # here, not at the top: see extract/__init__.py

    info = timm.create_model(architecture, pretrained=False, features_only=True).feature_info
    reductions = info.reduction()
    stage = _preferred_stage(reductions)
    args = {"features_only": True, "out_indices": (stage,)}
    expected = f"a {architecture} state dict in timm's features_only layout"
    if weights is None:
        net, state = load_from_hub(architecture, expected, **args), f"hub timm/{architecture}"
    else:
        net = timm.create_model(architecture, pretrained=False, **args)
        state = apply_weights(net, weights, expected)
    spec = _cnn_spec(architecture, net, reductions[stage], info.channels()[stage])
    return TimmFeatures(spec, net, state)


def _preferred_stage(reductions: list[int]) -> int:
    """The stage whose stride is 16 (as ResNet-50's layer3), else the deepest."""
    index = reductions.index(PREFERRED_STRIDE) if PREFERRED_STRIDE in reductions else -1
    return range(len(reductions))[index]


def _cnn_spec(architecture: str, net: nn.Module, stride: int, channels: int) -> ExtractorSpec:
    cfg = net.pretrained_cfg
    return ExtractorSpec(
        name=f"timm:{architecture}",
        feature_dim=channels,
        stride=stride,
        mpp=GENERIC_MPP,
        mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
        tile_size=max(512, 16 * stride),
        region_size=max(2048, 64 * stride),
        margin=4 * stride,
        weights=f"a {architecture} state dict in timm layout",
    )
