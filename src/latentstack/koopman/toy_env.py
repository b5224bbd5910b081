"""A fast batched "precise insertion" toy in pure torch (spec korr.md §10, CI level), and its biased,
action-chunked base policy.

A planar peg (point mass under a PD position controller, like an absolute EE-target ``diffik`` action)
must be lowered through a narrow slot in a wall at ``y = 0``. Crossing the wall outside the slot is
blocked; inside the slot the side walls confine ``x``. Reward is sparse: +1 the step the peg reaches the
slot bottom (``n_parts = 1``); ``done`` stays true afterwards and the episode keeps running (no
auto-reset), as in FurnitureBench. Optional per-step pushes of the part (the slot): with probability p per step the slot shifts by
U(0, 1)·F_max in a random direction along the wall — the 1-D analogue of the spec's per-part force
sampler (FurnitureBench perturbs parts, not the robot); off in training, on in robustness evaluation.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class ToyInsertionConfig:
    num_envs: int = 64
    max_steps: int = 60
    dt: float = 0.05
    kp: float = 60.0
    kd: float = 12.0
    slot_half_width: float = 0.02
    slot_depth: float = 0.15
    start_height: tuple[float, float] = (0.3, 0.6)
    hole_range: float = 0.5
    start_range: float = 0.8
    perturb: bool = False  # per-step kicks; off in training, on in robustness evaluation
    perturb_prob: float = 0.01
    perturb_fmax: float = 0.15  # bound of the part's push (sim length units)
    friction: float = 0.5  # Coulomb friction on the wall top: a peg pressed onto it jams laterally

    def __post_init__(self) -> None:
        if self.num_envs < 1 or self.max_steps < 1:
            raise ValueError(f"num_envs and max_steps must be >= 1, got {self.num_envs}, {self.max_steps}")
        if self.slot_half_width <= 0 or self.slot_depth <= 0:
            raise ValueError("slot_half_width and slot_depth must be positive")

    def to_dict(self) -> dict:
        return asdict(self)


class ToyInsertionEnv:
    """Batched env. ``obs`` = [x, y, vx, vy, hole_x] (already in [-1, 1]-ish units, so the identity is the
    normalizer); action = absolute target [x, y] in [-1, 1] (clamped), i.e. normalized == world."""

    obs_dim = 5
    action_dim = 2
    n_parts = 1

    def __init__(self, config: ToyInsertionConfig | None = None) -> None:
        self.config = config or ToyInsertionConfig()
        n = self.config.num_envs
        self.num_envs = n
        self.pos = torch.zeros(n, 2)
        self.vel = torch.zeros(n, 2)
        self.hole = torch.zeros(n)
        self.done = torch.zeros(n, dtype=torch.bool)
        self.t = 0
        self.gen = torch.Generator().manual_seed(0)
        self.kicks = 0

    def _obs(self) -> torch.Tensor:
        return torch.cat([self.pos, self.vel, self.hole[:, None]], 1)

    def reset(self, seed: int) -> torch.Tensor:
        """All envs reset together (one episode per env per iteration); ``seed`` fixes initial states and kicks."""
        c, n = self.config, self.num_envs
        self.gen = torch.Generator().manual_seed(int(seed))
        u = torch.rand(n, 4, generator=self.gen)
        self.hole = (2 * u[:, 0] - 1) * c.hole_range
        self.pos = torch.stack([(2 * u[:, 1] - 1) * c.start_range,
                                c.start_height[0] + u[:, 2] * (c.start_height[1] - c.start_height[0])], 1)
        self.vel = torch.zeros(n, 2)
        self.done = torch.zeros(n, dtype=torch.bool)
        self.t = 0
        self.kicks = 0
        return self._obs()

    def step(self, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        c = self.config
        if action.shape != (self.num_envs, self.action_dim):
            raise ValueError(f"action must be ({self.num_envs}, {self.action_dim}), got {tuple(action.shape)}")
        if not torch.isfinite(action).all():
            raise ValueError("action contains NaN/inf")
        target = action.clamp(-1.0, 1.0)
        acc = c.kp * (target - self.pos) - c.kd * self.vel
        # Jamming: on the wall top, lateral force below μ·(normal force) does not move the peg.
        on_wall = (self.pos[:, 1] <= 0) & ((self.pos[:, 0] - self.hole).abs() > c.slot_half_width) & (self.pos[:, 1] > -1e-9)
        normal = (-acc[:, 1]).clamp_min(0.0)
        stick = on_wall & (acc[:, 0].abs() <= c.friction * normal)
        acc_x = torch.where(stick, -self.vel[:, 0] / c.dt, acc[:, 0])
        acc = torch.stack([acc_x, acc[:, 1]], 1)
        vel = self.vel + c.dt * acc
        if c.perturb:  # the part (hole) gets a push with probability p: |Δx| ~ U(0, F_max), random sign
            u = torch.rand(self.num_envs, 2, generator=self.gen)
            hit = (u[:, 0] < c.perturb_prob) & (self.pos[:, 1] > 1e-6)  # a part pressed by the peg cannot slide
            shift = (2 * (u[:, 1] > 0.5).float() - 1) * torch.rand(self.num_envs, generator=self.gen) * c.perturb_fmax
            self.hole = (self.hole + hit * shift).clamp(-1.0, 1.0)
            self.kicks += int(hit.sum())
        pos = self.pos + c.dt * vel
        inside = (self.pos[:, 1] < 0) | ((self.pos[:, 1] >= 0) & ((pos[:, 0] - self.hole).abs() <= c.slot_half_width))
        # Blocked by the wall top when crossing y = 0 outside the slot.
        blocked = (self.pos[:, 1] >= 0) & (pos[:, 1] < 0) & ~inside
        pos[:, 1] = torch.where(blocked, torch.zeros_like(pos[:, 1]), pos[:, 1])
        vel[:, 1] = torch.where(blocked, torch.zeros_like(vel[:, 1]), vel[:, 1])
        # Inside the slot: side walls confine x; the bottom stops y.
        in_slot = pos[:, 1] < 0
        lo, hi = self.hole - c.slot_half_width, self.hole + c.slot_half_width
        clamped_x = torch.minimum(torch.maximum(pos[:, 0], lo), hi)
        vel[:, 0] = torch.where(in_slot & (clamped_x != pos[:, 0]), torch.zeros_like(vel[:, 0]), vel[:, 0])
        pos[:, 0] = torch.where(in_slot, clamped_x, pos[:, 0])
        bottom = pos[:, 1] <= -c.slot_depth
        pos[:, 1] = torch.where(bottom, torch.full_like(pos[:, 1], -c.slot_depth), pos[:, 1])
        vel[:, 1] = torch.where(bottom, vel[:, 1].clamp_min(0.0), vel[:, 1])
        self.pos, self.vel = pos, vel
        newly = bottom & ~self.done
        reward = newly.float()
        self.done = self.done | bottom
        self.t += 1
        truncated = torch.full_like(self.done, self.t >= c.max_steps)
        return self._obs(), reward, self.done.clone(), {"truncated": truncated}


class ChunkedToyBase:
    """Frozen, biased, action-chunked base: a scripted expert with a systematic hole-position error
    (``bias`` + per-episode N(0, noise)) that predicts ``horizon`` targets and executes the first
    ``n_action_steps`` open loop; one chunk queue shared by all envs (they reset together)."""

    def __init__(self, bias: float = 0.03, noise: float = 0.01, horizon: int = 16, n_action_steps: int = 8,
                 approach_height: float = 0.12, lateral_gate: float = 0.01) -> None:
        self.bias, self.noise = bias, noise
        self.horizon, self.n_action_steps = horizon, n_action_steps
        self.approach_height, self.lateral_gate = approach_height, lateral_gate
        self._queue: list[torch.Tensor] = []
        self._err: torch.Tensor | None = None

    def reset(self, num_envs: int, seed: int) -> None:
        g = torch.Generator().manual_seed(int(seed) + 7_919)
        self._err = self.bias + self.noise * torch.randn(num_envs, generator=g)
        self._queue = []

    def predict_chunk(self, obs: torch.Tensor) -> torch.Tensor:
        """(N, horizon, 2) absolute targets: move above the (mis-estimated) hole, then descend."""
        if self._err is None or self._err.shape[0] != obs.shape[0]:
            raise RuntimeError("call reset(num_envs, seed) before predicting")
        x, y = obs[:, 0], obs[:, 1]
        hx = obs[:, 4] + self._err
        aligned = (x - hx).abs() < self.lateral_gate + 0.02
        chunk = []
        px, py = x.clone(), y.clone()
        for _ in range(self.horizon):  # straight-line waypoints, 0.08 per step, along the plan
            tx = hx
            ty = torch.where(aligned | (py < self.approach_height + 0.02), torch.full_like(py, -0.5),
                             torch.full_like(py, self.approach_height))
            ty = torch.where(~aligned & ((px - hx).abs() > 0.03), torch.maximum(ty, torch.full_like(ty, self.approach_height)), ty)
            d = torch.stack([tx - px, ty - py], 1)
            step = d * (0.08 / d.norm(dim=1, keepdim=True).clamp_min(0.08))
            px, py = px + step[:, 0], py + step[:, 1]
            chunk.append(torch.stack([px, py], 1))
        return torch.stack(chunk, 1)

    def action(self, obs: torch.Tensor) -> torch.Tensor:
        if not self._queue:
            chunk = self.predict_chunk(obs)
            self._queue = [chunk[:, i] for i in range(self.n_action_steps)]
        return self._queue.pop(0)


__all__ = ["ChunkedToyBase", "ToyInsertionConfig", "ToyInsertionEnv"]
