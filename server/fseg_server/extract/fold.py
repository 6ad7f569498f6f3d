"""Folding batch norms into the convolutions before them, for inference.

In eval mode a batch norm is a per-channel scale and shift, which the
convolution that feeds it can absorb into its weights and bias. The network
then computes the same function with one pass over each activation fewer:
ResNet-50 through layer3 runs about 1.25x faster on a 2-core CPU in bf16
(model px/s, a 2,176 px region), where those passes are memory-bound.

Pairs are found by watching one probe forward pass (a batch norm whose input
is the very tensor a convolution returned, and no other module reads), and
the folded network must give the probe's features again, or every fold is
undone: a functional use of a convolution's output that no hook sees cannot
slip through.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .base import Extractor, probe_image
from .watch import Undo, conv_followers, keep_if_unchanged

#: Largest difference between folded and unfolded features on the probe, relative
#: to the largest feature; folding itself changes them by about 1e-6.
FOLD_TOLERANCE = 1e-4


def fold_extractor(extractor: Extractor) -> int:
    """Fold ``extractor``'s batch norms (in place; eval mode, on the CPU), checked on a
    seeded random image of PROBE_CELLS feature cells a side; returns how many."""
    if not any(isinstance(m, nn.BatchNorm2d) for m in extractor.modules()):
        return 0  # vision transformers: no probe passes at start-up
    return fold_batch_norms(extractor, extractor.features, probe_image(extractor.spec.stride))


def fold_batch_norms(
    module: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor], probe: torch.Tensor
) -> int:
    """Fold every batch norm that only rescales a convolution's output; returns how
    many were folded (0 when the check on ``probe`` failed and all were undone).

    Args:
        module: an eval-mode network on the CPU, changed in place.
        forward: what computes its features (``forward(probe)``).
        probe: an input it takes, e.g. a (1, 3, 64, 64) random image.
    """

    def fold_all() -> list[Undo]:
        pairs = _conv_norm_pairs(module, forward, probe)
        return [_fold(parent, name, conv, norm) for parent, name, conv, norm in pairs]

    return keep_if_unchanged(forward, probe, fold_all, FOLD_TOLERANCE)[0]


def _conv_norm_pairs(
    module: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor], probe: torch.Tensor
) -> list[tuple[nn.Module, str, nn.Conv2d, nn.BatchNorm2d]]:
    """(parent, attribute, conv, norm) for each norm fed by a conv's output alone."""
    return [
        (*place, conv, norm)
        for _, conv, place, norm in conv_followers(module, forward, probe)
        if isinstance(norm, nn.BatchNorm2d) and _foldable(norm)
    ]


def _foldable(norm: nn.BatchNorm2d) -> bool:
    """Plain batch norms, and timm's norm-then-activation ones, with running statistics."""
    plain = type(norm) is nn.BatchNorm2d or (hasattr(norm, "act") and hasattr(norm, "drop"))
    return plain and norm.running_mean is not None and norm.running_var is not None


def _fold(
    parent: nn.Module, name: str, conv: nn.Conv2d, norm: nn.BatchNorm2d
) -> Callable[[], None]:
    """Fold ``norm`` into ``conv`` and take it out of ``parent``; returns the undo."""
    weight, bias = conv.weight, conv.bias
    scale = norm.running_var.add(norm.eps).rsqrt()
    if norm.weight is not None:
        scale = scale * norm.weight
    shift = -norm.running_mean * scale
    if norm.bias is not None:
        shift = shift + norm.bias
    old_bias = torch.zeros_like(shift) if bias is None else bias
    conv.weight = nn.Parameter(weight * scale.view(-1, 1, 1, 1), requires_grad=False)
    conv.bias = nn.Parameter(old_bias * scale + shift, requires_grad=False)
    # timm's norm-with-activation keeps its dropout and activation.
    rest = nn.Sequential(norm.drop, norm.act) if hasattr(norm, "act") else nn.Identity()
    setattr(parent, name, rest)

    def undo() -> None:
        conv.weight, conv.bias = weight, bias
        setattr(parent, name, norm)

    return undo
