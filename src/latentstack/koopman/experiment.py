"""Seeded comparison runs: base vs residuals (ResiP, KORR, non-linear dynamics) trained with residual PPO,
evaluated on held-out test seeds, nominal and perturbed, with Wilson 95 % intervals.

Used by ``lstack korr train|eval|compare`` on the toy insertion env (CI level, spec korr.md §10).
"""
from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from latentstack.stats import wilson_interval

from .artifact import load_residual, save_residual
from .configuration_korr import PPOConfig, residual_config
from .modeling_korr import ResidualActorCritic, make_residual
from .toy_env import ChunkedToyBase, ToyInsertionConfig, ToyInsertionEnv
from .trainer import TrainResult, collect, train_residual

TEST_SEED_OFFSET = 2_000_000_000  # held-out: never used by training or in-training selection


def test_seeds(n_batches: int) -> list[int]:
    return [TEST_SEED_OFFSET + i for i in range(n_batches)]


def rate_block(successes: int, trials: int) -> dict[str, Any]:
    lo, hi = wilson_interval(successes, trials)
    return {"success": successes / trials if trials else float("nan"), "ci_low": lo, "ci_high": hi,
            "successes": successes, "trials": trials}


@torch.no_grad()
def evaluate_toy(model: ResidualActorCritic | None, seeds: Sequence[int], env_config: ToyInsertionConfig,
                 base: ChunkedToyBase) -> torch.Tensor:
    """Per-episode success (bool, len(seeds)·num_envs) with the deterministic residual (None ⇒ base only)."""
    env = ToyInsertionEnv(env_config)
    if model is not None:
        model.eval()
    out = [collect(env, base, model, s, env_config.max_steps, deterministic=True).success for s in seeds]
    return torch.cat(out)


def run_toy_comparison(kinds: Sequence[str], train_seeds: Sequence[int], ppo: PPOConfig,
                       env_config: ToyInsertionConfig, test_batches: int, out_dir: str | Path,
                       hidden_dim: int = 256, lift_dim: int = 256, base_kwargs: dict[str, Any] | None = None,
                       preregistered_margin: float = 0.10, artifacts_dir: str | Path | None = None,
                       progress: bool = True, from_artifacts: str | Path | None = None, workers: int = 1,
                       ray_address: str | None = None) -> dict[str, Any]:
    """Train every (kind, seed) (or, with ``from_artifacts``, load ``<dir>/<kind>_seed<s>`` where present), evaluate base and each on the same held-out test episodes, nominal and
    perturbed. Writes ``toy.json`` and ``toy.png`` to ``out_dir`` and returns the result dict.

    ``workers > 1`` or a Ray address: the test rollouts run as Ray jobs (one cluster for the whole comparison,
    :mod:`latentstack.koopman.parallel`), with the same successes; training stays in-process."""
    import contextlib

    from latentstack.sim.evaluation import ray_requested, ray_session

    from .parallel import evaluate_korr_conditions

    with ray_session(workers, ray_address) if ray_requested(workers, ray_address) else contextlib.nullcontext():
        return _run_toy_comparison(kinds, train_seeds, ppo, env_config, test_batches, out_dir, hidden_dim, lift_dim,
                                   base_kwargs, preregistered_margin, artifacts_dir, progress, from_artifacts,
                                   functools.partial(evaluate_korr_conditions, workers=workers,
                                                     ray_address=ray_address))


