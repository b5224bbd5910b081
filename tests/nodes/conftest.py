"""A tiny deterministic env and policies so node tests run in milliseconds (MetaWorld has its own test)."""
from __future__ import annotations

import numpy as np
import pytest


class LineEnv:
    """Point on a line that must reach x >= 1; the seed sets the start; state = (x, 0, 0, gripper)."""

    def __init__(self, task, image_size=8, camera="none", max_episode_steps=10, instruction=""):
        self.task = task
        self.max_episode_steps = max_episode_steps
        self.instruction = instruction
        self.image_size = image_size
        self.closed = False
        self.actions: list[np.ndarray] = []

    def _obs(self):
        img = np.full((self.image_size, self.image_size, 3), int(np.clip((self.x + 1) * 100, 0, 255)), np.uint8)
        return {"image": img, "state": np.array([self.x, 0.0, 0.0, self.g], np.float32),
                "instruction": self.instruction, "task": self.task}

    def reset(self, seed=None):
        self.x = float(np.random.default_rng(seed).uniform(-1, 0))
        self.g = 0.0
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(4), -1, 1)
        self.actions.append(a.copy())
        self.x += float(a[0])
        self.g = float(a[3])
        self.t += 1
        success = self.x >= 1.0
        return self._obs(), float(success), success, self.t >= self.max_episode_steps, {"success": success}

    def close(self):
        self.closed = True


class NoisyPolicy:
    """Random step sizes drawn from the episode seed: outcomes differ per seed, so pairing matters."""

    def __init__(self):
        self.rng = np.random.default_rng(0)
        self.calls = []

    def reset(self, seed=None):
        self.rng = np.random.default_rng(seed)

    def select_action(self, obs):
        self.calls.append((float(obs["state"][0]), obs["instruction"]))
        return np.array([self.rng.uniform(0.0, 0.4), 0.0, 0.0, 0.5], np.float32)

    def latent_sites(self):
        return {}


class FixedPolicy:
    def __init__(self, action):
        self.action = np.asarray(action, np.float32)
        self.resets = []
        self.obs = []

    def reset(self, seed=None):
        self.resets.append(seed)

    def select_action(self, obs):
        self.obs.append(obs)
        return self.action.copy()

    def latent_sites(self):
        return {}


class ManualClock:
    def __init__(self, t0: int = 1_000_000_000):
        self.t = t0

    def __call__(self) -> int:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += int(seconds * 1e9)


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
def line_env():
    return LineEnv


@pytest.fixture
def noisy_policy():
    return NoisyPolicy


@pytest.fixture
def fixed_policy():
    return FixedPolicy
