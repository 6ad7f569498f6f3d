"""Choosing the compute device and its numeric precision."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from pathlib import Path

import torch

from .errors import FailedPrecondition
from .extract import Extractor
from .extract.fold import fold_extractor
from .extract.fuse import fuse_extractor
from .extract.sparse import runs_block_sparse


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without a GPU is refused."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FailedPrecondition("--device cuda was asked for but torch sees no CUDA GPU")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise FailedPrecondition(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)


def describe_device(device: torch.device) -> str:
    """A line for GetServerInfo and summaries, e.g. ``cuda:0 (NVIDIA H200, networks in bf16)``."""
    precision = f"networks in {describe_precision(device)}"
    if device.type == "cuda":
        index = device.index or 0
        return f"cuda:{index} ({torch.cuda.get_device_name(index)}, {precision})"
    return f"cpu ({torch.get_num_threads()} threads, {precision})"


#: Set to 0 to keep a CPU with bf16 matrix units (AMX) computing networks in fp32.
CPU_BF16_ENV = "FSEG_CPU_BF16"


@functools.cache
def cpu_has_bf16_units() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (Intel AMX), where oneDNN runs
    convolutions and attention about twice as fast in bf16 as in fp32."""
    if os.environ.get(CPU_BF16_ENV, "1") == "0":
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no way to ask cheaply, so no
        return False
    return "amx_bf16" in flags.split()


@contextlib.contextmanager
def inference_precision(device: torch.device, low_precision: bool = True) -> Iterator[None]:
    """bf16 autocast on GPUs that support it (fp16 otherwise) and on CPUs with bf16
    matrix units; fp32 elsewhere, and wherever ``low_precision`` is False.

    Only the extractor's forward runs under this: the factorization needs
    fp32 because concept Gram matrices are badly conditioned. Extractors that
    compute physical quantities (``stain``'s optical densities) opt out.
    """
    with torch.inference_mode():
        if low_precision and device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            with torch.autocast("cuda", dtype=dtype):
                yield
        elif low_precision and device.type == "cpu" and cpu_has_bf16_units():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                yield
        else:
            yield


def describe_precision(device: torch.device) -> str:
    """What the networks compute in on ``device``, for summaries and logs."""
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16 (AMX)" if cpu_has_bf16_units() else "fp32"


def channels_last(module: torch.nn.Module, device: torch.device) -> bool:
    """Whether ``module`` computes on channels-last memory on ``device``: always on GPUs,
    and on CPUs for convolutional networks (oneDNN is faster so)."""
    return device.type == "cuda" or getattr(module, "prefers_channels_last", False)


def place(module: Extractor, device: torch.device) -> Extractor:
    """Ready an extractor for inference on ``device``: its batch norms folded into the
    convolutions before them (``extract/fold.py``), each convolution fused with the
    ReLU after it (``extract/fuse.py``), channels-last where
    :func:`channels_last` says, and block-sparse where a probe shows it can be
    (``extract/sparse.py``; networks only: the others are cheap per pixel)."""
    fold_extractor(module)
    fuse_extractor(module)
    module.block_sparse = module.spec.network and runs_block_sparse(
        module.features, module.spec.stride
    )
    module = module.to(device)
    if channels_last(module, device):
        module = module.to(memory_format=torch.channels_last)
    return module
