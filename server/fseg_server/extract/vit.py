"""Vision transformers: UNI and Prov-GigaPath.

Features are the last block's patch tokens, before the final norm, with the
class (and any register) tokens dropped and a ReLU applied, as the F-SEG
reference does. ``dynamic_img_size`` lets the position embeddings follow
tiles of any size.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .base import Extractor, ExtractorSpec
from .registry import register
from .weights import RANDOM_WEIGHTS, apply_weights, load_from_hub

UNI_SPEC = ExtractorSpec(
    name="uni",
    feature_dim=1024,
    stride=16,
    mpp=0.5,
    tile_size=448,
    margin=32,
    weights="MahmoodLab/UNI pytorch_model.bin (ViT-L/16 state dict in timm layout)",
)
# Prov-GigaPath's hub config builds timm's DINOv2 ViT-giant layout with
# 16-px patches, a 224-px position grid and an MLP ratio of 5.33334 (SwiGLU).
GIGAPATH_SPEC = ExtractorSpec(
    name="prov-gigapath",
    feature_dim=1536,
    stride=16,
    mpp=0.5,
    tile_size=448,
    margin=32,
    weights="prov-gigapath/prov-gigapath pytorch_model.bin (ViT-g tile encoder, timm layout)",
)
UNI_ARGS = {"img_size": 224, "init_values": 1e-5, "dynamic_img_size": True, "num_classes": 0}
GIGAPATH_ARGS = {
    "img_size": 224,
    "patch_size": 16,
    "mlp_ratio": 5.33334,
    "init_values": 1e-5,
    "dynamic_img_size": True,
    "num_classes": 0,
}


class ViTExtractor(Extractor):
    """Last-block patch tokens of a timm VisionTransformer, as a feature grid."""

    def __init__(self, spec: ExtractorSpec, vit: nn.Module, weights_state: str) -> None:
        super().__init__(spec)
        self.vit = vit
        self.weights_state = weights_state

    def features(self, x: torch.Tensor) -> torch.Tensor:
        (tokens,) = self.vit.forward_intermediates(
            x, indices=1, norm=False, output_fmt="NCHW", intermediates_only=True
        )
        return torch.relu(tokens)


def build_vit(
    spec: ExtractorSpec,
    architecture: str,
    hub_id: str | None,
    create_args: dict,
    weights: str | Path | None,
    **overrides: object,
) -> ViTExtractor:
    """Build a ViT extractor; ``overrides`` (e.g. depth) exist for tests only."""
    args = {**create_args, **overrides}
    if weights is None and hub_id is not None:
        return ViTExtractor(spec, load_from_hub(hub_id, spec.weights, **args), f"hub {hub_id}")
    import timm  # here, not at the top: see extract/__init__.py

    vit = timm.create_model(architecture, pretrained=False, **args)
    if weights is None:  # no hub model to fall back on
        return ViTExtractor(spec, vit, RANDOM_WEIGHTS)
    return ViTExtractor(spec, vit, apply_weights(vit, weights, spec.weights))


@register(UNI_SPEC)
def uni(weights: str | Path | None = None, **overrides: object) -> ViTExtractor:
    """UNI (Chen et al., 2024): ViT-L/16 trained with DINOv2 on 100k slides."""
    return build_vit(
        UNI_SPEC, "vit_large_patch16_224", "hf-hub:MahmoodLab/uni", UNI_ARGS, weights, **overrides
    )


@register(GIGAPATH_SPEC)
def prov_gigapath(weights: str | Path | None = None, **overrides: object) -> ViTExtractor:
    """Prov-GigaPath's tile encoder (Xu et al., 2024): ViT-g, 1536 channels."""
    return build_vit(
        GIGAPATH_SPEC,
        "vit_giant_patch14_dinov2",
        "hf_hub:prov-gigapath/prov-gigapath",
        GIGAPATH_ARGS,
        weights,
        **overrides,
    )
