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

from collections.abc import Callable

import torch
from torch import nn

from . import fused_ops
from .base import Extractor, probe_image
from .block_tensor import BlockTensor, conv2d_blocks
from .watch import conv_followers

#: Largest difference between fused and unfused features on the probe, relative to
#: the largest feature (fp32: the same arithmetic, the ReLU applied on write).
FUSE_TOLERANCE = 1e-5


class Conv2dReLU(nn.Conv2d):
    """A convolution that applies the ReLU after it as it writes its output. A fused
    convolution's class becomes this one, so that its weights keep their names."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        args = (self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        if isinstance(x, BlockTensor):
            return conv2d_blocks(x, *args, relu=True)
        return fused_ops.conv2d(x, *args, relu=True)


def fuse_extractor(extractor: Extractor) -> int:
    """Fuse ``extractor``'s convolution-ReLU pairs (in place; eval mode, on the CPU),
    checked on the probe image; returns how many."""
    if not any(type(m) is nn.ReLU for m in extractor.modules()):
        return 0
    return fuse_conv_relus(extractor, extractor.features, probe_image(extractor.spec.stride))


def fuse_conv_relus(
    module: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor], probe: torch.Tensor
) -> int:
    """Fuse every convolution-ReLU pair of ``module`` (eval mode, on the CPU, changed in
    place); returns how many (0 when the check on ``probe`` failed and all were undone)."""
    with torch.no_grad():
        expected = forward(probe)
    pairs = [
        (conv, relu_place)
        for _, conv, relu_place, relu in conv_followers(module, forward, probe)
        if type(relu) is nn.ReLU and _fusable(conv)
    ]
    undo = [_fuse(conv, relu_place) for conv, relu_place in pairs]
    with torch.no_grad():
        fused = forward(probe)
    scale = float(expected.abs().max()) or 1.0
    if pairs and float((fused - expected).abs().max()) > FUSE_TOLERANCE * scale:
        for restore in reversed(undo):
            restore()
        return 0
    return len(pairs)


def _fusable(conv: nn.Conv2d) -> bool:
    """Zero-padded convolutions with padding in pixels (not ``"same"``)."""
    return (
        type(conv) is nn.Conv2d
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
    )


def _fuse(conv: nn.Conv2d, relu_place: tuple[nn.Module, str]) -> Callable[[], None]:
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
