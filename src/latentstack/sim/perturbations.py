"""FurnitureBench-style per-step force/torque perturbations (spec korr.md §7).

After each control step, each part body independently, with probability ``p``, gets a world-frame force
of magnitude ``U(0, 1)·F_max·f_mult[part]`` in a uniform random xy direction (f_z = 0) and a torque
``τ_z = U(−1, 1)·T_max·t_mult[part]``, held for one control step. Off in training; on only in
robustness evaluation.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

# FurnitureBench randomness levels (F_max, T_max) — sim units.
RANDOMNESS = {"low": (0.2, 0.007), "med": (0.5, 0.01), "high": (0.75, 0.015)}


@dataclass(frozen=True)
class PerturbationConfig:
    prob: float = 0.01
    f_max: float = 0.2
    t_max: float = 0.007
    f_mult: tuple[float, ...] = (1.0,)
    t_mult: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        if not 0.0 <= self.prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {self.prob}")
        if self.f_max < 0 or self.t_max < 0:
            raise ValueError(f"f_max and t_max must be >= 0, got {self.f_max}, {self.t_max}")
        if len(self.f_mult) != len(self.t_mult) or not self.f_mult:
            raise ValueError(f"f_mult and t_mult need one entry per part, got {self.f_mult}, {self.t_mult}")

    @classmethod
    def from_level(cls, level: str, f_mult: Sequence[float], t_mult: Sequence[float], prob: float = 0.01
                   ) -> PerturbationConfig:
        if level not in RANDOMNESS:
            raise ValueError(f"unknown randomness level {level!r}; known {sorted(RANDOMNESS)}")
        f, t = RANDOMNESS[level]
        return cls(prob=prob, f_max=f, t_max=t, f_mult=tuple(f_mult), t_mult=tuple(t_mult))

    @property
    def n_parts(self) -> int:
        return len(self.f_mult)

    def to_dict(self) -> dict:
        return asdict(self)


class PerturbationSampler:
    """Draws per-part wrenches ``(n_parts, 6)`` = [f_x, f_y, 0, 0, 0, τ_z] (world frame, MuJoCo
    ``xfrc_applied`` layout), zero for parts not hit this step."""

    def __init__(self, config: PerturbationConfig, seed: int | None = None) -> None:
        self.config = config
        self.rng = np.random.default_rng(seed)

    def seed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def sample(self) -> np.ndarray:
        c = self.config
        n = c.n_parts
        hit = self.rng.random(n) < c.prob
        ang = self.rng.uniform(0.0, 2 * np.pi, n)
        mag = self.rng.random(n) * c.f_max * np.asarray(c.f_mult)
        tau = self.rng.uniform(-1.0, 1.0, n) * c.t_max * np.asarray(c.t_mult)
        w = np.zeros((n, 6))
        w[:, 0], w[:, 1], w[:, 5] = mag * np.cos(ang), mag * np.sin(ang), tau
        return w * hit[:, None]


def apply_wrenches(data: object, body_ids: Sequence[int], wrenches: np.ndarray) -> None:
    """Write wrenches into ``data.xfrc_applied`` (MuJoCo) for the listed bodies; zeros clear them."""
    if wrenches.shape != (len(body_ids), 6):
        raise ValueError(f"wrenches must be ({len(body_ids)}, 6), got {wrenches.shape}")
    for bid, w in zip(body_ids, wrenches, strict=True):
        data.xfrc_applied[bid] = w  # type: ignore[attr-defined]


__all__ = ["RANDOMNESS", "PerturbationConfig", "PerturbationSampler", "apply_wrenches"]
