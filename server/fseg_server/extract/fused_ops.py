"""A convolution with a residual sum and the ReLU after it applied as it writes (CPU).

On a CPU the activations are host memory, and a ReLU is one more pass over
them: in bf16 on a 2-core CPU, ReLU passes took about a quarter of ResNet-50's
time through layer3. oneDNN applies the ReLU as the convolution writes its
output (``torch.ops.mkldnn``'s pointwise-fused ops, those torch's own compiler
emits on CPUs). Elsewhere (CUDA) these are the plain op and an in-place ReLU.
The fused ops take no part in autocast, so inputs and weights are cast here
to the precision autocast would have used; weights once, not per call.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """What autocast would compute ``x``'s convolution in on its device."""
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return x.dtype


def prepared(
    weight: torch.Tensor, dtype: torch.dtype, tag: str, make: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """``make(weight)`` in ``dtype``, made once per weight and kept on it (so it goes with
    the network); a weight changed in place (a new version) or moved is made again."""
    # A tensor made under inference mode (a prepared weight, prepared again) keeps
    # no version; it is never changed in place.
    version = 0 if weight.is_inference() else weight._version
    key = (tag, weight.data_ptr(), version, dtype)
    cache = weight.__dict__.setdefault("_fseg_prepared", {})
    if cache.get(tag, (None,))[0] != key:
        cache[tag] = (key, make(weight).to(dtype))
    return cache[tag][1]


def _fused_on_cpu(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and torch.backends.mkldnn.is_available()


def conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
    relu: bool,
    add: torch.Tensor | None = None,
) -> torch.Tensor:
    """A zero-padded convolution, plus ``add`` (a residual, shaped as the output), then
    ReLU if asked, fused on CPUs."""
    if not (relu and _fused_on_cpu(x)):
        out = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
        if add is not None:
            out += add
        return out.relu_() if relu else out
    dtype = compute_dtype(x)
    w = prepared(weight, dtype, "conv", lambda t: t.contiguous(memory_format=torch.channels_last))
    b = None if bias is None else bias.to(dtype)
    x = x.to(dtype)
    window = (list(padding), list(stride), list(dilation), groups)
    if add is not None:
        return torch.ops.mkldnn._convolution_pointwise.binary(
            x, add.to(dtype), w, b, *window, "add", None, "relu", [], ""
        )
    return torch.ops.mkldnn._convolution_pointwise(x, w, b, *window, "relu", [], "")
