"""The residual inside a :class:`latentstack.policies.Policy` (spec korr.md §6, §11).

The base keeps its own action-chunk queue (open-loop chunk execution); the residual runs every control
step, closed loop, on the current state and the specific base action about to be executed:
``a = denorm(a_b + scale·μ(norm(o), a_b))``. ``enabled=False`` returns the base action bit-for-bit.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from latentstack.latent import Site
from latentstack.policies.protocol import Observation, Policy

from .base_policy import MinMaxNormalizer
from .modeling_korr import ResidualActorCritic
from .processor_korr import KorrProcessor


class ResidualPolicy(nn.Module):
    """``base`` (any Policy) + ``residual``; normalizers map the env's state/action to the residual's space
    (the identity when None)."""

    def __init__(self, base: Policy, residual: ResidualActorCritic, obs_norm: MinMaxNormalizer | None = None,
                 action_norm: MinMaxNormalizer | None = None, state_key: str = "state", enabled: bool = True) -> None:
        super().__init__()
        self.base = base
        self.residual = residual.eval()
        self.obs_norm = obs_norm
        self.action_norm = action_norm
        self.state_key = state_key
        self.enabled = enabled
        self.last_mean: np.ndarray | None = None
        self.processor = KorrProcessor()  # follows the residual's device on every call

    @property
    def device(self) -> torch.device:
        """The residual's device (``.to(device)`` moves the residual and the normalizers)."""
        return self.residual.device

    def reset(self, seed: int | None = None) -> None:
        self.base.reset(seed)
        self.last_mean = None

    @torch.no_grad()
    def select_action(self, obs: Observation) -> np.ndarray:
        a_world = self.base.select_action(obs)  # pops the base's chunk queue (replans when empty)
        if not self.enabled:
            return a_world
        if self.state_key not in obs:
            raise KeyError(f"observation has no {self.state_key!r} entry (keys: {sorted(obs)})")
        proc = self.processor.to(self.device)
        state = proc.tensor(obs[self.state_key])
        cfg = self.residual.config
        if state.shape != (cfg.obs_dim,) or np.shape(a_world) != (cfg.action_dim,):
            raise ValueError(f"residual expects state ({cfg.obs_dim},) and action ({cfg.action_dim},), "
                             f"got {tuple(state.shape)} and {np.shape(a_world)}")
        a_world_t = proc.tensor(a_world)
        o = self.obs_norm(state) if self.obs_norm is not None else state
        a_b = self.action_norm(a_world_t) if self.action_norm is not None else a_world_t
        mu = self.residual.mean(o[None], a_b[None])[0]
        self.last_mean = proc.numpy(mu)
        # denorm(a_b + s·μ) written as a_world + s·μ·(high − low)/2 (min–max is affine): exact base action at μ = 0
        delta = cfg.action_scale * mu
        if self.action_norm is not None:
            delta = delta * (self.action_norm.high - self.action_norm.low) / 2
        return proc.numpy(a_world_t + delta)

    def latent_sites(self) -> Mapping[str, Any]:
        sites: dict[str, Any] = {f"residual.{k}": Site(f"residual.{s.module_path}", s.kind, s.index, s.description)
                                 for k, s in self.residual.latent_sites().items()}
        if isinstance(self.base, nn.Module):
            for k, s in dict(self.base.latent_sites()).items():
                if isinstance(s, Site):
                    sites[k] = Site(f"base.{s.module_path}" if s.module_path else "base", s.kind, s.index,
                                    s.description)
        return sites


__all__ = ["ResidualPolicy"]
