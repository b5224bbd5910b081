"""KORR's rollout collection on Ray, on the project's one Ray mechanism (:mod:`latentstack.sim.evaluation`:
``ray_session``/``ray_map``/``ray_actors``; local Ray by default, ``--ray-address``/``RAY_ADDRESS`` for a
cluster; workers are fresh processes, never forks, as MuJoCo needs): evaluation as (condition, perturbed,
test-seed batch) jobs, and residual PPO's robosuite envs as shards on actors (:class:`RayRobosuiteVecEnv`).

Why this split: one job is one call of the in-process evaluators (:func:`~latentstack.koopman.experiment.
evaluate_toy`, :func:`~latentstack.koopman.robosuite_task.evaluate_robosuite`) on one test seed, and every batch
is fully determined by its seed (both envs reseed everything on ``reset(seed)``, the bases reset their chunk
queue, the residual acts deterministically), with the same batch size in and out of Ray, so the successes are
the in-process ones, bit for bit. Residual PPO on robosuite steps each env shard on an actor (the env's
seed is its index in the whole batch), while sampling and updates stay in the driver: the same rollouts, so
the same training. The toy env's training is one batched torch computation and stays in-process.

Models travel as (config dict, numpy state dict), not pickled modules; results come back as lists of bools.
"""
from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

__all__ = ["ModelPayload", "RayRobosuiteVecEnv", "evaluate_korr_conditions", "model_payload"]


@dataclass(frozen=True)
class ModelPayload:
    """A model as plain data: its config (``to_dict``) and weights as numpy arrays (rebuilt in a worker)."""

    config: dict[str, Any]
    state: dict[str, np.ndarray]


def model_payload(model: torch.nn.Module) -> ModelPayload:
    """A residual or chunk base (anything with a ``config`` that has ``to_dict``) as a :class:`ModelPayload`."""
    cfg = model.config  # type: ignore[attr-defined]
    return ModelPayload(cfg.to_dict(), {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()})


def _rebuild(payload: ModelPayload, build: Callable[[Any], torch.nn.Module], config_cls: type) -> torch.nn.Module:
    model = build(config_cls.from_dict(payload.config))
    model.load_state_dict({k: torch.from_numpy(v) for k, v in payload.state.items()})
    return model.eval()


def _residual(payload: ModelPayload | None) -> torch.nn.Module | None:
    from .configuration_korr import ResidualConfig
    from .modeling_korr import make_residual

    return None if payload is None else _rebuild(payload, make_residual, ResidualConfig)


class _KorrRolloutWorker:
    """One actor's evaluator: builds the base and every residual once; robosuite envs per perturbation mode
    on first use (they are the slow part to build; they end with the actor's process)."""

    def __init__(self, env: str, env_config: Any, base: Any, residuals: Mapping[str, ModelPayload | None]) -> None:
        self.env, self.env_config = env, env_config
        self.models = {n: _residual(p) for n, p in residuals.items()}
        if env == "robosuite":
            from .base_policy import ChunkBaseConfig, _build_chunk_base

            self.base = _rebuild(base, _build_chunk_base, ChunkBaseConfig)
            self.envs: dict[bool, Any] = {}
        else:
            from .toy_env import ChunkedToyBase

            self.base = ChunkedToyBase(**base)

    def __call__(self, name: str, perturb: bool, seed: int) -> list[bool]:
        """One test-seed batch through the in-process evaluator: per-episode successes."""
        if self.env == "robosuite":
            from latentstack.sim.robosuite_env import RobosuiteVecEnv

            from .robosuite_task import evaluate_robosuite

            if perturb not in self.envs:
                self.envs[perturb] = RobosuiteVecEnv(replace(self.env_config, perturb=perturb))
            s = evaluate_robosuite(self.envs[perturb], self.base, self.models[name], [seed])
        else:
            from .experiment import evaluate_toy

            s = evaluate_toy(self.models[name], [seed], replace(self.env_config, perturb=perturb), self.base)
        return [bool(x) for x in s.tolist()]


