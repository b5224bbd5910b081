"""robosuite tasks for KORR (state only, headless): a seeded batch of envs with FurnitureBench
semantics — one episode per env, all reset together, sparse +1 the first step the task succeeds,
``done`` sticky afterwards (no auto-reset) — a scripted expert, and the per-step perturbation sampler
acting on the task's parts through ``sim.data.xfrc_applied`` (off unless asked for).

Action: [dx, dy, dz, gripper] in [-1, 1] for the default OSC_POSE controller (orientation deltas held
at 0). Observation: a flat float32 state (names in ``OBS_KEYS``).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .perturbations import PerturbationConfig, PerturbationSampler, apply_wrenches

OBS_KEYS = {
    "Lift": ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "cube_pos", "cube_quat",
             "gripper_to_cube_pos"),
}
PART_BODIES = {"Lift": ("cube_main",)}
# Per-part multipliers for the sampler; the cube (≈ 0.064 kg) gets ≈ ±2.5 N at most with "med" F_max 0.5.
PART_MULTIPLIERS = {"Lift": ((5.0,), (0.5,))}
ACTION_DIM = 4


@dataclass(frozen=True)
class RobosuiteTaskConfig:
    task: str = "Lift"
    num_envs: int = 8
    horizon: int = 100
    control_freq: int = 20
    perturb: bool = False
    perturbation: PerturbationConfig = field(default_factory=lambda: PerturbationConfig.from_level(
        "med", *PART_MULTIPLIERS["Lift"]))

    def __post_init__(self) -> None:
        if self.task not in OBS_KEYS:
            raise ValueError(f"unsupported robosuite task {self.task!r}; supported {sorted(OBS_KEYS)}")
        if self.num_envs < 1 or self.horizon < 1:
            raise ValueError(f"num_envs and horizon must be >= 1, got {self.num_envs}, {self.horizon}")
        if self.perturbation.n_parts != len(PART_BODIES[self.task]):
            raise ValueError(f"{self.task} has {len(PART_BODIES[self.task])} parts, perturbation config "
                             f"has {self.perturbation.n_parts}")

    def to_dict(self) -> dict:
        return asdict(self)


def make_robosuite_env(task: str = "Lift", horizon: int = 100, control_freq: int = 20):
    """One headless, state-only robosuite env (ignore_done: the wrapper owns the episode length)."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    logging.getLogger("robosuite_logs").setLevel(logging.ERROR)
    import robosuite

    return robosuite.make(task, robots="Panda", has_renderer=False, has_offscreen_renderer=False,
                          use_camera_obs=False, reward_shaping=False, control_freq=control_freq,
                          horizon=horizon, ignore_done=True)


def flat_obs(task: str, obs: dict) -> np.ndarray:
    return np.concatenate([np.asarray(obs[k], dtype=np.float32).ravel() for k in OBS_KEYS[task]])


def obs_dim(task: str) -> int:
    return {"Lift": 19}[task]


