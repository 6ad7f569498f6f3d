"""Packed blocks that carry their neighbours through a network (see ``sparse.py``).

A :class:`BlockTensor` is (n + 1, C, s, s): n blocks of s x s cells and a last
block of glass. PyTorch hands every operation on it to
:meth:`BlockTensor.__torch_function__`:

* convolutions and poolings gather, for each block, the cells their windows
  reach in its neighbours (at most one block away) and compute each block's
  own output cells, no more;
* operations that act on each position alone (activations, sums, per-channel
  scales) run on the packed values as they are;
* anything else that makes a tensor (attention, the global pooling of
  squeeze-and-excitation, resizing, explicit padding) raises
  :class:`SparseUnsupported`.

Blocks are kept channels-last, so a block is a list of C-vectors and a gather
is one ``index_select`` of rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from . import fused_ops
from .fused_ops import compute_dtype, prepared

#: (row, column) offsets of a block's eight neighbours, in the order of the
#: neighbour table's columns (``sparse.BlockLayout.neighbours``).
NEIGHBOUR_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


class SparseUnsupported(RuntimeError):
    """The network uses an operation that cannot run on packed blocks."""


def plain(x: torch.Tensor) -> torch.Tensor:
    """The tensor itself, without its blocks' subclass."""
    with torch._C.DisableTorchFunctionSubclass():
        return x.as_subclass(torch.Tensor)


def run_block_sparse(
    features: Callable[[torch.Tensor], torch.Tensor],
    blocks: torch.Tensor,
    neighbours: torch.Tensor,
    fill: float | None = None,
) -> torch.Tensor:
    """A network's features on packed blocks, each seeing its neighbours at every layer.

    Args:
        features: the network, (B, 3, H, W) -> (B, C, H/stride, W/stride).
        blocks: (n + 1, 3, b, b) normalised input, the last block glass.
        neighbours: (n + 1, 8) pack indices (see :meth:`BlockLayout.neighbours`).
        fill: None: missing neighbours are the glass block. A number: they are
            that constant at every layer, as a dense network's zero padding is
            (the probe uses 0 to compare with the dense network exactly).

    Returns:
        (n + 1, C, b/stride, b/stride), a plain tensor.

    Raises:
        SparseUnsupported: the network does something packed blocks cannot.
    """
    out = features(BlockTensor.wrap(blocks, neighbours.to(blocks.device), fill))
    if not isinstance(out, BlockTensor):
        raise SparseUnsupported("the network's output lost its blocks")
    return plain(out)


class BlockTensor(torch.Tensor):
    """Packed blocks (n + 1, C, s, s) that carry their neighbour table through a network.

    Operations reach :meth:`__torch_function__`: convolutions and poolings get
    their halo (``_WINDOWED``), position-wise operations pass through
    (``_POSITIONWISE``), questions about the tensor (shape, dtype) are answered,
    and anything else that makes a tensor is refused.
    """

    neighbours: torch.Tensor
    fill: float | None
    _indices: dict[tuple, torch.Tensor]

    @staticmethod
    def wrap(
        data: torch.Tensor,
        neighbours: torch.Tensor,
        fill: float | None,
        indices: dict[tuple, torch.Tensor] | None = None,
    ) -> BlockTensor:
        with torch._C.DisableTorchFunctionSubclass():
            wrapped = data.as_subclass(BlockTensor)
        wrapped.neighbours, wrapped.fill = neighbours, fill
        # Shared by every tensor of one forward: each window geometry's gather
        # index is built once.
        wrapped._indices = {} if indices is None else indices
        return wrapped

    def like(self, data: torch.Tensor) -> BlockTensor:
        """``data`` as blocks of the same pack."""
        return BlockTensor.wrap(data, self.neighbours, self.fill, self._indices)

    def gather_index(self, ys: tuple[int, ...], xs: tuple[int, ...]) -> torch.Tensor:
        """(n + 1, len(ys), len(xs)) positions in the packed rows of the cells at
        block-local coordinates ``ys`` x ``xs`` (within one block of the block), cached."""
        s = self.shape[-1]
        key = (s, ys, xs)
        if key not in self._indices:
            self._indices[key] = _cell_index(self.neighbours, s, ys, xs)
        return self._indices[key]

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        windowed = _WINDOWED.get(name)
        if windowed is not None:
            return windowed(*args, **kwargs)
        first = _first_block_tensor(args, kwargs)
        with torch._C.DisableTorchFunctionSubclass():
            out = func(*args, **kwargs)
        if not isinstance(out, torch.Tensor):
            return out  # shape, dtype, device, dim...
        if name not in _POSITIONWISE or out.shape[0] != first.shape[0]:
            raise SparseUnsupported(f"{name or func} cannot run on packed blocks")
        return first.like(out)


