"""PPO math against hand-computed values (spec korr.md §12 A.8, 9)."""
from __future__ import annotations

import math

import pytest
import torch

from latentstack.koopman.ppo import RunningStdRewardNormalizer, gae, ppo_losses


def test_gae_hand_computed_with_done_masking() -> None:
    g, lam = 0.999, 0.95
    r = torch.tensor([[0.0], [1.0], [0.0]])
    v = torch.tensor([[0.5], [0.6], [0.7]])
    dones = torch.tensor([[0.0], [0.0], [1.0]])  # done before step 2 (after step 1's success)
    nv, nd = torch.tensor([0.9]), torch.tensor([1.0])
    adv, ret = gae(r, v, dones, nv, nd, g, lam)
    d2 = 0.0 + 0.0 - 0.7  # masked by next_done
    d1 = 1.0 + 0.0 - 0.6  # dones[2] masks the bootstrap from step 2
    d0 = 0.0 + g * 0.6 - 0.5
    a2, a1 = d2, d1
    a0 = d0 + g * lam * a1
    assert torch.allclose(adv.squeeze(), torch.tensor([a0, a1, a2]), atol=1e-6)
    assert torch.allclose(ret, adv + v)
    # no dones: bootstrap from next_value
    adv2, _ = gae(r, v, torch.zeros_like(dones), nv, torch.tensor([0.0]), g, lam)
    assert adv2[2, 0] == pytest.approx(0.0 + g * 0.9 - 0.7)


def test_ppo_losses_hand_computed() -> None:
    old = torch.tensor([0.0, 0.0, 0.0, 0.0])
    new = torch.tensor([math.log(1.5), math.log(0.5), math.log(1.1), 0.0])
    adv = torch.tensor([1.0, -1.0, 2.0, -2.0])
    val, ret = torch.tensor([1.0, 2.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0, 0.0])
    out = ppo_losses(new, old, adv, val, ret, torch.zeros(4), clip_coef=0.2, norm_adv=True)
    a = (adv - adv.mean()) / (adv.std() + 1e-8)
    ratio = torch.tensor([1.5, 0.5, 1.1, 1.0])
    ref = torch.max(-a * ratio, -a * ratio.clamp(0.8, 1.2)).mean()
    assert out.policy.item() == pytest.approx(ref.item(), rel=1e-6)
    assert out.value.item() == pytest.approx(0.5 * (1 + 4 + 1 + 0) / 4)
    kl = ((ratio - 1) - ratio.log()).mean()
    assert out.approx_kl.item() == pytest.approx(kl.item(), rel=1e-6)
    assert out.clipfrac.item() == pytest.approx(0.5)
    raw = ppo_losses(new, old, adv, val, ret, torch.zeros(4), norm_adv=False)
    assert raw.policy.item() == pytest.approx(torch.max(-adv * ratio, -adv * ratio.clamp(0.8, 1.2)).mean().item(),
                                             rel=1e-6)


def test_reward_normalizer_divides_by_running_std_only_and_clips() -> None:
    n = RunningStdRewardNormalizer(clip=5.0, epsilon=0.0)
    x = torch.tensor([0.0, 0.0, 0.0, 4.0])
    y = n(x)
    std = float(x.double().std(unbiased=False))
    assert torch.allclose(y, (x / std).float(), atol=1e-6)  # no centring: zeros stay zero
    assert y[0] == 0
    big = n(torch.tensor([1000.0]), update=False)
    assert big.item() == 5.0
    # streaming update equals batch statistics
    m = RunningStdRewardNormalizer(epsilon=0.0)
    data = torch.randn(100)
    for chunk in data.split(7):
        m.update(chunk)
    assert m.var == pytest.approx(float(data.double().var(unbiased=False)), rel=1e-9)
