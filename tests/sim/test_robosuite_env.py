"""robosuite Lift wrapper (seeded batch, sticky success, scripted expert) and the per-step perturbation
sampler (spec korr.md §12 C.21)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy import stats

from latentstack.sim.perturbations import PerturbationConfig, PerturbationSampler, apply_wrenches


def test_perturbation_sampler_statistics() -> None:
    cfg = PerturbationConfig.from_level("med", f_mult=(25.0, 1.0), t_mult=(70.0, 1.0))
    s = PerturbationSampler(cfg, seed=0)
    w = np.stack([s.sample() for _ in range(100_000)])  # (draws, parts, 6)
    hit = np.abs(w).sum(-1) > 0
    assert np.all(np.abs(hit.mean(0) - 0.01) < 0.001)
    for part, (fm, tm) in enumerate(zip(cfg.f_mult, cfg.t_mult, strict=True)):
        h = w[hit[:, part], part]
        assert np.all(h[:, 2:5] == 0)  # f_z = 0, torque only about z
        mag, ang = np.hypot(h[:, 0], h[:, 1]), np.arctan2(h[:, 1], h[:, 0])
        assert mag.max() <= cfg.f_max * fm + 1e-12 and np.abs(h[:, 5]).max() <= cfg.t_max * tm + 1e-12
        assert stats.kstest(mag / (cfg.f_max * fm), "uniform").pvalue > 0.01
        assert stats.kstest((ang + np.pi) / (2 * np.pi), "uniform").pvalue > 0.01
        assert stats.kstest((h[:, 5] / (cfg.t_max * tm) + 1) / 2, "uniform").pvalue > 0.01
    with pytest.raises(ValueError):
        PerturbationConfig(prob=1.5)
    with pytest.raises(ValueError):
        PerturbationConfig.from_level("extreme", (1.0,), (1.0,))
    with pytest.raises(ValueError):
        apply_wrenches(object(), [1, 2], np.zeros((1, 6)))


robosuite = pytest.importorskip("robosuite")


@pytest.fixture(scope="module")
def lift_env():
    from latentstack.sim.robosuite_env import RobosuiteTaskConfig, RobosuiteVecEnv

    env = RobosuiteVecEnv(RobosuiteTaskConfig(num_envs=2, horizon=45))
    yield env
    env.close()


def test_seeded_reset_expert_success_and_sticky_done(lift_env) -> None:
    from latentstack.sim.robosuite_env import LiftExpert, rollout_expert

    a = lift_env.reset(11)
    b = lift_env.reset(11)
    c = lift_env.reset(12)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (2, lift_env.obs_dim) and a.dtype == torch.float32
    obs, act, ok = rollout_expert(lift_env, LiftExpert(), [5])
    assert ok == [True, True] and act[0].shape == (45, 4) and obs[0].shape == (45, lift_env.obs_dim)
    with pytest.raises(ValueError):
        lift_env.step(torch.zeros(3, 4))
    with pytest.raises(ValueError):
        lift_env.step(torch.full((2, 4), float("nan")))


def test_perturbation_pushes_parts_only_when_enabled(lift_env) -> None:
    from latentstack.sim.robosuite_env import RobosuiteVecEnv

    lift_env.reset(0)
    for _ in range(5):
        lift_env.step(torch.zeros(2, 4))
    assert lift_env.kicks == 0
    env = RobosuiteVecEnv(replace(lift_env.config, num_envs=1, perturb=True,
                                  perturbation=replace(lift_env.config.perturbation, prob=1.0)))
    o0 = env.reset(0)
    o1, _, _, _ = env.step(torch.zeros(1, 4))
    assert env.kicks == 1
    assert np.abs(env.envs[0].sim.data.xfrc_applied).sum() == 0  # cleared after the control step
    assert not torch.allclose(o0[0, 9:12], o1[0, 9:12], atol=1e-4)  # the cube moved
    env.close()
