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
    from latentstack.sim.rollout import RolloutHook, rollout
    from latentstack.sim.suites import load_suite

    class _Frames(RolloutHook):
        def on_reset(self, o: dict[str, Any]) -> None:
            obs.append(o)

        def on_step(self, tr: Any) -> None:
            obs.append(tr.next_obs)

    frames = _Frames()
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
                # the shared rollout loop: the reset frame, then noop_steps zero actions (success ignored)
                shape = env.action_space.shape
                rollout(env, lambda _, shape=shape: np.zeros(shape, np.float32), seed, hooks=[frames],
                        end_on_terminated=False, max_steps=noop_steps)
                used.setdefault(task.name, []).append(seed)
        finally:
            env.close()
    return obs, {"suite": s.name, "split": "select", "seeds": used, "noop_steps": noop_steps}


def collate(obs: list[dict[str, Any]]) -> dict[str, Any]:
    """List of observation dicts → one batched dict for ``predict_action_chunk``."""
    return {"image": np.stack([o["image"] for o in obs]), "state": np.stack([o["state"] for o in obs]),
            "instruction": [o["instruction"] for o in obs], "task": [o["task"] for o in obs]}
