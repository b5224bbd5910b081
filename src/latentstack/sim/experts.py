"""Scripted MetaWorld experts acting on ``MetaWorldLangEnv.full_state`` (the raw 39-d obs)."""
from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

from .metaworld_env import canonical_task

__all__ = ["make_expert"]


def make_expert(task: str) -> Callable[[np.ndarray], np.ndarray]:
    """``metaworld.policies.Sawyer<Task>V3Policy`` for ``task``: full_state (39,) -> action (4,) in [-1, 1]."""
    from metaworld.policies import ENV_POLICY_MAP

    name = canonical_task(task)
    policy = ENV_POLICY_MAP[name]()

    def expert(full_state: np.ndarray) -> np.ndarray:
        # MetaWorld's policies warn whenever a proportional response exceeds [-1, 1]; the
        # action is clipped anyway, so the warning carries no information.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Constant\(s\) may be too high")
            action = policy.get_action(np.asarray(full_state, dtype=np.float64))
        return np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)

    expert.__name__ = f"expert_{name.replace('-', '_')}"
    expert.policy = policy  # type: ignore[attr-defined]
    return expert
