"""The residual PPO trainer of KORR's ``ppo_res.py`` (spec korr.md §5), over batched environments.

One episode per env per iteration (all envs reset together, no auto-reset); iteration 1, 1+k·eval_interval
are deterministic evaluations without an update; every other iteration collects stochastic residual
rollouts and runs ``update_epochs`` epochs of ``L_clip + vf·L_V + L_kpm`` over the whole batch with
one global gradient clip, stopping at approx-KL > target_kl.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from latentstack.sim.rollout import rollout_batched

from .configuration_korr import PPOConfig
from .diagnostics import koopman_diagnostics
from .modeling_korr import ResidualActorCritic
from .ppo import RunningStdRewardNormalizer, gae, ppo_losses


class BatchedEnv(Protocol):
    num_envs: int
    n_parts: int

    def reset(self, seed: int) -> torch.Tensor: ...

    def step(self, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]: ...


class BatchedBase(Protocol):
    """A frozen action-chunked base over a batch: normalized actions, its own obs/action normalizers."""

    def reset(self, num_envs: int, seed: int) -> None: ...

    def action(self, obs: torch.Tensor) -> torch.Tensor: ...


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


@dataclass
class Rollout:
    obs: torch.Tensor  # (T, N, d_o) normalized
    base_action: torch.Tensor  # (T, N, d_a) normalized
    residual: torch.Tensor  # (T, N, d_a) unscaled r
    action: torch.Tensor  # (T, N, d_a) executed normalized a_b + scale·r
    logprob: torch.Tensor  # (T, N)
    value: torch.Tensor  # (T, N)
    reward: torch.Tensor  # (T, N) raw
    dones: torch.Tensor  # (T, N) done flag before step t
    next_obs: torch.Tensor  # (T, N, d_o) o_{t+1}
    last_obs: torch.Tensor  # (N, d_o)
    last_base_action: torch.Tensor  # (N, d_a)
    last_done: torch.Tensor  # (N,)

    @property
    def success(self) -> torch.Tensor:
        """(N,) bool: the episode collected all parts (Σ_t 1[r_t > 0] ≥ n_parts)."""
        return self._success

    def set_success(self, n_parts: int) -> None:
        self._success = (self.reward > 0).sum(0) >= n_parts


@torch.no_grad()
def collect(env: BatchedEnv, base: BatchedBase, model: ResidualActorCritic | None, seed: int, num_steps: int,
            deterministic: bool, generator: torch.Generator | None = None,
            normalize_obs: Callable[[torch.Tensor], torch.Tensor] = _identity,
            denormalize_action: Callable[[torch.Tensor], torch.Tensor] = _identity) -> Rollout:
    """One synchronized episode per env. ``model=None`` runs the base alone (residual ≡ 0).

    Steps through :func:`latentstack.sim.rollout.rollout_batched`, the batched form of the shared rollout
    loop (lockstep envs, fixed horizon: see there why it is not the per-episode loop)."""
    n = env.num_envs
    done = torch.zeros(n, dtype=torch.bool)
    bufs: dict[str, list[torch.Tensor]] = {k: [] for k in
                                           ("obs", "base_action", "residual", "action", "logprob", "value",
                                            "reward", "dones")}

    def act(raw: torch.Tensor) -> torch.Tensor:
        a_b = base.action(raw)
        o = normalize_obs(raw)
        if model is None:
            r = torch.zeros_like(a_b)
            out = {"residual": r, "action": a_b, "logprob": torch.zeros(n), "value": torch.zeros(n)}
        else:
            out = model.sample(o, a_b, deterministic=deterministic, generator=generator)
        bufs["obs"].append(o)
        bufs["base_action"].append(a_b)
        bufs["dones"].append(done.float())  # done flag before this step
        for k in ("residual", "action", "logprob", "value"):
            bufs[k].append(out[k])
        return denormalize_action(out["action"])

    def on_step(obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor, reward: torch.Tensor,
                step_done: torch.Tensor) -> None:
        nonlocal done
        done = step_done
        bufs["reward"].append(reward)

    raw, _ = rollout_batched(env, seed, num_steps, act, on_step, reset=lambda s: base.reset(n, s))
    stacked = {k: torch.stack(v) for k, v in bufs.items()}
    last_obs = normalize_obs(raw)
    ro = Rollout(**stacked, next_obs=torch.cat([stacked["obs"][1:], last_obs[None]]), last_obs=last_obs,
                 last_base_action=base.action(raw), last_done=done.float())
    ro.set_success(env.n_parts)
    return ro


def set_goal_from_rollout(model: ResidualActorCritic, ro: Rollout) -> None:
    """Goal-KORR: ``o_goal`` = the observation right after the last reward of a successful rollout
    (``misc/kpm_goal_gen.py``); takes the first successful env."""
    env = int(torch.nonzero(ro.success).flatten()[0])
    t_last = int(torch.nonzero(ro.reward[:, env] > 0).flatten()[-1])
    model.set_goal(ro.next_obs[t_last, env])  # type: ignore[operator]


def _warmup_cosine(warmup: int, total: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return f


@dataclass
class TrainResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    best_state: dict[str, torch.Tensor] | None = None
    best_success: float = -1.0
    best_iteration: int = 0
    selection_rule: str = "best deterministic eval success during training (training-distribution seeds)"


def iteration_seed(train_seed: int, iteration: int) -> int:
    """Training / in-training-eval episode seeds: disjoint from held-out test seeds (≥ 10⁹)."""
    return 1_000_003 * (train_seed + 1) + iteration


def train_residual(env: BatchedEnv, base: BatchedBase, model: ResidualActorCritic, cfg: PPOConfig,
                   normalize_obs: Callable[[torch.Tensor], torch.Tensor] = _identity,
                   denormalize_action: Callable[[torch.Tensor], torch.Tensor] = _identity,
                   progress: bool = True, log: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train ``model`` in place with residual PPO (+ its auxiliary model loss). Returns the per-iteration
    history (success, losses, var(φ), relative Koopman error, ρ(K)) and the best-eval checkpoint."""
    if cfg.clip_vloss:
        raise ValueError("clip_vloss=True is not implemented (KORR/ResiP use clip_vloss: false)")
    if env.num_envs != cfg.num_envs:
        raise ValueError(f"env has {env.num_envs} envs but PPOConfig.num_envs={cfg.num_envs}")
    gen = torch.Generator().manual_seed(cfg.seed)
    opt_actor = torch.optim.AdamW(model.actor_parameters(), lr=cfg.lr_actor, betas=(0.9, 0.999), eps=cfg.adam_eps,
                                  weight_decay=cfg.weight_decay)
    opt_critic = torch.optim.AdamW(model.critic_parameters(), lr=cfg.lr_critic, eps=cfg.adam_eps,
                                   weight_decay=cfg.weight_decay)
    n_updates = cfg.num_iterations - (cfg.num_iterations + cfg.eval_interval - 1) // cfg.eval_interval
    sched_a = torch.optim.lr_scheduler.LambdaLR(opt_actor, _warmup_cosine(cfg.warmup_actor, n_updates))
    sched_c = torch.optim.lr_scheduler.LambdaLR(opt_critic, _warmup_cosine(cfg.warmup_critic, n_updates))
    rew_norm = RunningStdRewardNormalizer(clip=cfg.reward_clip)
    all_params = [p for p in model.parameters() if p.requires_grad]
    result = TrainResult()
    goal_set = False
    iters: Any = range(1, cfg.num_iterations + 1)
    if progress:
        from tqdm import tqdm
        iters = tqdm(iters, desc=f"PPO {model.config.kind}", leave=False)
    for it in iters:
        eval_mode = (it - 1) % cfg.eval_interval == 0
        model.eval()
        ro = collect(env, base, model, iteration_seed(cfg.seed, it), cfg.num_steps, eval_mode, gen,
                     normalize_obs, denormalize_action)
        success = float(ro.success.float().mean())
        rec: dict[str, Any] = {"iteration": it, "eval": eval_mode, "success": success}
        if model.config.kind == "korr_goal" and not goal_set and bool(ro.success.any()):
            set_goal_from_rollout(model, ro)
            goal_set = True
            rec["goal_set"] = True
        flat = lambda x: x.reshape(-1, *x.shape[2:])
        if eval_mode:
            if success > result.best_success:
                result.best_success, result.best_iteration = success, it
                result.best_state = copy.deepcopy(model.state_dict())
        else:
            rewards = torch.stack([rew_norm(r) for r in ro.reward]) if cfg.normalize_reward else ro.reward
            with torch.no_grad():
                next_value = model.value(ro.last_obs, ro.last_base_action)
            adv, ret = gae(rewards, ro.value, ro.dones, next_value, ro.last_done, cfg.gamma, cfg.gae_lambda)
            b = {"obs": flat(ro.obs), "ab": flat(ro.base_action), "r": flat(ro.residual), "a": flat(ro.action),
                 "logp": flat(ro.logprob), "adv": flat(adv), "ret": flat(ret), "next_obs": flat(ro.next_obs)}
            total = b["obs"].shape[0]
            mb = total // cfg.num_minibatches
            model.train()
            stop, epochs_run, stats = False, 0, {}
            for _ in range(cfg.update_epochs):
                perm = torch.randperm(total, generator=gen)
                for start in range(0, total - mb + 1, mb):
                    idx = perm[start:start + mb]
                    newlogp, ent, newv = model.evaluate(b["obs"][idx], b["ab"][idx], b["r"][idx])
                    L = ppo_losses(newlogp, b["logp"][idx], b["adv"][idx], newv, b["ret"][idx], ent,
                                   cfg.clip_coef, cfg.norm_adv)
                    aux, aux_info = model.aux_loss(b["obs"][idx], b["a"][idx], b["next_obs"][idx])
                    loss = L.policy - cfg.ent_coef * L.entropy + cfg.vf_coef * L.value + aux
                    opt_actor.zero_grad(set_to_none=True)
                    opt_critic.zero_grad(set_to_none=True)
                    loss.backward()
                    grad_norm = torch.nn.utils.clip_grad_norm_(all_params, cfg.max_grad_norm)
                    opt_actor.step()
                    opt_critic.step()
                    stats = {"policy_loss": float(L.policy.detach()), "value_loss": float(L.value.detach()),
                             "approx_kl": float(L.approx_kl), "clipfrac": float(L.clipfrac),
                             "aux_loss": float(aux.detach()), "grad_norm": float(grad_norm), **aux_info}
                    if L.approx_kl > cfg.target_kl:  # stops all epochs, Koopman learning included
                        stop = True
                        break
                epochs_run += 1
                if stop:
                    break
            sched_a.step()
            sched_c.step()
            rec.update(stats, epochs_run=epochs_run, kl_stop=stop, lr_actor=opt_actor.param_groups[0]["lr"])
            sub = torch.randperm(total, generator=gen)[:4096]
            model.eval()
            rec.update(koopman_diagnostics(model, b["obs"][sub], b["a"][sub], b["next_obs"][sub]))
        result.history.append(rec)
        if log is not None:
            log(rec)
        if progress:
            iters.set_postfix(success=f"{success:.2f}", best=f"{result.best_success:.2f}")
    return result


__all__ = ["BatchedBase", "BatchedEnv", "Rollout", "TrainResult", "collect", "iteration_seed", "set_goal_from_rollout",
           "train_residual"]