def _first_block_tensor(args: tuple, kwargs: dict) -> BlockTensor:
    for value in (*args, *kwargs.values()):
        if isinstance(value, BlockTensor):
            return value
        if isinstance(value, list | tuple):
            for item in value:
                if isinstance(item, BlockTensor):
                    return item
    raise SparseUnsupported("an operation without packed blocks")


#: Operations whose every output position depends on the same input position alone
#: (and per-channel constants), so they run on packed blocks as they are.
_POSITIONWISE = frozenset(
    {
        "relu", "relu_", "relu6", "leaky_relu", "leaky_relu_", "gelu", "silu", "sigmoid",
        "hardswish", "hardsigmoid", "hardtanh", "hardtanh_", "mish", "elu", "tanh",
        "clamp", "clamp_", "clamp_min", "clamp_min_",
        "add", "add_", "__add__", "__iadd__", "__radd__", "mul", "mul_", "__mul__",
        "__rmul__", "__imul__", "sub", "__sub__", "div", "__truediv__",
        "batch_norm", "dropout", "contiguous", "float", "half", "bfloat16", "to", "clone",
        "detach", "type_as",
    }
)  # fmt: skip


def _pairs(value: int | tuple[int, ...] | list[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[-1]))


def _rows(x: BlockTensor, fill: float | None) -> torch.Tensor:
    """(n + 1) * s * s rows of C values: channels-last blocks, cell by cell (a view when
    they are channels-last already). With ``fill``, the last block is that constant."""
    data = plain(x).contiguous(memory_format=torch.channels_last)
    if fill is not None:  # missing neighbours are a constant, not the glass block
        data = data.clone(memory_format=torch.channels_last)
        data[-1] = fill
    return data.permute(0, 2, 3, 1).reshape(-1, data.shape[1])


def _halo(x: BlockTensor, pad: int, fill: float | None) -> torch.Tensor:
    """(n + 1, C, s + 2 pad, s + 2 pad) channels-last: each block with ``pad`` cells of
    its neighbours, gathered in one pass."""
    if pad == 0:
        return plain(x)
    n, channels, s, _ = x.shape
    coords = tuple(range(-pad, s + pad))
    index = x.gather_index(coords, coords).reshape(-1)
    side = len(coords)
    gathered = _rows(x, fill).index_select(0, index).view(n, side, side, channels)
    return gathered.permute(0, 3, 1, 2)  # channels-last, no copy


def _cell_index(
    neighbours: torch.Tensor, s: int, ys: tuple[int, ...], xs: tuple[int, ...]
) -> torch.Tensor:
    """(n, len(ys), len(xs)) positions (block * s² + y * s + x) in the packed rows of the
    cells at block-local ``ys`` x ``xs``, which may lie in a neighbouring block."""
    if min(*ys, *xs) < -s or max(*ys, *xs) >= 2 * s:
        raise SparseUnsupported(f"a window reaches more than one block of {s} cells away")
    device = neighbours.device
    y, x = torch.tensor(ys, device=device), torch.tensor(xs, device=device)
    step_y, step_x = torch.div(y, s, rounding_mode="floor"), torch.div(x, s, rounding_mode="floor")
    # Column of the neighbour table for each (row step, column step); 8: the block itself.
    direction = torch.full((3, 3), 8, dtype=torch.int64, device=device)
    for j, (r, c) in enumerate(NEIGHBOUR_OFFSETS):
        direction[r + 1, c + 1] = j
    own = torch.arange(len(neighbours), device=device)[:, None]
    table = torch.cat([neighbours, own], dim=1)  # (n, 9)
    source = table[:, direction[step_y[:, None] + 1, step_x[None, :] + 1].reshape(-1)]
    cell = ((y - step_y * s)[:, None] * s + (x - step_x * s)[None, :]).reshape(-1)
    return (source * (s * s) + cell[None]).reshape(len(neighbours), len(ys), len(xs))


