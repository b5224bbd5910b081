"""Frozen configs for KORR residual policies and the PPO trainer (spec korr.md §3, §5).

Defaults are the released code's (`KORR@9572037`, ``rl_ppo_dp.yaml``); ``RESIDUAL_PRESETS`` holds
ResiP's own residual settings and the CPU-sized trainer preset, so a result can name what it used.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar

from latentstack.core.config import ModelConfig, register_config

RESIDUAL_KINDS = ("korr", "korr_goal", "resip", "dyn")
K_INITS = ("normal", "orthogonal", "identity")


# keyword-only: obs_dim / action_dim have no default and follow the base's defaulted device / dtype
@register_config("korr_residual")
@dataclass(frozen=True, kw_only=True)
class ResidualConfig(ModelConfig):
    """One residual actor-critic. ``kind``: korr (default, goal-free ``KPMResidualPolicyWOGoal``),
    korr_goal (goal-conditioned ``KPMResidualPolicy``), resip (plain MLP residual),
    dyn (non-linear dynamics baseline ``ResidualPolicyWDynamics``)."""

    obs_dim: int
    action_dim: int
    kind: str = "korr"
    lift_dim: int = 256
    hidden_dim: int = 256
    num_layers: int = 2
    action_scale: float = 0.1
    init_logstd: float = -1.0
    learn_std: bool = False
    action_head_std: float = 0.0  # orthogonal gain of the last layers of φ and g: 0 ⇒ exact zeros
    critic_last_std: float = 0.25
    critic_last_bias: float = 0.25
    k_init: str = "normal"  # faithful: K, B ~ N(0, 1) per entry ⇒ ρ(K) ≈ √lift_dim
    kpm_coef: float = 1.0  # weight of L_kpm (or of the dynamics loss for kind=dyn)
    is_res_bkp_kpm: bool = True  # PPO gradients reach φ, K, B (goal variant may detach them)
    register_lqr_params: bool = True  # code registers unused diagonal Q, R logs in the actor

    # ranges checked before anything is built (issue 14: a config.json may be hostile); wide for this project
    BOUNDS: ClassVar[Mapping[str, tuple[float, float]]] = {
        "obs_dim": (1, 65536), "action_dim": (1, 4096), "lift_dim": (1, 65536), "hidden_dim": (1, 65536),
        "num_layers": (1, 64), "action_scale": (0.0, 1e6), "init_logstd": (-100.0, 100.0),
        "action_head_std": (0.0, 1e6), "critic_last_std": (0.0, 1e6), "critic_last_bias": (-1e6, 1e6),
        "kpm_coef": (0.0, 1e6),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kind not in RESIDUAL_KINDS:
            raise ValueError(f"kind must be one of {RESIDUAL_KINDS}, got {self.kind!r}")
        if self.k_init not in K_INITS:
            raise ValueError(f"k_init must be one of {K_INITS}, got {self.k_init!r}")
        if self.obs_dim < 1 or self.action_dim < 1 or self.lift_dim < 1 or self.hidden_dim < 1:
            raise ValueError(f"dims must be positive: obs {self.obs_dim}, action {self.action_dim}, "
                             f"lift {self.lift_dim}, hidden {self.hidden_dim}")
        if self.num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {self.num_layers}")


@dataclass(frozen=True)
class PPOConfig:
    """Trainer settings; defaults equal spec §5 (faithful sizes: 1024 envs × 700 steps)."""

    num_envs: int = 1024
    num_steps: int = 700
    num_iterations: int = 1395
    update_epochs: int = 50
    num_minibatches: int = 1
    gamma: float = 0.999
    gae_lambda: float = 0.95
    clip_coef: float = 0.2
    vf_coef: float = 1.0
    ent_coef: float = 0.0
    norm_adv: bool = True
    clip_vloss: bool = False
    max_grad_norm: float = 1.0
    target_kl: float = 0.1
    lr_actor: float = 3e-4
    lr_critic: float = 5e-3
    weight_decay: float = 1e-6
    adam_eps: float = 1e-5
    warmup_actor: int = 5
    warmup_critic: int = 0
    eval_interval: int = 5  # iteration 1, 6, 11, ... are deterministic evaluations (no update)
    reward_clip: float = 5.0
    normalize_reward: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("num_envs", "num_steps", "num_iterations", "update_epochs", "num_minibatches", "eval_interval"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError(f"gamma/gae_lambda must be in [0, 1], got {self.gamma}, {self.gae_lambda}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Named presets so a result records exactly which settings it used (spec §5, ResiP yaml).
RESIDUAL_PRESETS: dict[str, dict[str, Any]] = {
    "korr_code": {},  # KORR@9572037 defaults
    "resip_code": {"init_logstd": -1.5, "critic_last_bias": 0.5},  # ankile/robust-rearrangement residual yaml
}
PPO_PRESETS: dict[str, dict[str, Any]] = {
    "faithful": {},
    # CPU: shrink envs × steps and epochs, keep every other setting (spec §5 "Compute reality").
    "cpu": {"num_envs": 64, "num_steps": 128, "num_iterations": 60, "update_epochs": 10},
}


def residual_config(obs_dim: int, action_dim: int, kind: str = "korr", preset: str | None = None,
                    **overrides: Any) -> ResidualConfig:
    """A ResidualConfig from a named preset (default: korr_code for KORR kinds, resip_code for resip/dyn)."""
    preset = preset or ("korr_code" if kind.startswith("korr") else "resip_code")
    if preset not in RESIDUAL_PRESETS:
        raise ValueError(f"unknown residual preset {preset!r}; known {sorted(RESIDUAL_PRESETS)}")
    return ResidualConfig(obs_dim=obs_dim, action_dim=action_dim, kind=kind,
                          **{**RESIDUAL_PRESETS[preset], **overrides})


def ppo_config(preset: str = "cpu", **overrides: Any) -> PPOConfig:
    if preset not in PPO_PRESETS:
        raise ValueError(f"unknown PPO preset {preset!r}; known {sorted(PPO_PRESETS)}")
    return replace(PPOConfig(), **{**PPO_PRESETS[preset], **overrides})


__all__ = [
    "K_INITS",
    "PPO_PRESETS",
    "RESIDUAL_KINDS",
    "RESIDUAL_PRESETS",
    "PPOConfig",
    "ResidualConfig",
    "ppo_config",
    "residual_config",
]
