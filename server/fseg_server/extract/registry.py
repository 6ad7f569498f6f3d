"""The extractor registry: one decorator per model, one way to build any of them.

Adding a model is a function that returns an :class:`Extractor` and a
``@register("name")`` line above it. Callers never branch on model names;
they ask :func:`create_extractor` and read the returned ``spec``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import NotFound
from .base import Extractor, ExtractorSpec

#: A factory takes the weights location (None: hub cache or built in;
#: "random": random initialisation for benchmarks) and returns a ready module.
Factory = Callable[[str | Path | None], Extractor]

_FACTORIES: dict[str, Factory] = {}
_SPECS: dict[str, ExtractorSpec] = {}
_PREFIX_FACTORIES: dict[str, Callable[[str, str | Path | None], Extractor]] = {}


def register(spec: ExtractorSpec) -> Callable[[Factory], Factory]:
    """Register ``factory`` under ``spec.name`` (decorator)."""

    def wrap(factory: Factory) -> Factory:
        _FACTORIES[spec.name] = factory
        _SPECS[spec.name] = spec
        return factory

    return wrap


def register_prefix(prefix: str) -> Callable:
    """Register a family such as ``timm:<architecture>``; the factory gets the suffix."""

    def wrap(factory: Callable[[str, str | Path | None], Extractor]) -> Callable:
        _PREFIX_FACTORIES[prefix] = factory
        return factory

    return wrap


def extractor_spec(name: str) -> ExtractorSpec:
    """The spec of ``name`` without loading weights.

    Family members (``timm:...``) are built on the meta device, which
    allocates no memory, to read their dimensions.
    """
    if name in _SPECS:
        return _SPECS[name]
    import torch

    with torch.device("meta"):
        return create_extractor(name, "random").spec


def is_network(name: str) -> bool:
    """Whether extractor ``name`` is a learnt network (``ExtractorSpec.network``), without
    building it: every ``prefix:<architecture>`` family is one."""
    spec = _SPECS.get(name)
    return True if spec is None else spec.network


def available_extractors() -> list[str]:
    """Registered ids, with families shown as ``prefix:<architecture>``."""
    return sorted(_FACTORIES) + [f"{p}:<architecture>" for p in sorted(_PREFIX_FACTORIES)]


def create_extractor(name: str, weights: str | Path | None = None) -> Extractor:
    """Build extractor ``name`` in eval mode on the CPU.

    Args:
        name: a registered id (``stain``, ``uni``...) or ``timm:<architecture>``.
        weights: a local checkpoint (.safetensors, .bin, .pth), ``"random"`` for
            random weights (benchmarks only), or None for the built-in or
            hub-cached weights.

    Raises:
        NotFound: for an unknown name.
        InvalidInput / NotFound: for a checkpoint that is missing or does not fit.
    """
    if name in _FACTORIES:
        extractor = _FACTORIES[name](weights)
    elif ":" in name and name.split(":", 1)[0] in _PREFIX_FACTORIES:
        prefix, suffix = name.split(":", 1)
        extractor = _PREFIX_FACTORIES[prefix](suffix, weights)
    else:
        raise NotFound(
            f"unknown extractor {name!r}; available: {', '.join(available_extractors())}"
        )
    return extractor.eval().requires_grad_(False)
