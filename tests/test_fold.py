"""Batch norms folded into the convolutions before them when an extractor is placed
on its device: the same features, one pass over each activation fewer.

Built from random weights saved as a checkpoint, so that a folded and an
unfolded extractor hold the same network.
"""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from fseg_server.device import place
from fseg_server.extract import create_extractor
from fseg_server.extract.fold import fold_batch_norms

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def resnet18_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    net = timm.create_model("resnet18", pretrained=False)
    for module in net.modules():  # statistics a trained network would have, not 0 and 1
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(net.state_dict(), path)
    return path


def batch_norms(module: nn.Module) -> list[str]:
    return [name for name, m in module.named_modules() if isinstance(m, nn.BatchNorm2d)]


def test_every_batch_norm_the_features_pass_through_is_folded(resnet18_checkpoint):
    extractor = place(create_extractor("timm:resnet18", resnet18_checkpoint), CPU)
    # Only layer4 keeps its norms: the features stop at layer3 and never run it.
    assert batch_norms(extractor)
    assert all(name.startswith("net.layer4.") for name in batch_norms(extractor))


def test_folded_features_equal_the_unfolded_ones(resnet18_checkpoint):
    unfolded = create_extractor("timm:resnet18", resnet18_checkpoint)
    folded = place(create_extractor("timm:resnet18", resnet18_checkpoint), CPU)
    assert len(batch_norms(unfolded)) > len(batch_norms(folded))
    image = torch.randint(0, 256, (2, 3, 96, 160), dtype=torch.uint8)
    with torch.no_grad():
        expected, got = unfolded(image), folded(image)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_one_checkpoint_folds_to_one_fingerprint(resnet18_checkpoint):
    # Feature caches key on the fingerprint: folding must not make it vary.
    def fingerprint() -> str:
        extractor = create_extractor("timm:resnet18", resnet18_checkpoint)
        return place(extractor, CPU).weights_fingerprint()

    first = fingerprint()
    assert fingerprint() == first


class ConvOutputUsedTwice(nn.Module):
    """A norm fed by a convolution whose output is also added back functionally:
    folding the norm would change the sum, and no module hook sees the addition."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.BatchNorm2d(8)
        self.norm.running_var.fill_(4.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.norm(y) + y


def test_a_fold_that_changes_the_features_is_undone():
    net = ConvOutputUsedTwice().eval()
    probe = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        before = net(probe)
        assert fold_batch_norms(net, net, probe) == 0
        after = net(probe)
    assert isinstance(net.norm, nn.BatchNorm2d)
    assert torch.equal(before, after)