def evaluate_korr_conditions(env: str, env_config: Any, base: Any, models: Mapping[str, torch.nn.Module | None],
                             modes: Sequence[bool], seeds: Sequence[int], workers: int = 1,
                             ray_address: str | None = None, progress: bool = False
                             ) -> dict[str, dict[bool, torch.Tensor]]:
    """Per-episode success (bool tensor, ``len(seeds)·num_envs``, seed-major) of every model (``None`` = the base
    alone) in every perturbation mode, on the held-out test-seed batches ``seeds``.

    ``env``: ``"toy_insertion"`` (``env_config`` a ToyInsertionConfig, ``base`` the ChunkedToyBase kwargs) or
    ``"robosuite"`` (a RobosuiteTaskConfig, ``base`` the frozen ChunkMLPBase). In-process (``workers <= 1``, no
    address): the evaluators exactly as before (one robosuite env per mode, reused over models and seeds). Else
    one Ray job per (model, mode, seed), with outcomes equal to the in-process run's."""
    from latentstack.sim.evaluation import ray_map, ray_requested

    from .experiment import evaluate_toy

    if env not in ("toy_insertion", "robosuite"):
        raise ValueError(f"unknown KORR env {env!r}")
    out: dict[str, dict[bool, torch.Tensor]] = {n: {} for n in models}
    if not ray_requested(workers, ray_address):
        if env == "robosuite":
            from latentstack.sim.robosuite_env import RobosuiteVecEnv

            from .robosuite_task import evaluate_robosuite

            envs = {p: RobosuiteVecEnv(replace(env_config, perturb=p)) for p in modes}
            try:
                for n, m in models.items():
                    for p in modes:
                        out[n][p] = evaluate_robosuite(envs[p], base, m, list(seeds))
            finally:
                for e in envs.values():
                    e.close()
        else:
            from .toy_env import ChunkedToyBase

            b = ChunkedToyBase(**base)
            for n, m in models.items():
                for p in modes:
                    out[n][p] = evaluate_toy(m, list(seeds), replace(env_config, perturb=p), b)
        return out
    payloads = {n: None if m is None else model_payload(m) for n, m in models.items()}
    make = functools.partial(_KorrRolloutWorker, env, env_config,
                             model_payload(base) if env == "robosuite" else dict(base), payloads)
    jobs = [(n, p, int(s)) for n in models for p in modes for s in seeds]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc=f"korr eval (ray, {min(workers, len(jobs))} workers)", unit="batch",
                   dynamic_ncols=True)
    try:
        res = ray_map(make, jobs, workers, ray_address=ray_address,
                      on_result=(lambda i: bar.update(1)) if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    by_job = dict(zip(jobs, res, strict=True))
    for n in models:
        for p in modes:  # seed-major, as the in-process torch.cat over seeds
            out[n][p] = torch.tensor([x for s in seeds for x in by_job[(n, p, int(s))]], dtype=torch.bool)
    return out


class _EnvShard:
    """Envs ``first_index ..`` of a robosuite batch, in one Ray actor; numpy in and out."""

    def __init__(self, config: Any, first_index: int) -> None:
        from latentstack.sim.robosuite_env import RobosuiteVecEnv

        self.env = RobosuiteVecEnv(config, first_index=first_index)

    def reset(self, seed: int) -> np.ndarray:
        return self.env.reset(seed).numpy()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool, int]:
        obs, rew, done, info = self.env.step(action)
        return obs.numpy(), rew.numpy(), done.numpy(), bool(info["truncated"].all()), self.env.kicks

    def close(self) -> None:
        self.env.close()


class RayRobosuiteVecEnv:
    """:class:`~latentstack.sim.robosuite_env.RobosuiteVecEnv` (the trainer's ``BatchedEnv``) with its envs split
    into contiguous shards on ``workers`` Ray actors, stepped in parallel. Each env is seeded by its index in the
    whole batch, so resets, steps and rewards are the in-process batch's. Use inside a
    :func:`~latentstack.sim.evaluation.ray_session`; ``close()`` ends the actors."""

    n_parts = 1

    def __init__(self, config: Any, workers: int) -> None:
        from latentstack.sim.evaluation import ray_actors
        from latentstack.sim.robosuite_env import ACTION_DIM, obs_dim

        self.config = config
        self.num_envs, self.action_dim, self.obs_dim = config.num_envs, ACTION_DIM, obs_dim(config.task)
        k = max(1, min(workers, config.num_envs))
        bounds = [round(i * config.num_envs / k) for i in range(k + 1)]
        self.slices = [slice(a, b) for a, b in itertools.pairwise(bounds)]
        self.actors = ray_actors([functools.partial(_EnvShard, replace(config, num_envs=s.stop - s.start), s.start)
                                  for s in self.slices])
        self.kicks = 0

    def reset(self, seed: int) -> torch.Tensor:
        import ray

        self.kicks = 0
        return torch.from_numpy(np.concatenate(ray.get([a.call.remote("reset", seed) for a in self.actors])))

    def step(self, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        import ray

        a = np.asarray(action)
        if a.shape != (self.num_envs, self.action_dim):  # checked here too: a shard would see only its part
            raise ValueError(f"action must be ({self.num_envs}, {self.action_dim}), got {a.shape}")
        parts = ray.get([act.call.remote("step", a[s]) for act, s in zip(self.actors, self.slices, strict=True)])
        obs, rew, done = (torch.from_numpy(np.concatenate([p[j] for p in parts])) for j in range(3))
        self.kicks = sum(p[4] for p in parts)
        return obs, rew, done, {"truncated": torch.full((self.num_envs,), parts[0][3])}

    def close(self) -> None:
        import ray

        try:
            ray.get([a.call.remote("close") for a in self.actors])
        finally:
            for a in self.actors:
                ray.kill(a)
