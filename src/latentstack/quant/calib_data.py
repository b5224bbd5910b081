"""Calibration observations: first frames of MetaWorld episodes on a suite's *select* seeds.

Never uses the suite's test seeds (held out for reported numbers). Frames are the reset
observation and optionally a few frames after zero (no-op) actions, as in the released code.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["calibration_observations", "collate"]


def calibration_observations(suite: str = "metaworld_mt6", per_task: int = 1, noop_steps: int = 0,
                             seed_offset: int = 0) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``per_task`` episodes per task on consecutive select seeds; returns (observations, provenance)."""
    from latentstack.sim.metaworld_env import MetaWorldLangEnv
    from latentstack.sim.suites import load_suite

    s = load_suite(suite)
    seeds = s.seeds["select"]
    if seed_offset + per_task > len(seeds):
        raise ValueError(f"only {len(seeds)} select seeds")
    obs: list[dict[str, Any]] = []
    used: dict[str, list[int]] = {}
    for task in s.tasks:
        env = MetaWorldLangEnv(task.name, image_size=s.image_size, camera=s.camera,
                               max_episode_steps=task.max_episode_steps, instruction=task.instruction)
        try:
            for i in range(per_task):
                seed = int(seeds[seed_offset + i])
                o, _ = env.reset(seed=seed)
                obs.append(o)
                for _ in range(noop_steps):
                    o, *_ = env.step(np.zeros(env.action_space.shape, np.float32))
                    obs.append(o)
                used.setdefault(task.name, []).append(seed)
        finally:
            env.close()
    return obs, {"suite": s.name, "split": "select", "seeds": used, "noop_steps": noop_steps}


def collate(obs: list[dict[str, Any]]) -> dict[str, Any]:
    """List of observation dicts → one batched dict for ``predict_action_chunk``."""
    return {"image": np.stack([o["image"] for o in obs]), "state": np.stack([o["state"] for o in obs]),
            "instruction": [o["instruction"] for o in obs], "task": [o["task"] for o in obs]}