def _matmul_rows(
    rows: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    n: int,
    side: int,
    relu: bool,
    add: BlockTensor | None,
) -> torch.Tensor:
    """(n * side², K) rows times a convolution's weight -> channels-last (n, C', side, side).

    The product runs as a 1 x 1 convolution over the rows laid out as one tall
    image, (1, K, rows, 1) channels-last (a view): oneDNN then adds ``add`` and
    applies the ReLU as it writes, which its matrix product cannot both do.
    """
    # The weight as the (C', kh * kw * C) matrix the taps multiply (tap-major, as
    # _gathered_conv gathers them), made once per weight.
    matrix = prepared(
        weight,
        compute_dtype(rows),
        "taps",
        lambda w: w.permute(0, 2, 3, 1).flatten(1)[:, :, None, None],
    )
    image = _tall(rows)
    residual = None if add is None else _tall(_rows(add, None))
    out = fused_ops.conv2d(image, matrix, bias, (1, 1), (0, 0), (1, 1), 1, relu, residual)
    return out.permute(0, 2, 3, 1).reshape(n, side, side, -1).permute(0, 3, 1, 2)


def _tall(rows: torch.Tensor) -> torch.Tensor:
    """(P, K) rows as a (1, K, P, 1) channels-last image, without a copy."""
    return rows.view(1, rows.shape[0], 1, rows.shape[1]).permute(0, 3, 1, 2)


def _pointwise_conv(x: BlockTensor, weight: torch.Tensor, bias: torch.Tensor | None,
                    stride: int, relu: bool, add: BlockTensor | None) -> BlockTensor:  # fmt: skip
    """A 1 x 1 convolution: every cell's vector times the weight, a matrix product
    (faster than a convolution on blocks of a few cells)."""
    n, _, s, _ = x.shape
    if s % stride:
        raise SparseUnsupported(f"a 1 x 1 window of stride {stride} on {s}-cell blocks")
    data = plain(x)[..., ::stride, ::stride]
    side = s // stride
    rows = data.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)
    out = _matmul_rows(rows.reshape(n * side * side, -1), weight, bias, n, side, relu, add)
    return x.like(out)


def _gathered_conv(
    x: BlockTensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: int,
    padding: int,
    dilation: int,
    relu: bool,
    add: BlockTensor | None,
) -> BlockTensor:
    """A convolution as one gather of every output cell's window (its taps, from this
    block or a neighbour) and one matrix product: on blocks of a few cells this is
    several times faster than a convolution, whose kernels expect large images."""
    n, _, s, _ = x.shape
    kernel = weight.shape[-1]
    side = s // stride
    taps = tuple(o * stride + k * dilation - padding for o in range(side) for k in range(kernel))
    index = x.gather_index(taps, taps)  # (n, side * kernel, side * kernel)
    index = index.view(n, side, kernel, side, kernel).permute(0, 1, 3, 2, 4).reshape(-1)
    windows = _rows(x, x.fill).index_select(0, index)  # (n * side² * kernel², C)
    windows = windows.view(n * side * side, -1)  # (cells, kernel² * C): tap-major
    return x.like(_matmul_rows(windows, weight, bias, n, side, relu, add))


