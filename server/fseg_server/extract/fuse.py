"""Fusing each convolution with the ReLU that alone reads its output, for inference.

A fused pair computes the convolution and the ReLU in one pass over the
activations (``fused_ops.py``): ResNet-50 through layer3 loses most of its
separate ReLU passes, which on a CPU cost as much as a quarter of its time.
Pairs are found by watching one probe forward pass (``watch.py``): a ReLU
module called once, on the very tensor a convolution returned, which no
other module read. The fused network must give the probe's features again,
or every fusion is undone: a functional use of the convolution's output
that no hook sees cannot slip through. Runs after batch-norm folding
(``fold.py``), which leaves convolutions and activations side by side.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn

from . import fused_ops
from .base import Extractor, probe_image
from .block_tensor import BlockTensor, conv2d_blocks
from .watch import Undo, conv_followers, keep_if_unchanged

#: Largest difference between fused and unfused features on the probe, relative to
#: the largest feature (fp32: the same arithmetic, the ReLU applied on write).
FUSE_TOLERANCE = 1e-5


class Conv2dReLU(nn.Conv2d):
    """A convolution that applies the ReLU after it as it writes its output. A fused
    convolution's class becomes this one, so that its weights keep their names."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv_relu(self, x)


def conv_relu(conv: nn.Conv2d, x: torch.Tensor, add: torch.Tensor | None = None) -> torch.Tensor:
    """``relu(conv(x) + add)`` in one pass, on packed blocks or a whole image."""
    args = (conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    if isinstance(x, BlockTensor):
        return conv2d_blocks(x, *args, relu=True, add=add)
    return fused_ops.conv2d(x, *args, relu=True, add=add)


def fuse_extractor(extractor: Extractor) -> int:
    """Fuse ``extractor``'s convolution-ReLU pairs and residual sums (in place; eval
    mode, on the CPU), each checked on the probe image; returns how many."""
    if not any(type(m) is nn.ReLU for m in extractor.modules()):
        return 0
    probe = probe_image(extractor.spec.stride)
    pairs, features = _fuse_conv_relus(extractor, extractor.features, probe)
    # Checked against the features the first fusion kept: one probe pass fewer.
    blocks, _ = _fuse_residual_sums(extractor, extractor.features, probe, features)
    return pairs + blocks


#: Residual blocks whose last convolution, the sum with the shortcut and the ReLU
#: after it can run as one: (module, class) -> (the modules before that convolution
#: in order, the convolution, what must be gone between it and the sum (batch norm
#: folded away), the ReLU after the sum).
RESIDUAL_BLOCKS = {
    ("timm.models.resnet", "Bottleneck"): (
        ("conv1", "bn1", "act1", "conv2", "bn2", "drop_block", "act2", "aa"),
        "conv3", "bn3", "act3",
    ),
    ("timm.models.resnet", "BasicBlock"): (
        ("conv1", "bn1", "drop_block", "act1", "aa"), "conv2", "bn2", "act2",
    ),
}  # fmt: skip


def fuse_residual_sums(
    module: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor], probe: torch.Tensor
) -> int:
    """Make each residual block of :data:`RESIDUAL_BLOCKS` compute ``relu(conv(h) +
    shortcut)`` in one pass (a sum and a ReLU over the block's widest activations
    fewer); returns how many (0 when the probe check failed and all were undone)."""
    return _fuse_residual_sums(module, forward, probe)[0]


def _fuse_residual_sums(
    module: nn.Module,
    forward: Callable[[torch.Tensor], torch.Tensor],
    probe: torch.Tensor,
    expected: torch.Tensor | None = None,
) -> tuple[int, torch.Tensor]:
    def fuse_all() -> list[Undo]:
        found = [(m, _residual_layout(m)) for m in module.modules()]
        return [_fuse_block(block, layout) for block, layout in found if layout is not None]

    return keep_if_unchanged(forward, probe, fuse_all, FUSE_TOLERANCE, expected)


def _fuse_block(block: nn.Module, layout: tuple) -> Undo:
    """Give ``block`` its fused forward (its layout decided now, not on every call)."""
    before, conv, _, _ = layout
    block.forward = functools.partial(_fused_residual_forward, block, before, conv)
    return lambda: delattr(block, "forward")


def _residual_layout(block: nn.Module) -> tuple | None:
    """The block's entry in RESIDUAL_BLOCKS when it can be fused as it stands: no
    squeeze-and-excitation or drop path, its norm folded, a zero-padded convolution."""
    layout = RESIDUAL_BLOCKS.get((type(block).__module__, type(block).__name__))
    if layout is None:
        return None
    _, conv, norm, act = layout
    plain = getattr(block, "se", None) is None and getattr(block, "drop_path", None) is None
    folded = isinstance(getattr(block, norm), nn.Identity)
    ends = type(getattr(block, act)) is nn.ReLU and _fusable(getattr(block, conv))
    return layout if plain and folded and ends else None


def _fused_residual_forward(
    block: nn.Module, before: tuple[str, ...], conv: str, x: torch.Tensor
) -> torch.Tensor:
    shortcut = x if block.downsample is None else block.downsample(x)
    for name in before:
        x = getattr(block, name)(x)
    return conv_relu(getattr(block, conv), x, add=shortcut)


def fuse_conv_relus(
    module: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor], probe: torch.Tensor
) -> int:
    """Fuse every convolution-ReLU pair of ``module`` (eval mode, on the CPU, changed in
    place); returns how many (0 when the check on ``probe`` failed and all were undone)."""
    return _fuse_conv_relus(module, forward, probe)[0]


def _fuse_conv_relus(
    module: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor], probe: torch.Tensor
) -> tuple[int, torch.Tensor]:
    def fuse_all() -> list[Undo]:
        pairs = [
            (conv, relu_place)
            for _, conv, relu_place, relu in conv_followers(module, forward, probe)
            if type(relu) is nn.ReLU and _fusable(conv)
        ]
        return [_fuse(conv, relu_place) for conv, relu_place in pairs]

    return keep_if_unchanged(forward, probe, fuse_all, FUSE_TOLERANCE)


def _fusable(conv: nn.Conv2d) -> bool:
    """Zero-padded convolutions with padding in pixels (not ``"same"``)."""
    return (
        type(conv) is nn.Conv2d
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
    )


def _fuse(conv: nn.Conv2d, relu_place: tuple[nn.Module, str]) -> Undo:
    """Make ``conv`` apply the ReLU and put an identity where its ReLU was; returns the
    undo."""
    relu_parent, relu_name = relu_place
    relu = getattr(relu_parent, relu_name)
    conv.__class__ = Conv2dReLU
    setattr(relu_parent, relu_name, nn.Identity())

    def undo() -> None:
        conv.__class__ = nn.Conv2d
        setattr(relu_parent, relu_name, relu)

    return undo
