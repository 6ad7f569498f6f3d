"""What every feature extractor declares and how images go through it.

An extractor maps an RGB tile to a grid of non-negative feature vectors: one
*feature cell* per ``stride`` x ``stride`` input pixels, at the extractor's
working resolution (``mpp``, µm per input pixel). Tiles of any size are padded
to a multiple of the stride by edge replication and the grid is cropped back,
as the F-SEG reference does.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .block_tensor import run_block_sparse

#: Feature cells along each side of the probe images that check an extractor
#: once, when it is built (its grid geometry) and placed (batch-norm folding).
PROBE_CELLS = 8
#: Values sampled per weight tensor for :meth:`Extractor.weights_fingerprint`.
FINGERPRINT_SAMPLES = 4096


@dataclass(frozen=True)
class ExtractorSpec:
    """Static description of an extractor.

    Attributes:
        name: registry id (``uni``, ``stain``, ``timm:convnext_tiny``...).
        feature_dim: channels C of the feature grid.
        stride: input pixels (at ``mpp``) per feature cell, along each axis.
        mpp: native working resolution in µm per pixel; whole-slide reading
            resamples the slide to this unless the caller overrides it.
        mean, std: per-channel RGB normalisation applied to inputs in [0, 1].
        tile_size: edge in pixels at ``mpp`` (a multiple of stride) of the
            square tiles sampled to fit a concept bank, margins excluded, and
            the reference for batches: ``batch_size`` tiles of this size and
            margin is what one forward pass takes.
        region_size: longest side in pixels at ``mpp`` of the tissue regions
            a slide is segmented in, margins excluded (0: ``tile_size``).
            Convolutional networks take large regions, so context margins are
            paid once per region; attention cost grows with the square of
            the tokens, so vision transformers keep regions tile-sized.
        margin: context in pixels at ``mpp`` added on every side of a tile so
            cells near its edge see their neighbours (a multiple of stride).
        weights: what checkpoint the extractor expects, in words, for messages.
        concept_window: edge in pixels at ``mpp`` of the windows whose averaged
            features are the samples k-means fits a concept bank on (the F-SEG
            authors averaged 256-px tiles).
        batch_size: tiles per forward pass by default.
        network: whether the extractor is a learnt network. False for those
            whose arithmetic is measurement (``stain``'s colour deconvolution):
            they stay in fp32, and a server of them alone needs no memory
            kept for activations (``memory.py``).
        glass_channel: index of a feature channel that is the share (0 to 1)
            of a cell's pixels that are glass, for extractors that measure it
            (``stain``); a bank fitted on their features keeps one concept for
            glass (``concepts.kmeans.fit_concepts``). None for networks.
    """

    name: str
    feature_dim: int
    stride: int
    mpp: float
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    tile_size: int = 512
    region_size: int = 0
    margin: int = 32
    weights: str = "none needed"
    concept_window: int = 256
    batch_size: int = 8
    network: bool = True
    glass_channel: int | None = None

    @property
    def region(self) -> int:
        """Longest side of a tissue region, pixels at ``mpp``, margins excluded."""
        return self.region_size or self.tile_size

    @property
    def batch_pixels(self) -> int:
        """Input pixels (margins included) one forward pass takes at most."""
        return self.batch_size * (self.tile_size + 2 * self.margin) ** 2


def probe_image(stride: int) -> torch.Tensor:
    """The seeded random (1, 3, S, S) image of PROBE_CELLS cells a side that checks
    the rewrites of a network when it is placed (folding, fusing, block-sparse): one
    image, so that its convolutions are set up once."""
    side = PROBE_CELLS * stride
    return torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(0))


class Extractor(nn.Module):
    """Base class: subclasses implement :meth:`features` on normalised input."""

    spec: ExtractorSpec
    #: Human-readable state of the weights: "built in", "loaded from FILE", "random".
    weights_state: str = "built in"
    #: Convolutional networks run faster on channels-last memory, on CPUs
    #: (oneDNN) as on GPUs; elementwise and attention models gain nothing.
    prefers_channels_last: bool = False
    #: Whether the network computes tissue blocks alone (``sparse.py``): set when
    #: it is placed on its device, by a probe (:func:`sparse.runs_block_sparse`).
    block_sparse: bool = False
    _fingerprint: str | None = None

    def __init__(self, spec: ExtractorSpec) -> None:
        super().__init__()
        self.spec = spec
        self.register_buffer("_mean", torch.tensor(spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(spec.std).view(1, 3, 1, 1), persistent=False)

    @property
    def low_precision_ok(self) -> bool:
        """Whether the forward may run in bf16: networks only (``spec.network``)."""
        return self.spec.network

    def weights_fingerprint(self) -> str:
        """A digest of the weights themselves, so that caches notice a new checkpoint.

        Every tensor's name and shape, and an evenly strided sample of at most
        FINGERPRINT_SAMPLES of its values: milliseconds even for ViT-giant,
        and two checkpoints (or two random initialisations) differ in it.
        """
        if self._fingerprint is None:
            # The spec too: a built-in extractor has no weights, yet its features
            # change shape when its recipe does.
            digest = hashlib.sha256(repr(self.spec).encode())
            for name, tensor in self.state_dict().items():
                flat = tensor.detach().reshape(-1)
                step = max(1, flat.numel() // FINGERPRINT_SAMPLES)
                sample = flat[::step].float().cpu().numpy()
                digest.update(f"{name}{tuple(tensor.shape)}".encode())
                digest.update(sample.tobytes())
            self._fingerprint = digest.hexdigest()[:32]
        return self._fingerprint

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Feature grid of a batch of RGB images.

        Args:
            images: (B, 3, H, W), uint8 in [0, 255] or float in [0, 1]; any H, W.

        Returns:
            (B, C, ceil(H / stride), ceil(W / stride)) non-negative float features;
            cell (i, j) covers input pixels [i*stride, (i+1)*stride) along y.
        """
        height, width = images.shape[-2:]
        # Replicating the edge commutes with normalising each channel.
        x = pad_to_multiple(self._normalised(images), self.spec.stride)
        grid = self.features(x)
        rows, cols = math.ceil(height / self.spec.stride), math.ceil(width / self.spec.stride)
        return grid[..., :rows, :cols]

    def forward_blocks(self, blocks: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
        """Features of packed blocks, each seeing its neighbours (see ``sparse.py``).

        Args:
            blocks: (n + 1, 3, b, b) RGB, uint8 or float in [0, 1]; b a multiple
                of the stride; the last block is uniform glass.
            neighbours: (n + 1, 8) pack indices of each block's neighbours.

        Returns:
            (n + 1, C, b / stride, b / stride) features.
        """
        return run_block_sparse(self.features, self._normalised(blocks), neighbours)

    def _normalised(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 in [0, 255] or float in [0, 1] -> normalised fp32."""
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        return (x - self._mean) / self._std

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised, H and W multiples of stride -> (B, C, H/s, W/s) >= 0."""
        raise NotImplementedError


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad (B, C, H, W) on the bottom and right to multiples of ``multiple``.

    Edge replication rather than zeros: a black border would look like dense
    tissue to every extractor and leak into the last row of cells.
    """
    height, width = x.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
