"""ImageNet ResNet-50, cut after layer3 (1024 channels, stride 16).

The F-SEG authors' ResNet concept bank was fitted on this layer. Its blocks
end in a ReLU, so the features are already non-negative.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .base import Extractor, ExtractorSpec
from .registry import register
from .weights import apply_weights, load_from_hub

RESNET50_SPEC = ExtractorSpec(
    name="resnet50",
    feature_dim=1024,
    stride=16,
    mpp=1.0,
    tile_size=512,
    region_size=2048,
    margin=64,
    weights="an ImageNet ResNet-50 state dict in torchvision layout (e.g. resnet50-0676ba61.pth)",
)


class ResNetLayer3(Extractor):
    """ResNet stem and layers 1 to 3."""

    prefers_channels_last = True

    def __init__(self, resnet: nn.Module, weights_state: str) -> None:
        super().__init__(RESNET50_SPEC)
        self.resnet = resnet
        self.weights_state = weights_state

    def features(self, x: torch.Tensor) -> torch.Tensor:
        r = self.resnet
        x = r.maxpool(r.act1(r.bn1(r.conv1(x))))
        return r.layer3(r.layer2(r.layer1(x)))


@register(RESNET50_SPEC)
def resnet50(weights: str | Path | None = None) -> ResNetLayer3:
    """torchvision's ImageNet weights (timm ``resnet50.tv_in1k``) by default."""
    if weights is None:
        model = _through_layer3(load_from_hub("resnet50.tv_in1k", RESNET50_SPEC.weights))
        return ResNetLayer3(model, "hub timm/resnet50.tv_in1k")
    import timm  # here, not at the top: see extract/__init__.py

    model = _through_layer3(timm.create_model("resnet50", pretrained=False))
    return ResNetLayer3(model, apply_weights(model, weights, RESNET50_SPEC.weights))


def _through_layer3(model: nn.Module) -> nn.Module:
    """The network without what the extractor never runs (layer4, the classifier), so
    that a checkpoint without them (a headless or fine-tuned one) loads as well."""
    model.layer4 = nn.Identity()
    model.reset_classifier(0)
    return model
