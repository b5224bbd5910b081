"""Toy insertion env, chunked base, and trainer behaviour (spec korr.md §12 C.18, 19)."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from latentstack.koopman.configuration_korr import ppo_config, residual_config
from latentstack.koopman.modeling_korr import make_residual
from latentstack.koopman.toy_env import ChunkedToyBase, ToyInsertionConfig, ToyInsertionEnv
from latentstack.koopman.trainer import collect, iteration_seed, train_residual


def test_env_is_deterministic_and_sticky_done() -> None:
    cfg = ToyInsertionConfig(num_envs=32)
    a = collect(ToyInsertionEnv(cfg), ChunkedToyBase(), None, seed=3, num_steps=60, deterministic=True)
    b = collect(ToyInsertionEnv(cfg), ChunkedToyBase(), None, seed=3, num_steps=60, deterministic=True)
    assert torch.equal(a.obs, b.obs) and torch.equal(a.reward, b.reward)
    assert a.reward.sum(0).max() <= 1  # +1 once per part
    first = a.reward.argmax(0)
    for i in torch.nonzero(a.success).flatten():  # done stays true after success, no auto-reset
        assert a.dones[first[i] + 1:, i].all()
    assert 0.1 < a.success.float().mean() < 0.9  # the biased base neither always fails nor succeeds


def test_wall_blocks_outside_slot_and_slot_confines_x() -> None:
    env = ToyInsertionEnv(ToyInsertionConfig(num_envs=2))
    env.reset(0)
    env.hole = torch.tensor([0.0, 0.0])
    env.pos = torch.tensor([[0.2, 0.05], [0.0, 0.05]])
    for _ in range(30):
        _, _, done, _ = env.step(torch.tensor([[0.2, -1.0], [0.0, -1.0]]))
    assert env.pos[0, 1] == 0.0 and not done[0]  # jammed on the wall top
    assert done[1] and env.pos[1, 1] == -env.config.slot_depth
    with pytest.raises(ValueError):
        env.step(torch.full((2, 2), float("nan")))
    with pytest.raises(ValueError):
        env.step(torch.zeros(3, 2))


def test_perturbation_only_when_enabled() -> None:
    cfg = ToyInsertionConfig(num_envs=256)
    env = ToyInsertionEnv(cfg)
    collect(env, ChunkedToyBase(), None, 0, 60, True)
    assert env.kicks == 0
    env = ToyInsertionEnv(replace(cfg, perturb=True, perturb_prob=0.05))
    collect(env, ChunkedToyBase(), None, 0, 60, True)
    assert env.kicks > 0


@pytest.mark.parametrize("kind", ["korr", "resip", "dyn"])
def test_iteration_zero_equals_base_exactly(kind: str) -> None:
    cfg = ToyInsertionConfig(num_envs=32)
    torch.manual_seed(0)
    model = make_residual(residual_config(5, 2, kind, hidden_dim=32, lift_dim=32))
    seed = iteration_seed(0, 1)
    base_only = collect(ToyInsertionEnv(cfg), ChunkedToyBase(), None, seed, 60, True)
    with_res = collect(ToyInsertionEnv(cfg), ChunkedToyBase(), model, seed, 60, True)
    assert torch.equal(base_only.action, with_res.action)
    assert torch.equal(base_only.success, with_res.success)
    res = train_residual(ToyInsertionEnv(cfg), ChunkedToyBase(), model,
                         ppo_config("cpu", num_envs=32, num_steps=60, num_iterations=1), progress=False)
    assert res.history[0]["eval"] and res.history[0]["success"] == float(base_only.success.float().mean())


def test_korr_training_logs_diagnostics_and_learns_koopman_model() -> None:
    cfg = ToyInsertionConfig(num_envs=32)
    torch.manual_seed(0)
    model = make_residual(residual_config(5, 2, "korr", hidden_dim=64, lift_dim=64))
    res = train_residual(ToyInsertionEnv(cfg), ChunkedToyBase(), model,
                         ppo_config("cpu", num_envs=32, num_steps=60, num_iterations=12, update_epochs=10),
                         progress=False)
    upd = [h for h in res.history if not h["eval"]]
    assert len(upd) == 9 and [h["eval"] for h in res.history[:6]] == [True, False, False, False, False, True]
    for h in upd:
        assert {"var_phi", "rel_kpm_error", "rho_K", "kpm_loss", "success", "approx_kl"} <= set(h)
        assert 6.0 < h["rho_K"] < 10.0  # ≈ √64: faithful N(0,1) K is not pulled towards stability
    # φ starts at exactly zero and grows (no collapse); the relative one-step error falls
    assert upd[-1]["var_phi"] > 1e-3
    assert upd[-1]["rel_kpm_error"] < 0.1 * upd[0]["rel_kpm_error"]
    assert res.best_state is not None and res.best_iteration >= 1


def test_goal_variant_takes_goal_from_first_successful_rollout() -> None:
    cfg = ToyInsertionConfig(num_envs=32)
    torch.manual_seed(0)
    model = make_residual(residual_config(5, 2, "korr_goal", hidden_dim=16, lift_dim=8))
    assert torch.equal(model.goal_obs, torch.zeros(5))
    res = train_residual(ToyInsertionEnv(cfg), ChunkedToyBase(), model,
                         ppo_config("cpu", num_envs=32, num_steps=60, num_iterations=2, update_epochs=1),
                         progress=False)
    assert res.history[0].get("goal_set")
    # the goal is a state at the slot bottom (where the reward fired)
    assert model.goal_obs[1] == pytest.approx(-cfg.slot_depth)
