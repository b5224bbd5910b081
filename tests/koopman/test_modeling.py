"""Structural tests of the residual actor-critics (spec korr.md §12 A.1–7, 10)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from latentstack.koopman.configuration_korr import PPOConfig, ResidualConfig, ppo_config, residual_config
from latentstack.koopman.modeling_korr import DynamicsResidual, KORRResidual, ResiPResidual, make_residual

D_O, D_A = 58, 10  # one_leg sizes


def _korr(**kw) -> KORRResidual:
    torch.manual_seed(0)
    m = make_residual(residual_config(D_O, D_A, "korr", **kw))
    assert isinstance(m, KORRResidual)
    return m


def _batch(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, D_O, generator=g), torch.randn(n, D_A, generator=g)


@pytest.mark.parametrize("kind", ["korr", "korr_goal", "resip", "dyn"])
def test_zero_init_acts_exactly_like_base(kind: str) -> None:
    torch.manual_seed(0)
    m = make_residual(residual_config(D_O, D_A, kind))
    o, ab = _batch()
    assert torch.equal(m.mean(o, ab), torch.zeros_like(ab))
    assert torch.equal(m.act(o, ab), ab)  # deterministic action == base action bit-for-bit
    assert torch.equal(m.sample(o, ab, deterministic=True)["action"], ab)
    if kind.startswith("korr"):
        assert torch.equal(m.lift(o), torch.zeros(len(o), 256))


def test_koopman_shapes_and_predict() -> None:
    m = _korr()
    assert m.koopman.K.shape == (256, 256) and m.koopman.B.shape == (256, D_A)
    z, a = torch.randn(8, 256), torch.randn(8, D_A)
    assert torch.allclose(m.koopman(z, a), z @ m.koopman.K.T + a @ m.koopman.B.T, atol=1e-6)


def test_koopman_init_statistics() -> None:
    m = _korr()
    k, b = m.koopman.K.detach(), m.koopman.B.detach()
    assert abs(float(k.mean())) < 0.02 and abs(float(k.std()) - 1) < 0.02
    assert abs(float(b.mean())) < 0.1 and abs(float(b.std()) - 1) < 0.1
    rho = float(torch.linalg.eigvals(k.double()).abs().max())
    assert 15 <= rho <= 19


def test_actor_uses_base_action_loss_uses_executed_action() -> None:
    m = _korr(action_head_std=1.0)  # non-zero heads so outputs depend on inputs
    o, ab = _batch()
    o2 = torch.randn_like(o)
    exec_a = ab + 0.5
    mu = m.mean(o, ab)
    # the loss depends on the executed action, the actor on the base action
    l1, _ = m.aux_loss(o, ab, o2)
    l2, _ = m.aux_loss(o, exec_a, o2)
    assert not torch.allclose(l1, l2)
    assert not torch.allclose(m.mean(o, exec_a), mu)
    with torch.no_grad():
        z_hat = m.koopman(m.lift(o), ab)
    assert torch.allclose(m.head(z_hat), mu)


def test_critic_sees_obs_and_base_action_not_latent() -> None:
    m = _korr()
    o, ab = _batch()
    v = m.value(o, ab)
    with torch.no_grad():
        m.koopman.K.mul_(3.0)
    assert torch.equal(m.value(o, ab), v)
    assert m.critic[0].in_features == D_O + D_A
    assert torch.allclose(m.critic[-1].bias, torch.tensor([0.25]))


def test_log_prob_fixed_std_and_executed_action() -> None:
    m = _korr(action_head_std=1.0)
    o, ab = _batch()
    assert not m.actor_logstd.requires_grad
    assert torch.equal(m.actor_logstd, torch.full((D_A,), -1.0))
    out = m.sample(o, ab, generator=torch.Generator().manual_seed(0))
    mu = m.mean(o, ab).detach()
    ref = torch.distributions.Normal(mu, torch.full_like(mu, torch.e ** -1)).log_prob(out["residual"]).sum(-1)
    assert torch.allclose(out["logprob"], ref, atol=1e-5)
    assert torch.allclose(out["action"], ab + 0.1 * out["residual"])
    lp, _, _ = m.evaluate(o, ab, out["residual"])
    assert torch.allclose(lp, ref, atol=1e-5)


def _grads(m: torch.nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor | None]:
    m.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad for n, p in m.named_parameters()}


def test_gradient_routing() -> None:
    m = _korr(action_head_std=1.0)
    o, ab = _batch()
    r = torch.randn_like(ab)
    lp, _, _ = m.evaluate(o, ab, r)
    g = _grads(m, -lp.mean())  # a PPO-style actor loss
    for name in ("lift.0.weight", "lift.4.weight", "koopman.K", "koopman.B", "head.4.weight"):
        assert g[name] is not None and g[name].abs().sum() > 0, name
    aux, _ = m.aux_loss(o, ab + 0.1 * r, torch.randn_like(o))
    g = _grads(m, aux)
    assert g["koopman.K"].abs().sum() > 0 and g["lift.4.weight"].abs().sum() > 0
    assert all(g[n] is None for n in g if n.startswith(("head.", "critic.")))
    # goal variant with is_res_bkp_kpm=False: PPO gives exactly zero grad to φ, K, B
    torch.manual_seed(0)
    mg = make_residual(residual_config(D_O, D_A, "korr_goal", action_head_std=1.0, is_res_bkp_kpm=False))
    lp, _, _ = mg.evaluate(o, ab, r)
    g = _grads(mg, -lp.mean())
    assert all(g[n] is None or g[n].abs().sum() == 0 for n in ("koopman.K", "koopman.B", "lift.0.weight"))
    assert g["head.0.weight"].abs().sum() > 0
    assert mg.head[0].in_features == 512


def test_baselines_interfaces() -> None:
    torch.manual_seed(0)
    o, ab = _batch()
    resip = make_residual(residual_config(D_O, D_A, "resip"))
    dyn = make_residual(residual_config(D_O, D_A, "dyn"))
    assert isinstance(resip, ResiPResidual) and isinstance(dyn, DynamicsResidual)
    assert resip.config.init_logstd == -1.5 and resip.config.critic_last_bias == 0.5  # ResiP's yaml
    assert float(resip.aux_loss(o, ab, o)[0]) == 0.0
    loss, info = dyn.aux_loss(o, ab, torch.randn_like(o))
    assert loss > 0 and "dyn_loss" in info
    g = _grads(dyn, loss)
    assert g["dynamics.0.weight"].abs().sum() > 0 and g["head.0.weight"] is None


def test_config_defaults_match_spec() -> None:
    c = ResidualConfig(obs_dim=D_O, action_dim=D_A)
    assert (c.kind, c.lift_dim, c.hidden_dim, c.num_layers) == ("korr", 256, 256, 2)
    assert (c.action_scale, c.init_logstd, c.learn_std, c.action_head_std) == (0.1, -1.0, False, 0.0)
    assert (c.critic_last_std, c.critic_last_bias, c.k_init, c.kpm_coef) == (0.25, 0.25, "normal", 1.0)
    p = PPOConfig()
    assert (p.num_envs, p.num_steps, p.update_epochs, p.num_minibatches) == (1024, 700, 50, 1)
    assert (p.gamma, p.gae_lambda, p.clip_coef, p.vf_coef, p.ent_coef) == (0.999, 0.95, 0.2, 1.0, 0.0)
    assert (p.lr_actor, p.lr_critic, p.target_kl, p.max_grad_norm, p.eval_interval) == (3e-4, 5e-3, 0.1, 1.0, 5)
    assert (p.reward_clip, p.norm_adv, p.clip_vloss, p.warmup_actor, p.warmup_critic) == (5.0, True, False, 5, 0)
    cpu = ppo_config("cpu")
    assert dataclasses.replace(cpu, num_envs=1024, num_steps=700, num_iterations=1395, update_epochs=50) == p
    with pytest.raises(ValueError, match="kind"):
        ResidualConfig(obs_dim=3, action_dim=2, kind="sac")
    with pytest.raises(ValueError, match="k_init"):
        ResidualConfig(obs_dim=3, action_dim=2, k_init="eye")
    with pytest.raises(ValueError, match="unknown residual preset"):
        residual_config(3, 2, preset="nope")
