"""KORR heads (all residual kinds) and the chunk base on a device: actor/critic/sample and the Policy wrappers after
``.to(device)`` match the CPU (``device`` fixture: cpu, and cuda marked ``gpu``); a CPU check catches tensors
created without an explicit device."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from latentstack.koopman.base_policy import ChunkBaseConfig, ChunkBasePolicy, ChunkMLPBase, MinMaxNormalizer
from latentstack.koopman.configuration_korr import ResidualConfig
from latentstack.koopman.modeling_korr import ResidualActorCritic, make_residual
from latentstack.koopman.residual_policy import ResidualPolicy

TOL = {"rtol": 1e-4, "atol": 1e-5}  # small fp32 MLPs (TF32 off in the fixture)
OBS, ACT = 7, 3


def _residual(kind: str) -> ResidualActorCritic:
    torch.manual_seed(0)
    m = make_residual(ResidualConfig(obs_dim=OBS, action_dim=ACT, kind=kind, lift_dim=16, hidden_dim=32,
                                     action_head_std=0.5))  # non-zero heads: outputs depend on every layer
    if kind == "korr_goal":
        m.set_goal(torch.linspace(-1, 1, OBS))
    return m.eval()


def _base() -> ChunkMLPBase:
    torch.manual_seed(1)
    g = torch.Generator().manual_seed(2)
    cfg = ChunkBaseConfig(obs_dim=OBS, action_dim=ACT, horizon=6, n_action_steps=3, hidden_dim=32, num_layers=2)
    obs_norm = MinMaxNormalizer(-torch.rand(OBS, generator=g) - 1, torch.rand(OBS, generator=g) + 1, clamp=3.0)
    act_norm = MinMaxNormalizer(-torch.ones(ACT), torch.ones(ACT) * 2)
    return ChunkMLPBase(cfg, obs_norm, act_norm).eval()


def _inputs(n: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, OBS, generator=g), torch.rand(n, ACT, generator=g) * 2 - 1


@pytest.mark.parametrize("kind", ["korr", "korr_goal", "resip", "dyn"])
def test_residual_heads_on_device_match_cpu(kind: str, device: str) -> None:
    cpu = _residual(kind)
    dev = copy.deepcopy(cpu).to(device)
    assert dev.device.type == device
    obs, a_b = _inputs()
    obs_d, a_d = obs.to(device), a_b.to(device)
    with torch.no_grad():
        for name in ("mean", "value", "act"):
            out, ref = getattr(dev, name)(obs_d, a_d), getattr(cpu, name)(obs, a_b)
            assert out.device.type == device
            torch.testing.assert_close(out.cpu(), ref, **TOL)
    # exploration noise from a CPU generator: the same draw on every device, then moved
    s_dev = dev.sample(obs_d, a_d, generator=torch.Generator().manual_seed(4))
    s_cpu = cpu.sample(obs, a_b, generator=torch.Generator().manual_seed(4))
    for k in s_cpu:
        assert s_dev[k].device.type == device
        torch.testing.assert_close(s_dev[k].cpu(), s_cpu[k], **TOL)
    logp, ent, value = dev.evaluate(obs_d, a_d, s_dev["residual"])
    assert logp.device.type == device and value.device.type == device and torch.isfinite(ent).all()
    loss, _ = dev.aux_loss(obs_d, a_d, obs_d + 0.1)
    assert loss.device.type == device


def test_base_and_residual_policy_on_device_match_cpu(device: str) -> None:
    base_cpu = ChunkBasePolicy(_base())
    base_dev = ChunkBasePolicy(copy.deepcopy(base_cpu.model)).to(device)
    assert base_dev.device.type == device
    res_cpu = ResidualPolicy(ChunkBasePolicy(_base()), _residual("korr"), obs_norm=_base().obs_norm,
                             action_norm=_base().action_norm)
    res_dev = copy.deepcopy(res_cpu).to(device)
    res_dev.base.to(device)  # the base is a plain Policy object, moved on its own
    assert res_dev.device.type == device
    rng = np.random.default_rng(5)
    for pol in (base_cpu, base_dev, res_cpu, res_dev):
        pol.reset(0)
    for _ in range(7):  # three base chunks
        obs = {"state": rng.normal(size=OBS).astype(np.float32)}
        a, b = base_dev.select_action(obs), base_cpu.select_action(obs)
        assert isinstance(a, np.ndarray) and a.dtype == np.float32
        np.testing.assert_allclose(a, b, **TOL)
        np.testing.assert_allclose(res_dev.select_action(obs), res_cpu.select_action(obs), **TOL)
        np.testing.assert_allclose(res_dev.last_mean, res_cpu.last_mean, **TOL)


def test_korr_creates_no_tensor_off_its_device() -> None:
    """``meta`` as the default device while the CPU models run: a tensor made without ``device=`` (noise from
    ``torch.randn`` without one, say) lands on meta and breaks the computation."""
    m = _residual("korr_goal")
    obs, a_b = _inputs()
    ref = m.sample(obs, a_b, generator=torch.Generator().manual_seed(4))
    pol = ResidualPolicy(ChunkBasePolicy(_base()), _residual("korr"), obs_norm=_base().obs_norm,
                         action_norm=_base().action_norm)
    state = {"state": np.linspace(-1, 1, OBS, dtype=np.float32)}
    pol.reset(0)
    a_ref = pol.select_action(state)
    pol.reset(0)
    gen = torch.Generator().manual_seed(4)
    with torch.device("meta"):
        out = m.sample(obs, a_b, generator=gen)
        a = pol.select_action(state)
    for k in ref:
        assert out[k].device.type == "cpu" and torch.equal(out[k], ref[k])
    np.testing.assert_array_equal(a, a_ref)