class RobosuiteVecEnv:
    """``num_envs`` robosuite envs stepped in sequence, batched as torch tensors (trainer ``BatchedEnv``)."""

    n_parts = 1
    action_dim = ACTION_DIM

    def __init__(self, config: RobosuiteTaskConfig | None = None, first_index: int = 0) -> None:
        """``first_index``: this batch's envs are episodes ``first_index ..`` of a larger batch (a shard of it
        in another process), so they are seeded as there."""
        self.config = config or RobosuiteTaskConfig()
        self.first_index = first_index
        c = self.config
        self.num_envs = c.num_envs
        self.obs_dim = obs_dim(c.task)
        self.envs = [make_robosuite_env(c.task, c.horizon, c.control_freq) for _ in range(c.num_envs)]
        self.part_ids = [[e.sim.model.body_name2id(b) for b in PART_BODIES[c.task]] for e in self.envs]
        self.samplers = [PerturbationSampler(c.perturbation) for _ in self.envs]
        self.done = np.zeros(c.num_envs, dtype=bool)
        self.t = 0
        self.kicks = 0

    def _seed_env(self, env, seed: int) -> None:
        rng = np.random.default_rng(seed)
        env.rng = rng
        if getattr(env, "placement_initializer", None) is not None:
            env.placement_initializer.rng = rng

    def reset(self, seed: int) -> torch.Tensor:
        """Episode ``i`` of this batch is fully determined by ``(seed, i)``."""
        obs = []
        for i, env in enumerate(self.envs):
            s = int(np.random.SeedSequence([int(seed), self.first_index + i]).generate_state(1)[0])
            self._seed_env(env, s)
            self.samplers[i].seed(s + 1)
            obs.append(flat_obs(self.config.task, env.reset()))
        self.done[:] = False
        self.t = 0
        self.kicks = 0
        return torch.from_numpy(np.stack(obs))

    def step(self, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (self.num_envs, ACTION_DIM):
            raise ValueError(f"action must be ({self.num_envs}, {ACTION_DIM}), got {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError("action contains NaN/inf")
        a = np.clip(a, -1.0, 1.0)
        obs, rew = [], np.zeros(self.num_envs, dtype=np.float32)
        for i, env in enumerate(self.envs):
            full = np.zeros(env.action_dim)
            full[:3], full[-1] = a[i, :3], a[i, 3]
            if self.config.perturb:
                w = self.samplers[i].sample()
                self.kicks += int((np.abs(w).sum(1) > 0).sum())
                apply_wrenches(env.sim.data, self.part_ids[i], w)
            o, _, _, _ = env.step(full)
            if self.config.perturb:  # the wrench lasts one control step
                apply_wrenches(env.sim.data, self.part_ids[i], np.zeros((len(self.part_ids[i]), 6)))
            success = bool(env._check_success())
            if success and not self.done[i]:
                rew[i] = 1.0
                self.done[i] = True
            obs.append(flat_obs(self.config.task, o))
        self.t += 1
        trunc = torch.full((self.num_envs,), self.t >= self.config.horizon)
        return torch.from_numpy(np.stack(obs)), torch.from_numpy(rew), torch.from_numpy(self.done.copy()), \
            {"truncated": trunc}

    def close(self) -> None:
        for e in self.envs:
            e.close()


class LiftExpert:
    """Scripted Lift expert from object poses: above the cube → descend → close → lift.
    ``noise`` adds Gaussian action noise (diverse demos)."""

    def __init__(self, noise: float = 0.0, seed: int = 0) -> None:
        self.noise = noise
        self.rng = np.random.default_rng(seed)
        self.phase: np.ndarray | None = None
        self.grip_steps: np.ndarray | None = None

    def reset(self, n: int) -> None:
        self.phase = np.zeros(n, dtype=int)
        self.grip_steps = np.zeros(n, dtype=int)

    def act(self, obs: np.ndarray) -> np.ndarray:
        if self.phase is None or self.grip_steps is None or len(self.phase) != len(obs):
            self.reset(len(obs))
        assert self.phase is not None and self.grip_steps is not None
        eef, cube = obs[:, 0:3], obs[:, 9:12]
        out = np.zeros((len(obs), ACTION_DIM))
        for i in range(len(obs)):
            d = cube[i] - eef[i]
            if self.phase[i] == 0:  # above the cube, gripper open
                tgt, grip = cube[i] + [0, 0, 0.06], -1.0
                if np.linalg.norm((tgt - eef[i])[:2]) < 0.008 and abs(tgt[2] - eef[i, 2]) < 0.02:
                    self.phase[i] = 1
            elif self.phase[i] == 1:  # descend
                tgt, grip = cube[i] + [0, 0, -0.005], -1.0
                if abs(d[2]) < 0.012 and np.linalg.norm(d[:2]) < 0.01:
                    self.phase[i] = 2
            elif self.phase[i] == 2:  # close
                tgt, grip = eef[i], 1.0
                self.grip_steps[i] += 1
                if self.grip_steps[i] >= 6:
                    self.phase[i] = 3
            else:  # lift
                tgt, grip = eef[i] + [0, 0, 0.1], 1.0
            out[i, :3] = np.clip((tgt - eef[i]) / 0.05 * 2.0, -1.0, 1.0)
            out[i, 3] = grip
        if self.noise > 0:
            out[:, :3] += self.noise * self.rng.normal(size=(len(obs), 3))
        return np.clip(out, -1.0, 1.0).astype(np.float32)


def rollout_expert(env: RobosuiteVecEnv, expert: LiftExpert, seeds: Sequence[int]
                   ) -> tuple[list[np.ndarray], list[np.ndarray], list[bool]]:
    """Expert episodes (obs (T, d), actions (T, 4), success) for each batch seed."""
    from .rollout import rollout_batched

    def act(o: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(expert.act(o.numpy()))

    obs_l, act_l, ok = [], [], []
    for s in seeds:
        os_: list[np.ndarray] = []
        as_: list[np.ndarray] = []
        rollout_batched(env, s, env.config.horizon, act,
                        lambda o, a, *_, os_=os_, as_=as_: (os_.append(o.numpy()), as_.append(a.numpy())),
                        reset=lambda _: expert.reset(env.num_envs))
        os_a, as_a = np.stack(os_, 1), np.stack(as_, 1)
        for i in range(env.num_envs):
            obs_l.append(os_a[i])
            act_l.append(as_a[i])
            ok.append(bool(env.done[i]))
    return obs_l, act_l, ok


__all__ = [
    "ACTION_DIM",
    "OBS_KEYS",
    "PART_BODIES",
    "LiftExpert",
    "RobosuiteTaskConfig",
    "RobosuiteVecEnv",
    "flat_obs",
    "make_robosuite_env",
    "obs_dim",
    "rollout_expert",
]
