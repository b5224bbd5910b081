"""Rollout collection for COAST fitting (coast.md §4, §9): run the *unsteered* policy closed-loop on
fit seeds, label each episode by success, and Tap the chosen latent sites at every denoise step.

Uses the evaluation harness's :func:`~latentstack.sim.evaluation.run_episode` (same reset / seeding /
success rule as ``evaluate``; the shared rollout loop), with a ``Tap`` active for the whole episode
(:class:`~latentstack.sim.rollout.TapLatents`). States per episode and
site come back as ``(T, D, S, d)`` (``keep="mean"`` stores the token mean, ``S = 1``, which is
exactly what the ``paper`` preset's mean-pooling builder needs and 16x smaller).

Seeds: the suite's ``test`` split is refused (test seeds are never used for fitting). The caller
chooses the fit seeds explicitly (``seeds=``) or takes ``n`` seeds of a split from ``offset``; the
default is the suite's ``fit`` split, disjoint from the demonstration (``train``), ``select`` and
``test`` seeds.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from .fit import states_from_records

__all__ = ["Rollout", "collect_rollouts", "load_rollouts", "save_rollouts", "split_by_label"]


@dataclass
class Rollout:
    task: str
    seed: int
    success: bool
    length: int
    states: dict[str, torch.Tensor]  # site -> (T, D, S, d) float32 (S = 1 when keep="mean")


def collect_rollouts(
    suite: Any,
    policy: Any,
    sites: Sequence[str],
    *,
    split: str = "fit",
    n: int | None = None,
    offset: int = 0,
    seeds: Iterable[int] | None = None,
    tasks: Sequence[str] | None = None,
    keep: Literal["tokens", "mean"] = "tokens",
    env_factory: Callable[..., Any] | None = None,
    progress: Callable[[Rollout], None] | None = None,
) -> list[Rollout]:
    """Closed-loop unsteered rollouts on fit seeds with success labels and tapped states.

    ``seeds`` (explicit) or the ``n`` seeds of ``suite.seeds[split]`` starting at ``offset``.
    """
    from latentstack.sim.evaluation import run_episode
    from latentstack.sim.rollout import TapLatents

    if keep not in ("tokens", "mean"):
        raise ValueError(f"keep must be 'tokens' or 'mean', got {keep!r}")
    if seeds is None:
        if split == "test":
            raise ValueError("refusing to collect fitting rollouts on the test split")
        if n is None:
            raise ValueError("give seeds= or n=")
        pool = list(suite.seeds[split])
        seed_list = pool[offset : offset + n]
        if len(seed_list) < n:
            raise ValueError(f"split {split!r} has only {len(pool) - offset} seeds from offset {offset}, asked {n}")
    else:
        seed_list = [int(s) for s in seeds]
        test = suite.seeds.get("test") if isinstance(suite.seeds, Mapping) else None
        if test is not None and any(s in test for s in seed_list):
            raise ValueError("refusing to collect fitting rollouts on test seeds")
    if not sites:
        raise ValueError("no sites to tap")
    specs = [t for t in suite.tasks if tasks is None or t.name in tasks]
    if tasks is not None and len(specs) != len(set(tasks)):
        raise KeyError(f"unknown task(s) {sorted(set(tasks) - {t.name for t in specs})}")
    if env_factory is None:
        from latentstack.sim.metaworld_env import MetaWorldLangEnv

        env_factory = MetaWorldLangEnv
    out: list[Rollout] = []
    for spec in specs:
        env = env_factory(spec.name, image_size=suite.image_size, camera=suite.camera,
                          max_episode_steps=spec.max_episode_steps, instruction=spec.instruction)
        try:
            for seed in seed_list:
                tap = TapLatents(policy, sites)
                ep = run_episode(env, policy, seed, hooks=[tap])
                states = {}
                for site in sites:
                    H = states_from_records(tap.records[site]).float()
                    states[site] = H.mean(2, keepdim=True) if keep == "mean" else H
                r = Rollout(spec.name, int(seed), bool(ep.success), int(ep.length), states)
                out.append(r)
                if progress is not None:
                    progress(r)
        finally:
            env.close()
    return out


def split_by_label(rollouts: Iterable[Rollout], site: str, task: str | None = None
                   ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``(success_states, failure_states)`` at ``site`` (optionally one task), one entry per episode."""
    s, f = [], []
    for r in rollouts:
        if task is not None and r.task != task:
            continue
        (s if r.success else f).append(r.states[site])
    return s, f


_ROLLOUT_FORMAT = "latentstack.coast.rollouts/1"


def save_rollouts(rollouts: Sequence[Rollout], path: str | Path, meta: Mapping[str, Any] | None = None) -> Path:
    """One safetensors file: tensors ``{i:05d}/{site}``; labels and ``meta`` in the JSON metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"{i:05d}/{site}": H.detach().float().cpu().contiguous()
               for i, r in enumerate(rollouts) for site, H in r.states.items()}
    labels = [{"task": r.task, "seed": r.seed, "success": r.success, "length": r.length, "sites": list(r.states)}
              for r in rollouts]
    save_file(tensors, str(path), metadata={"format": _ROLLOUT_FORMAT, "rollouts": json.dumps(labels),
                                            "meta": json.dumps(dict(meta or {}), default=str)})
    return path


def load_rollouts(path: str | Path) -> tuple[list[Rollout], dict[str, Any]]:
    """Inverse of :func:`save_rollouts`: ``(rollouts, meta)``."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        md = f.metadata() or {}
        if md.get("format") != _ROLLOUT_FORMAT:
            raise ValueError(f"{path}: not a {_ROLLOUT_FORMAT} file")
        out = [Rollout(r["task"], int(r["seed"]), bool(r["success"]), int(r["length"]),
                       {s: f.get_tensor(f"{i:05d}/{s}") for s in r["sites"]})
               for i, r in enumerate(json.loads(md["rollouts"]))]
        return out, json.loads(md.get("meta", "{}"))
