"""Choosing the compute device and its numeric precision."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from .errors import FailedPrecondition


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
    """A line for GetServerInfo and summaries, e.g. ``cuda:0 (NVIDIA H200)``."""
    if device.type == "cuda":
        index = device.index or 0
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return f"cpu ({torch.get_num_threads()} threads)"


@contextlib.contextmanager
def inference_precision(device: torch.device) -> Iterator[None]:
    """bf16 autocast on GPUs that support it (fp16 otherwise); fp32 on the CPU.

    Only the extractor's forward runs under this: the factorization needs
    fp32 because concept Gram matrices are badly conditioned.
    """
    with torch.inference_mode():
        if device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            with torch.autocast("cuda", dtype=dtype):
                yield
        else:
            yield


def place(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Move an extractor to ``device``; channels-last memory on GPUs, and for
    convolutional networks on CPUs too, helps convolutions."""
    module = module.to(device)
    if device.type == "cuda" or getattr(module, "prefers_channels_last", False):
        module = module.to(memory_format=torch.channels_last)
    return module
