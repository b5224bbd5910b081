"""CoDyRA adapters (spec §13.7): identity at init, dense/sparse phases, both threshold rules, merge."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from latentstack.perception.stereo.codyra import (
    CoDyRAConv2d,
    CoDyRALinear,
    add_codyra,
    codyra_l1,
    codyra_modules,
    codyra_threshold_,
    kappa_schedule,
    merge_codyra,
)


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 1), nn.Flatten(), nn.Linear(8 * 25, 4))


def test_adapters_start_as_identity_and_freeze_the_base():
    net = _net()
    x = torch.randn(2, 3, 5, 5)
    before = net(x)
    assert add_codyra(net, rank=4) == 3
    torch.testing.assert_close(net(x), before, rtol=0, atol=0)  # B = 0 ⇒ exactly the frozen model
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable and all(n.rsplit(".", 1)[-1] in ("lora_A", "lora_B", "lora_w") for n in trainable)


def test_merge_keeps_the_output():
    net = _net()
    add_codyra(net, rank=4)
    for m in codyra_modules(net):
        with torch.no_grad():
            m.lora_B.normal_()
            m.lora_w.uniform_(-1, 1)
    x = torch.randn(2, 3, 5, 5)
    before = net(x)
    merge_codyra(net)
    torch.testing.assert_close(net(x), before, atol=1e-5, rtol=1e-5)


def test_kappa_schedule_dense_then_linear_ramp():
    assert kappa_schedule(0, 100) == 0.0 and kappa_schedule(49, 100) == 0.0
    assert kappa_schedule(75, 100) == pytest.approx(0.0025)
    assert kappa_schedule(100, 100) == pytest.approx(0.005) and kappa_schedule(500, 100) == pytest.approx(0.005)


@pytest.mark.parametrize("rule", ["released", "soft"])
def test_threshold_rules(rule):
    lin = CoDyRALinear(nn.Linear(4, 3), rank=5)
    w0 = torch.tensor([0.5, -0.5, 0.004, -0.003, 0.0])
    with torch.no_grad():
        lin.lora_w.copy_(w0)
    codyra_threshold_(lin, 0.0, rule)  # dense phase: inert
    torch.testing.assert_close(lin.lora_w.data, w0)
    codyra_threshold_(lin, 0.005, rule)
    w = lin.lora_w.data
    assert torch.all(w[2:] == 0)  # |w| ≤ κ ⇒ exactly 0 under both rules
    if rule == "released":
        torch.testing.assert_close(w[:2], torch.tensor([0.505, -0.505]))  # pushed away from zero (released code)
    else:
        torch.testing.assert_close(w[:2], torch.tensor([0.495, -0.495]))  # shrunk (textbook soft threshold)
    with pytest.raises(ValueError):
        lin.threshold_(0.1, "hard")


def test_l1_and_conv_adapter_shapes():
    conv = CoDyRAConv2d(nn.Conv2d(3, 6, 3), rank=2)
    assert conv.lora_A.shape == (2, 27) and conv.lora_B.shape == (6, 2)
    assert codyra_l1(conv).item() == pytest.approx(2.0)
    with pytest.raises(ValueError):
        CoDyRAConv2d(nn.Conv2d(4, 4, 3, groups=4), rank=2)
