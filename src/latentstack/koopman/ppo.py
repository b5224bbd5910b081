"""PPO pieces exactly as KORR's ``ppo_res.py`` uses them (spec korr.md §4): GAE, the clipped surrogate,
approx-KL, and the running-std reward normalizer."""
from __future__ import annotations

from dataclasses import dataclass

import torch


def gae(rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, next_value: torch.Tensor,
        next_done: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """CleanRL/ResiP GAE over (T, N) buffers. ``dones[t]`` is the done flag *before* step t's action
    (the flag returned with ``obs[t]``); ``next_done`` the one with the final observation.
    Returns (advantages, returns)."""
    if rewards.shape != values.shape or rewards.shape != dones.shape:
        raise ValueError(f"rewards/values/dones shapes differ: {rewards.shape}, {values.shape}, {dones.shape}")
    steps = rewards.shape[0]
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(next_value)
    for t in reversed(range(steps)):
        if t == steps - 1:
            nonterminal, nv = 1.0 - next_done.float(), next_value
        else:
            nonterminal, nv = 1.0 - dones[t + 1].float(), values[t + 1]
        delta = rewards[t] + gamma * nv * nonterminal - values[t]
        last = delta + gamma * lam * nonterminal * last
        adv[t] = last
    return adv, adv + values


@dataclass
class PPOLosses:
    policy: torch.Tensor
    value: torch.Tensor
    entropy: torch.Tensor
    approx_kl: torch.Tensor
    clipfrac: torch.Tensor


def ppo_losses(new_logprob: torch.Tensor, old_logprob: torch.Tensor, advantages: torch.Tensor,
               new_value: torch.Tensor, returns: torch.Tensor, entropy: torch.Tensor, clip_coef: float = 0.2,
               norm_adv: bool = True) -> PPOLosses:
    """Clipped surrogate ``mean(max(−Â ρ, −Â clip(ρ, 1±ε)))``, value ``0.5·mean((V − R)²)`` (no value clipping),
    ``approx_kl = mean((ρ − 1) − log ρ)``."""
    logratio = new_logprob - old_logprob
    ratio = logratio.exp()
    if norm_adv:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    pg = torch.max(-advantages * ratio, -advantages * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef)).mean()
    v = 0.5 * ((new_value - returns) ** 2).mean()
    with torch.no_grad():
        kl = ((ratio - 1) - logratio).mean()
        clipfrac = ((ratio - 1.0).abs() > clip_coef).float().mean()
    return PPOLosses(policy=pg, value=v, entropy=entropy.mean(), approx_kl=kl, clipfrac=clipfrac)


class RunningStdRewardNormalizer:
    """``RunningMeanStdClip`` as ResiP applies it to rewards: divide by the running std of the raw
    reward (no mean subtraction), clip to ±clip. Statistics use Welford/Chan parallel updates."""

    def __init__(self, clip: float = 5.0, epsilon: float = 1e-4) -> None:
        self.clip = clip
        self.mean = 0.0
        self.var = 1.0
        self.count = epsilon

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().double().flatten()
        if x.numel() == 0:
            return
        b_mean, b_var, b_n = float(x.mean()), float(x.var(unbiased=False)), x.numel()
        delta = b_mean - self.mean
        tot = self.count + b_n
        m2 = self.var * self.count + b_var * b_n + delta**2 * self.count * b_n / tot
        self.mean += delta * b_n / tot
        self.var = m2 / tot
        self.count = tot

    def __call__(self, x: torch.Tensor, update: bool = True) -> torch.Tensor:
        if update:
            self.update(x)
        return torch.clamp(x / (self.var ** 0.5 + 1e-8), -self.clip, self.clip)


__all__ = ["PPOLosses", "RunningStdRewardNormalizer", "gae", "ppo_losses"]
