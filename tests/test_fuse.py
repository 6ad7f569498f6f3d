"""Each convolution fused with the ReLU that alone reads its output, when an extractor
is placed on its device: the same features, one pass over the activations fewer.

Networks are timm's with random weights, and small hand-built ones for the
cases a fusion must leave alone.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from fseg_server.device import inference_precision, place
from fseg_server.extract import create_extractor
from fseg_server.extract.fold import fold_extractor
from fseg_server.extract.fuse import (
    Conv2dReLU,
    fuse_conv_relus,
    fuse_extractor,
    fuse_residual_sums,
)

CPU = torch.device("cpu")


def fused(module: nn.Module) -> int:
    return sum(type(m) is Conv2dReLU for m in module.modules())


def relus(module: nn.Module) -> int:
    return sum(type(m) is nn.ReLU for m in module.modules())


def test_each_convolution_and_the_relu_reading_it_become_one_with_the_same_features():
    torch.manual_seed(0)
    plain = create_extractor("timm:resnet18", "random").eval()
    fold_extractor(plain)
    fusing = copy.deepcopy(plain)
    names = list(fusing.state_dict())
    # The stem and the first convolution of each block of layers 1 to 3 take their
    # ReLU; each of those 6 blocks adds its shortcut and applies its last ReLU as its
    # second convolution writes.
    assert fuse_extractor(fusing) == 7 + 6
    assert fused(fusing) == 7 and relus(fusing) == relus(plain) - 7
    assert sum("forward" in vars(m) for m in fusing.modules()) == 6
    assert list(fusing.state_dict()) == names  # weights keep their names
    image = torch.rand(1, 3, 160, 192, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected, got = plain(image), fusing(image)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def test_fused_features_in_bf16_match_the_unfused_network():
    torch.manual_seed(0)
    plain = create_extractor("timm:resnet18", "random").eval()
    fold_extractor(plain)
    fusing = copy.deepcopy(plain)
    fuse_extractor(fusing)
    image = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    with inference_precision(CPU):
        expected, got = plain(image).float(), fusing(image).float()
    # Both round to bf16 at every layer, in a different order.
    assert float((got - expected).abs().max()) <= 0.03 * float(expected.abs().max())


class Residual(nn.Module):
    """conv -> (+ shortcut, in place) -> ReLU: the ReLU reads the sum, not the conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        y += x
        return self.act(y)


class TwoReaders(nn.Module):
    """conv -> ReLU, and the conv's output also read by a second convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.act = nn.ReLU()
        self.other = nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.act(y) + self.other(y)


def test_a_relu_that_reads_more_than_the_convolution_is_left_alone():
    probe = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    for net in (Residual(), TwoReaders()):
        net.eval()
        with torch.inference_mode():
            expected = net(probe)
        assert fuse_conv_relus(net, net, probe) == 0
        assert fused(net) == 0 and relus(net) == 1
        with torch.inference_mode():
            assert torch.equal(net(probe), expected)


def test_a_residual_block_with_squeeze_and_excitation_keeps_its_own_forward():
    torch.manual_seed(0)
    net = create_extractor("timm:seresnet18", "random").eval()
    fold_extractor(net)
    probe = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert fuse_residual_sums(net, net.features, probe) == 0
    assert not any("forward" in vars(m) for m in net.modules())


def test_placing_a_network_fuses_it_and_a_vision_transformer_is_untouched():
    torch.manual_seed(0)
    assert fused(place(create_extractor("timm:resnet50", "random"), CPU)) == 27
    assert fused(place(create_extractor("timm:vit_tiny_patch16_224", "random"), CPU)) == 0
