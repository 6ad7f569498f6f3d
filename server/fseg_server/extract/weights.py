"""Loading published checkpoints into extractor architectures.

Checkpoints are read without unpickling arbitrary objects: safetensors files
directly, ``.bin``/``.pth`` files through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import torch
from torch import nn

from ..errors import InvalidInput, NotFound

CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
# Wrappers that training scripts put around the state dict they save.
_WRAPPER_KEYS = ("state_dict", "model", "teacher", "module")


def read_state_dict(path: str | Path, expected: str) -> dict[str, torch.Tensor]:
    """Read a state dict from ``path``.

    Args:
        path: a .safetensors, .bin, .pth or .pt file.
        expected: the checkpoint the caller expects, in words, for error messages.
    """
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"checkpoint {path} does not exist; expected {expected}")
    if path.suffix not in CHECKPOINT_SUFFIXES:
        raise InvalidInput(
            f"checkpoint {path} has an unknown suffix; use one of {', '.join(CHECKPOINT_SUFFIXES)}"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, or pickled objects beyond tensors
        raise InvalidInput(
            f"checkpoint {path} cannot be read ({exc}); expected {expected}"
        ) from exc
    return _strip_wrappers(_unwrap(state, path, expected))


#: How GetServerInfo describes an extractor whose weights were never loaded.
RANDOM_WEIGHTS = "random (benchmarks only)"


#: Renames a checkpoint's keys into the model's layout (see ``imagenet.py``).
KeyConverter = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


def apply_weights(
    model: nn.Module, weights: str | Path, expected: str, convert: KeyConverter | None = None
) -> str:
    """``--weights`` into ``model``; ``random`` keeps the initialisation (benchmarks).

    Returns the description for GetServerInfo, as :func:`load_weights` does.
    """
    if str(weights) == "random":
        return RANDOM_WEIGHTS
    return load_weights(model, weights, expected, convert)


def load_weights(
    model: nn.Module, path: str | Path, expected: str, convert: KeyConverter | None = None
) -> str:
    """Load ``path`` into ``model`` and return a description for GetServerInfo.

    Every key of the model must be present with the same shape, except batch
    norm's step counters (older checkpoints lack them, as PyTorch allows).
    Keys the model lacks (a classifier head the extractor never runs) are
    ignored. ``convert`` renames the checkpoint's keys first.
    """
    state = read_state_dict(path, expected)
    if convert is not None:
        state = convert(state)
    model_state = model.state_dict()
    for key, value in model_state.items():
        if key.endswith(".num_batches_tracked") and key not in state:
            state[key] = value
    missing = [k for k in model_state if k not in state]
    wrong_shape = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in model_state.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or wrong_shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys ({_sample(missing)})")
        if wrong_shape:
            parts.append(f"{len(wrong_shape)} keys of another shape ({_sample(wrong_shape)})")
        raise InvalidInput(
            f"checkpoint {path} does not fit the architecture: {'; '.join(parts)}; "
            f"expected {expected}"
        )
    model.load_state_dict({k: state[k] for k in model_state}, strict=True)
    return f"loaded from {path}"


def _unwrap(state: object, path: Path, expected: str) -> dict[str, torch.Tensor]:
    for _ in range(3):
        if isinstance(state, dict) and not _is_tensor_dict(state):
            inner = next((state[k] for k in _WRAPPER_KEYS if isinstance(state.get(k), dict)), None)
            if inner is None:
                break
            state = inner
    if not isinstance(state, dict) or not _is_tensor_dict(state):
        raise InvalidInput(f"checkpoint {path} holds no state dict of tensors; expected {expected}")
    return state


def _strip_wrappers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop a prefix that every key shares, as DataParallel and DINO leave behind."""
    for prefix in ("module.", "backbone.", "model."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _is_tensor_dict(state: dict) -> bool:
    return bool(state) and all(isinstance(v, torch.Tensor) for v in state.values())


def _sample(keys: list[str], n: int = 4) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", and {len(keys) - n} more" if len(keys) > n else "")


def load_from_hub(hub_id: str, expected: str, **create_kwargs: object) -> nn.Module:
    """Build ``hub_id`` through timm with its pretrained weights from the hub cache.

    Needs the weights in the Hugging Face cache or a network that reaches the
    hub (and access to gated models); otherwise one sentence says what to pass.
    """
    import timm

    _cache_only_if_hub_unreachable()
    try:
        return timm.create_model(hub_id, pretrained=True, **create_kwargs)
    except Exception as exc:
        raise NotFound(
            f"weights for {hub_id} are not in the hub cache and the hub cannot be reached "
            f"({type(exc).__name__}); pass --weights with {expected}"
        ) from exc


HUB_PROBE_TIMEOUT_S = 3.0


def _cache_only_if_hub_unreachable() -> None:
    """Switch the Hugging Face hub to its offline (cache-only) mode when it cannot
    be reached: otherwise every download retries with back-off for up to a
    minute before the same refusal. Behind a proxy the hub is not probed."""
    from huggingface_hub import constants

    proxied = any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY"))
    if constants.HF_HUB_OFFLINE or proxied:
        return
    endpoint = urlsplit(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=HUB_PROBE_TIMEOUT_S).close()
    except OSError:
        constants.HF_HUB_OFFLINE = True  # read at each call by huggingface_hub
