"""Feature extractors: RGB tiles in, grids of non-negative feature vectors out.

>>> from fseg_server.extract import create_extractor
>>> extractor = create_extractor("stain")
>>> extractor.spec.stride, extractor.spec.mpp
(4, 1.0)

timm is imported where a network is built, never when this package loads:
importing it takes about 1.4 s (it loads torchvision's model zoo), which a
server that runs only ``stain`` never needs and ``fseg segment`` waits for.
"""

from . import cnn, stain, timm_any, vit  # noqa: F401  (registration side effects)
from .base import Extractor, ExtractorSpec, pad_to_multiple
from .registry import (
    available_extractors,
    create_extractor,
    extractor_spec,
    is_network,
    register,
)

__all__ = [
    "Extractor",
    "ExtractorSpec",
    "available_extractors",
    "create_extractor",
    "extractor_spec",
    "is_network",
    "pad_to_multiple",
    "register",
]