def _check_window(
    s: int,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> None:
    """Refuse a window that does not map a block of ``s`` cells onto s / stride cells."""
    if stride[0] != stride[1] or padding[0] != padding[1] or s % stride[0]:
        raise SparseUnsupported(f"a window of stride {stride}, padding {padding} on {s} cells")
    reach = (kernel[0] - 1) * dilation[0] + 1
    if (s + 2 * padding[0] - reach) // stride[0] + 1 < s // stride[0]:
        raise SparseUnsupported(f"a window of {kernel} with padding {padding} shrinks the blocks")


def _windowed(
    x: BlockTensor,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    fill: float | None,
    op: Callable[[torch.Tensor], torch.Tensor],
) -> BlockTensor:
    """``op`` (a window op with no padding of its own) on every block and its halo."""
    s = x.shape[-1]
    _check_window(s, kernel, stride, padding, dilation)
    cells = s // stride[0]
    out = op(_halo(x, padding[0], fill))[..., :cells, :cells]
    return x.like(out)


#: Blocks of at most this many cells a side convolve as a gather and a matrix
#: product (``_gathered_conv``); larger ones as a convolution on each block and its halo.
GATHER_CELLS = 4


def _conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return conv2d_blocks(input, weight, bias, stride, padding, dilation, groups, relu=False)


def conv2d_blocks(
    input: BlockTensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: int | tuple[int, int],
    padding: int | tuple[int, int] | str,
    dilation: int | tuple[int, int],
    groups: int,
    relu: bool,
    add: BlockTensor | None = None,
) -> BlockTensor:
    """A convolution on packed blocks, plus ``add`` (a residual of the output's shape),
    then a ReLU if asked (fused where the device can)."""
    if isinstance(padding, str):
        raise SparseUnsupported(f"convolution padding {padding!r}")
    st, pad, d = _pairs(stride), _pairs(padding), _pairs(dilation)
    kernel = tuple(weight.shape[-2:])
    s = input.shape[-1]
    square = st[0] == st[1] and pad[0] == pad[1] and d[0] == d[1] and kernel[0] == kernel[1]
    if square and groups == 1 and kernel == (1, 1) and pad == (0, 0):
        return _pointwise_conv(input, weight, bias, st[0], relu, add)
    if square and groups == 1 and s <= GATHER_CELLS and s % st[0] == 0:
        _check_window(s, kernel, st, pad, d)
        return _gathered_conv(input, weight, bias, st[0], pad[0], d[0], relu, add)
    residual = None if add is None else plain(add)
    return _windowed(
        input, kernel, st, pad, d, input.fill,
        lambda x: fused_ops.conv2d(x, weight, bias, st, (0, 0), d, groups, relu, residual),
    )  # fmt: skip


def _max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                return_indices=False):  # fmt: skip
    if return_indices:
        raise SparseUnsupported("max pooling with indices")
    k = _pairs(kernel_size)
    s = _pairs(stride) if stride else k
    d = _pairs(dilation)
    fill = None if input.fill is None else -math.inf  # max pooling pads with -inf
    return _windowed(input, k, s, _pairs(padding), d, fill, lambda x: F.max_pool2d(x, k, s, 0, d))


def _avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
                count_include_pad=True, divisor_override=None):  # fmt: skip
    k = _pairs(kernel_size)
    s = _pairs(stride) if stride else k
    if _pairs(padding) != (0, 0) and not count_include_pad:
        raise SparseUnsupported("average pooling that leaves its padding out")
    return _windowed(
        input, k, s, _pairs(padding), (1, 1), input.fill,
        lambda x: F.avg_pool2d(x, k, s, 0, divisor_override=divisor_override),
    )  # fmt: skip


#: Window operations by name (``F.max_pool2d`` reaches here as ``max_pool2d`` or
#: ``_max_pool2d`` depending on how it was called).
_WINDOWED: dict[str, Callable[..., BlockTensor]] = {
    "conv2d": _conv2d,
    "max_pool2d": _max_pool2d,
    "_max_pool2d": _max_pool2d,
    "avg_pool2d": _avg_pool2d,
}
