"""Real MetaWorld closed loop (one short task): collection labels and β = 0 steering = base, episode-exact."""
from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # before anything imports mujoco

import numpy as np
import pytest
import torch

pytest.importorskip("metaworld")

from latentstack.sim.evaluation import run_episode
from latentstack.sim.metaworld_env import MetaWorldLangEnv
from latentstack.sim.suites import load_suite
from latentstack.steering.collect import collect_rollouts
from latentstack.steering.intervention import SteeredPolicy, steer

TASK = "handle-press-v3"


def test_collect_and_beta_zero_episode_identical(vla):
    suite = load_suite("metaworld_mt6")
    with torch.inference_mode():
        (r,) = collect_rollouts(suite, vla, ["expert.layer2"], split="select", n=1, tasks=[TASK])
    assert r.seed == suite.seeds["select"][0] and r.task == TASK
    T = -(-r.length // vla.config.n_action_steps)
    assert r.states["expert.layer2"].shape == (T, 10, 16, 128)
    spec = suite.task(TASK)
    env = MetaWorldLangEnv(spec.name, image_size=suite.image_size, camera=suite.camera,
                           max_episode_steps=spec.max_episode_steps, instruction=spec.instruction)
    try:
        C = torch.from_numpy(np.eye(128, dtype=np.float32) * 0.5)
        lat_a: list[float] = []
        lat_b: list[float] = []
        with torch.inference_mode():
            base = run_episode(env, vla, r.seed, lat_a)
            zero = run_episode(env, SteeredPolicy(vla, steer(vla, "expert.layer2", C, 0.0)), r.seed, lat_b)
        assert (base.success, base.length) == (zero.success, zero.length) == (r.success, r.length)
    finally:
        env.close()
