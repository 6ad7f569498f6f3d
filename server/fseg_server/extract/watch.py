"""Rewriting a network for inference on the evidence of one probe forward pass.

:func:`conv_followers` watches the pass to find which module reads each
convolution's output; :func:`keep_if_unchanged` applies a rewrite and keeps it
only if the network still gives the probe's features.

Batch-norm folding (``fold.py``) and convolution-ReLU fusion (``fuse.py``)
rewrite a network where a convolution's output goes to one module and
nowhere else. Hooks on every leaf module see the tensors passed between
them: a module whose input is the very tensor a convolution returned (``is``,
not equality) reads it. Modules that hand their input on unchanged
(identities, dropout at inference) are seen through.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

#: Undoes one change a rewrite made to a network.
Undo = Callable[[], None]


def keep_if_unchanged(
    forward: Callable[[torch.Tensor], torch.Tensor],
    probe: torch.Tensor,
    rewrite: Callable[[], list[Undo]],
    tolerance: float,
    expected: torch.Tensor | None = None,
) -> tuple[int, torch.Tensor]:
    """Apply ``rewrite()`` (one undo per change it made) and keep every change only if
    ``forward(probe)`` still equals ``expected`` (default: its value before the
    rewrite) to ``tolerance`` of the largest feature; otherwise undo them all.

    Returns:
        (changes kept, the features the network now gives the probe), so that a
        next rewrite can be checked against them without another forward pass.
    """
    with torch.no_grad():
        expected = forward(probe) if expected is None else expected
        undo = rewrite()
        got = forward(probe)
    scale = float(expected.abs().max()) or 1.0
    if undo and float((got - expected).abs().max()) > tolerance * scale:
        for restore in reversed(undo):
            restore()
        return 0, expected
    return len(undo), got


#: Modules that return their input itself at inference, so that its reader is
#: the module after them.
PASS_THROUGH = (nn.Identity, nn.Dropout)


#: Where a module sits in its network: (parent, attribute name).
Place = tuple[nn.Module, str]


def conv_followers(
    module: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor], probe: torch.Tensor
) -> list[tuple[Place, nn.Conv2d, Place, nn.Module]]:
    """(where, conv, where, follower) for each convolution called once whose output one
    module alone read, itself called once.

    Leaves are watched, and batch norms whole (timm's norm-with-activation has
    its activation as a child).
    """
    # Conv outputs are kept alive, so identity (``is``) can find them again; ids alone
    # would be reused by later tensors.
    outputs: list[tuple[torch.Tensor, nn.Conv2d, int]] = []  # and the output's version
    readers: dict[int, list[nn.Module | None]] = {}  # id(conv) -> modules that took its output
    calls: dict[int, int] = {}
    convs: list[nn.Conv2d] = []  # in the order they ran

    def before(mod: nn.Module, args: tuple) -> None:
        calls[id(mod)] = calls.get(id(mod), 0) + 1
        if isinstance(mod, PASS_THROUGH):
            return
        for tensor, conv, version in outputs:
            if args and tensor is args[0]:
                # Changed in place by something no hook saw (``x += shortcut``): the
                # module reads more than the convolution's output (None: disqualified).
                reader = mod if tensor._version == version else None
                readers.setdefault(id(conv), []).append(reader)

    def after(mod: nn.Module, args: tuple, out: object) -> None:
        if isinstance(mod, nn.Conv2d) and mod not in convs:
            convs.append(mod)
        if isinstance(mod, nn.Conv2d) and isinstance(out, torch.Tensor):
            outputs.append((out, mod, out._version))
        elif args and out is args[0] and not isinstance(mod, PASS_THROUGH):
            # An in-place module (ReLU(inplace=True)): the tensor holds its result
            # now, and whoever reads it next reads that, not the convolution's.
            outputs[:] = [entry for entry in outputs if entry[0] is not out]

    leaves = [
        m for m in module.modules() if not list(m.children()) or isinstance(m, nn.BatchNorm2d)
    ]
    handles = [m.register_forward_pre_hook(before) for m in leaves]
    handles += [m.register_forward_hook(after) for m in leaves]
    try:
        with torch.no_grad():
            forward(probe)
    finally:
        for handle in handles:
            handle.remove()
    places = {
        id(child): (parent, name)
        for parent in module.modules()
        for name, child in parent.named_children()
    }
    found = []
    for conv in convs:
        followers = readers.get(id(conv), [])
        if calls[id(conv)] != 1 or len(followers) != 1 or followers[0] is None:
            continue
        follower = followers[0]
        if calls[id(follower)] == 1 and id(follower) in places and id(conv) in places:
            found.append((places[id(conv)], conv, places[id(follower)], follower))
    return found