def _run_toy_comparison(kinds: Sequence[str], train_seeds: Sequence[int], ppo: PPOConfig,
                        env_config: ToyInsertionConfig, test_batches: int, out_dir: str | Path, hidden_dim: int,
                        lift_dim: int, base_kwargs: dict[str, Any] | None, preregistered_margin: float,
                        artifacts_dir: str | Path | None, progress: bool, from_artifacts: str | Path | None,
                        evaluate_conditions: Callable[..., dict[str, dict[bool, torch.Tensor]]]) -> dict[str, Any]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base_kwargs = base_kwargs or {}
    seeds = test_seeds(test_batches)
    t0 = time.time()

    def evaluate_both(model: ResidualActorCritic | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(nominal, perturbed) per-episode successes on the test seeds (evaluate_toy, in-process or on Ray)."""
        r = evaluate_conditions("toy_insertion", env_config, base_kwargs, {"m": model}, [False, True], seeds)["m"]
        return r[False], r[True]

    per_cond: dict[str, dict[str, Any]] = {}
    b_nom, b_pert = evaluate_both(None)
    per_cond["base"] = {"nominal": b_nom, "perturbed": b_pert, "per_seed": []}
    histories: dict[str, dict[int, list[dict[str, Any]]]] = {}
    selection: dict[str, dict[int, dict[str, Any]]] = {}
    for kind in kinds:
        noms, perts, per_seed = [], [], []
        histories[kind], selection[kind] = {}, {}
        for s in train_seeds:
            if from_artifacts is not None:  # evaluate already-trained residuals (no retraining, no histories)
                art = Path(from_artifacts) / f"{kind}_seed{s}"
                if not (art / "config.json").is_file():
                    continue
                model, meta = load_residual(art)
                nom, pert = evaluate_both(model)
                noms.append(nom)
                perts.append(pert)
                per_seed.append({"train_seed": s, **rate_block(int(nom.sum()), nom.numel()),
                                 "perturbed": rate_block(int(pert.sum()), pert.numel()),
                                 "best_iteration": meta.get("best_iteration"), "artifact": str(art)})
                selection[kind][s] = {"best_iteration": meta.get("best_iteration"), "rule": meta.get("selection_rule")}
                continue
            torch.manual_seed(s)
            cfg = residual_config(ToyInsertionEnv.obs_dim, ToyInsertionEnv.action_dim, kind,
                                  hidden_dim=hidden_dim, lift_dim=lift_dim)
            model = make_residual(cfg)
            res: TrainResult = train_residual(ToyInsertionEnv(replace(env_config, num_envs=ppo.num_envs)),
                                              ChunkedToyBase(**base_kwargs), model, replace(ppo, seed=s),
                                              progress=progress)
            if res.best_state is not None:
                model.load_state_dict(res.best_state)
            nom, pert = evaluate_both(model)
            noms.append(nom)
            perts.append(pert)
            per_seed.append({"train_seed": s, **rate_block(int(nom.sum()), nom.numel()),
                             "perturbed": rate_block(int(pert.sum()), pert.numel()),
                             "best_iteration": res.best_iteration, "best_train_eval_success": res.best_success})
            histories[kind][s] = res.history
            selection[kind][s] = {"best_iteration": res.best_iteration, "rule": res.selection_rule}
            if artifacts_dir is not None:
                save_residual(model, Path(artifacts_dir) / f"{kind}_seed{s}",
                              meta={"env": "toy_insertion", "env_config": env_config.to_dict(),
                                    "base": {"kind": "ChunkedToyBase", **base_kwargs}, "ppo": ppo.to_dict(),
                                    "train_seed": s, "best_iteration": res.best_iteration,
                                    "selection_rule": res.selection_rule, "test_nominal": per_seed[-1]["success"]})
        if noms:
            per_cond[kind] = {"nominal": torch.cat(noms), "perturbed": torch.cat(perts), "per_seed": per_seed}
    conditions: dict[str, Any] = {}
    # base: each test episode once; residuals: the same episodes once per training seed (pooled).
    for name, d in per_cond.items():
        nom, pert = d["nominal"], d["perturbed"]
        conditions[name] = {**rate_block(int(nom.sum()), nom.numel()),
                            "perturbed": rate_block(int(pert.sum()), pert.numel()), "per_seed": d["per_seed"]}
    base_hi = conditions["base"]["ci_high"]
    acceptance = {k: {"beats_base": conditions[k]["ci_low"] > base_hi and
                      conditions[k]["success"] - conditions["base"]["success"] >= preregistered_margin,
                      "delta": conditions[k]["success"] - conditions["base"]["success"]}
                  for k in kinds if k in conditions}
    result = {
        "env": "toy_insertion", "env_config": env_config.to_dict(), "base": {"kind": "ChunkedToyBase", **base_kwargs},
        "ppo": ppo.to_dict(), "residual": {"hidden_dim": hidden_dim, "lift_dim": lift_dim, "preset": "per kind default"},
        "train_seeds": list(train_seeds), "test_seeds": seeds, "episodes_per_seed_batch": env_config.num_envs,
        "selection": selection,
        "preregistered": {"margin": preregistered_margin,
                          "rule": "condition beats base iff its Wilson ci_low > base ci_high AND success − base ≥ margin "
                                  "(pooled over training seeds, nominal test episodes)"},
        "acceptance": acceptance, "conditions": conditions, "histories": histories,
        "wall_s": time.time() - t0,
    }
    (out / "toy.json").write_text(json.dumps(result, indent=1, default=float))
    plot_comparison(result, out / "toy.png")
    return result


def plot_comparison(result: dict[str, Any], path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conds = result["conditions"]
    names = list(conds)
    fig, axes = plt.subplots(1, 5, figsize=(22, 4))
    ax = axes[0]
    for j, key in enumerate(("nominal", "perturbed")):
        vals = [conds[n] if key == "nominal" else conds[n]["perturbed"] for n in names]
        x = [i + 0.38 * j for i in range(len(names))]
        ax.bar(x, [v["success"] for v in vals], width=0.36, label=key,
               yerr=[[v["success"] - v["ci_low"] for v in vals], [v["ci_high"] - v["success"] for v in vals]],
               capsize=3)
    ax.set_xticks([i + 0.19 for i in range(len(names))], names)
    ax.set_ylim(0, 1)
    ax.set_ylabel("test success (Wilson 95%)")
    ax.legend()
    ax.set_title(f"{result['env']}: held-out test seeds")
    panels = [("success", "train success (stoch.; eval iters det.)"), ("var_phi", "mean var φ"),
              ("rel_kpm_error", "relative Koopman error"), ("rho_K", "ρ(K)")]
    for ax, (key, title) in zip(axes[1:], panels, strict=True):
        for kind, per_seed in result["histories"].items():
            for s, hist in per_seed.items():
                pts = [(h["iteration"], h[key]) for h in hist if key in h and (key == "success" or not h["eval"])]
                if pts:
                    ax.plot(*zip(*pts, strict=True), label=f"{kind} s{s}", lw=1)
        ax.set_title(title)
        ax.set_xlabel("iteration")
        if key in ("var_phi", "rel_kpm_error"):
            ax.set_yscale("log")
    axes[1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


__all__ = ["TEST_SEED_OFFSET", "evaluate_toy", "plot_comparison", "rate_block", "run_toy_comparison", "test_seeds"]
