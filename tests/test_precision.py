"""Networks compute in bf16 where the hardware multiplies bf16 natively; measurements never do."""

from __future__ import annotations

import torch

from fseg_server.device import cpu_has_bf16_units, describe_device, inference_precision
from fseg_server.extract import create_extractor
from fseg_server.pipeline.recipes import extract_features


def test_a_network_runs_in_bf16_on_a_cpu_with_bf16_units_and_fp32_elsewhere():
    layer = torch.nn.Linear(4, 4)
    with inference_precision(torch.device("cpu")):
        dtype = layer(torch.ones(1, 4)).dtype
    assert dtype == (torch.bfloat16 if cpu_has_bf16_units() else torch.float32)
    assert ("bf16" in describe_device(torch.device("cpu"))) == cpu_has_bf16_units()


def test_an_extractor_that_opts_out_stays_in_fp32():
    layer = torch.nn.Linear(4, 4)
    with inference_precision(torch.device("cpu"), low_precision=False):
        assert layer(torch.ones(1, 4)).dtype == torch.float32


def test_stain_features_are_the_same_whatever_the_cpu():
    """The stain extractor's colour deconvolution is measurement: never in bf16."""
    stain = create_extractor("stain")
    tiles = torch.randint(0, 256, (1, 64, 64, 3), dtype=torch.uint8)
    with torch.inference_mode():
        exact = stain(tiles.permute(0, 3, 1, 2))
    assert torch.equal(extract_features(stain, tiles), exact)


def test_network_features_in_low_precision_stay_close_to_fp32():
    torch.manual_seed(0)
    net = create_extractor("timm:resnet18", "random")
    tiles = torch.randint(0, 256, (1, 128, 128, 3), dtype=torch.uint8)
    with torch.inference_mode():
        exact = net(tiles.permute(0, 3, 1, 2)).float()
    fast = extract_features(net, tiles)
    assert fast.dtype == torch.float32
    assert float((fast - exact).norm() / exact.norm()) < 0.05
