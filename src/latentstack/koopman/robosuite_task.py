"""KORR on robosuite (state only): scripted-expert demos → frozen chunked BC base → residual PPO
(ResiP, KORR) → held-out nominal and perturbed evaluation (spec korr.md §7, §10).

``run_robosuite_study`` writes ``korr.json`` (``conditions``: name → success, Wilson CI, ``perturbed``)
and ``korr.png``; artifacts go to ``policies/``.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentstack.sim.robosuite_env import (
    ACTION_DIM,
    LiftExpert,
    RobosuiteTaskConfig,
    RobosuiteVecEnv,
    obs_dim,
    rollout_expert,
)

from .artifact import load_residual, save_residual
from .base_policy import (
    BatchedChunkBase,
    ChunkBaseConfig,
    ChunkMLPBase,
    load_chunk_base,
    save_chunk_base,
    train_chunk_base,
)
from .configuration_korr import PPOConfig, ppo_config, residual_config
from .experiment import rate_block
from .modeling_korr import ResidualActorCritic, make_residual
from .trainer import collect, train_residual

DEMO_SEED_OFFSET = 100_000_000  # demos; training iterations use trainer.iteration_seed (≈ 1e6·k); test ≥ 2e9
TEST_SEED_OFFSET = 2_000_000_000


def collect_demos(task_cfg: RobosuiteTaskConfig, n_batches: int, noise: float, seed: int = 0
                  ) -> tuple[list[np.ndarray], list[np.ndarray], dict[str, Any]]:
    env = RobosuiteVecEnv(replace(task_cfg, perturb=False))
    seeds = [DEMO_SEED_OFFSET + seed * 1000 + i for i in range(n_batches)]
    obs, act, ok = rollout_expert(env, LiftExpert(noise=noise, seed=seed), seeds)
    env.close()
    keep = [i for i, s in enumerate(ok) if s]
    return [obs[i] for i in keep], [act[i] for i in keep], {
        "demo_seeds": seeds, "episodes": len(ok), "successful_kept": len(keep), "expert_noise": noise}


@torch.no_grad()
def evaluate_robosuite(env: RobosuiteVecEnv, base: ChunkMLPBase, model: ResidualActorCritic | None,
                       seeds: list[int]) -> torch.Tensor:
    b = BatchedChunkBase(base)
    out = []
    for s in seeds:
        ro = collect(env, b, model, s, env.config.horizon, deterministic=True,
                     normalize_obs=b.normalize_obs, denormalize_action=b.denormalize_action)
        out.append(ro.success)
    return torch.cat(out)


def train_robosuite_residual(task_cfg: RobosuiteTaskConfig, base: ChunkMLPBase, kind: str, ppo: PPOConfig,
                             hidden_dim: int = 256, lift_dim: int = 256, progress: bool = True, workers: int = 1,
                             ray_address: str | None = None) -> tuple[ResidualActorCritic, Any]:
    """``workers > 1`` or a Ray address: the training envs are stepped on Ray actors (shards of the batch,
    :class:`~latentstack.koopman.parallel.RayRobosuiteVecEnv`); the same rollouts, so the same training."""
    import contextlib

    from latentstack.sim.evaluation import ray_requested, ray_session

    torch.manual_seed(ppo.seed)
    model = make_residual(residual_config(base.config.obs_dim, base.config.action_dim, kind,
                                          hidden_dim=hidden_dim, lift_dim=lift_dim))
    env_cfg = replace(task_cfg, num_envs=ppo.num_envs, perturb=False)  # perturbations off in training
    on_ray = ray_requested(workers, ray_address)
    with ray_session(workers, ray_address) if on_ray else contextlib.nullcontext():
        if on_ray:
            from .parallel import RayRobosuiteVecEnv

            env: Any = RayRobosuiteVecEnv(env_cfg, workers)
        else:
            env = RobosuiteVecEnv(env_cfg)
        try:
            b = BatchedChunkBase(base)
            res = train_residual(env, b, model, ppo, normalize_obs=b.normalize_obs,
                                 denormalize_action=b.denormalize_action, progress=progress)
        finally:
            env.close()
    if res.best_state is not None:
        model.load_state_dict(res.best_state)
    model.eval()
    return model, res


def run_robosuite_study(out_dir: str | Path, policies_dir: str | Path = "policies", kinds: tuple[str, ...] = (
        "resip", "korr"), demo_batches: int = 1, demo_noise: float = 0.3, bc_steps: int = 600,
        num_envs: int = 8, horizon: int = 60, iterations: int = 26, epochs: int = 10, train_seeds: tuple[int, ...] = (0,),
        test_batches: int = 6, hidden_dim: int = 256, lift_dim: int = 256, base_dir: str | None = None,
        workers: int = 1, ray_address: str | None = None) -> dict[str, Any]:
    """``workers > 1`` or a Ray address, one cluster for the study (:mod:`latentstack.koopman.parallel`): the
    held-out test rollouts run as Ray jobs and residual PPO steps its envs on Ray actors, with the same
    successes and training history; demos, BC and the PPO updates stay in-process."""
    import contextlib

    from latentstack.sim.evaluation import ray_requested, ray_session

    on_ray = ray_requested(workers, ray_address)
    with ray_session(workers, ray_address) if on_ray else contextlib.nullcontext():
        return _run_robosuite_study(out_dir, policies_dir, kinds, demo_batches, demo_noise, bc_steps, num_envs,
                                    horizon, iterations, epochs, train_seeds, test_batches, hidden_dim, lift_dim,
                                    base_dir, (workers, ray_address) if on_ray else None)


def _run_robosuite_study(out_dir: str | Path, policies_dir: str | Path, kinds: tuple[str, ...], demo_batches: int,
                         demo_noise: float, bc_steps: int, num_envs: int, horizon: int, iterations: int, epochs: int,
                         train_seeds: tuple[int, ...], test_batches: int, hidden_dim: int, lift_dim: int,
                         base_dir: str | None, ray: tuple[int, str | None] | None) -> dict[str, Any]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    task_cfg = RobosuiteTaskConfig(num_envs=num_envs, horizon=horizon)
    if base_dir and (Path(base_dir) / "config.json").is_file():
        base, base_meta = load_chunk_base(base_dir)
        base_path = Path(base_dir)
    else:
        base_path = Path(policies_dir) / "korr_lift_base"
        obs, act, demo_meta = collect_demos(task_cfg, demo_batches, demo_noise)
        base, losses = train_chunk_base(obs, act, ChunkBaseConfig(obs_dim=obs_dim(task_cfg.task), action_dim=ACTION_DIM),
                                        steps=bc_steps)
        base_meta = {**demo_meta, "task": task_cfg.task, "horizon": horizon, "bc_steps": bc_steps,
                     "final_bc_loss": float(np.mean(losses[-100:]))}
        save_chunk_base(base, base_path, meta=base_meta)
    test = [TEST_SEED_OFFSET + i for i in range(test_batches)]
    # in-process: one test env per mode, reused for every condition (on Ray the workers build their own)
    envs = {p: RobosuiteVecEnv(replace(task_cfg, perturb=p)) for p in (False, True)} if ray is None else {}

    def evaluate_both(model: ResidualActorCritic | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(nominal, perturbed) test successes: the envs above in-process, or Ray jobs (same successes)."""
        if ray is None:
            return evaluate_robosuite(envs[False], base, model, test), evaluate_robosuite(envs[True], base, model, test)
        from .parallel import evaluate_korr_conditions

        r = evaluate_korr_conditions("robosuite", task_cfg, base, {"m": model}, [False, True], test,
                                     workers=ray[0], ray_address=ray[1])["m"]
        return r[False], r[True]

    b_nom, b_pert = evaluate_both(None)
    results: dict[str, dict[str, torch.Tensor]] = {"base": {"nominal": b_nom, "perturbed": b_pert}}
    print("base", results["base"]["nominal"].float().mean().item(), results["base"]["perturbed"].float().mean().item(),
          f"{time.time() - t0:.0f}s", flush=True)
    histories: dict[str, Any] = {}
    per_seed: dict[str, list[dict[str, Any]]] = {}
    for kind in kinds:
        noms, perts = [], []
        per_seed[kind], histories[kind] = [], {}
        for s in train_seeds:
            ppo = ppo_config("cpu", num_envs=num_envs, num_steps=horizon, num_iterations=iterations,
                             update_epochs=epochs, seed=s)
            model, res = train_robosuite_residual(task_cfg, base, kind, ppo, hidden_dim, lift_dim,
                                                  **({"workers": ray[0], "ray_address": ray[1]} if ray else {}))
            nom, pert = evaluate_both(model)
            noms.append(nom)
            perts.append(pert)
            histories[kind][s] = res.history
            per_seed[kind].append({"train_seed": s, **rate_block(int(nom.sum()), nom.numel()),
                                   "perturbed": rate_block(int(pert.sum()), pert.numel()),
                                   "best_iteration": res.best_iteration, "best_train_eval_success": res.best_success})
            save_residual(model, Path(policies_dir) / f"korr_lift_{kind}" if s == train_seeds[0]
                          else Path(out) / "artifacts" / f"{kind}_seed{s}",
                          meta={"env": "robosuite", "task": task_cfg.to_dict(), "base": "policies/korr_lift_base",
                                "ppo": ppo.to_dict(), "train_seed": s, "best_iteration": res.best_iteration,
                                "selection_rule": res.selection_rule,
                                "test": per_seed[kind][-1]}, source=base_path)
            print(kind, s, nom.float().mean().item(), pert.float().mean().item(), f"{time.time() - t0:.0f}s",
                  flush=True)
        results[kind] = {"nominal": torch.cat(noms), "perturbed": torch.cat(perts)}
    for e in envs.values():
        e.close()
    conditions = {k: {**rate_block(int(v["nominal"].sum()), v["nominal"].numel()),
                      "perturbed": rate_block(int(v["perturbed"].sum()), v["perturbed"].numel()),
                      **({"per_seed": per_seed[k]} if k in per_seed else {})} for k, v in results.items()}
    result = {"env": f"robosuite/{task_cfg.task}", "task_config": task_cfg.to_dict(), "base": base_meta,
              "train_seeds": list(train_seeds), "test_seeds": test, "episodes_per_test_batch": num_envs,
              "ppo": ppo_config("cpu", num_envs=num_envs, num_steps=horizon, num_iterations=iterations,
                                update_epochs=epochs).to_dict(),
              "residual": {"hidden_dim": hidden_dim, "lift_dim": lift_dim},
              "selection_rule": "best deterministic eval success during training (training seeds; biased upward "
                                "for in-training numbers, test numbers use held-out seeds)",
              "conditions": conditions, "histories": histories, "wall_s": time.time() - t0}
    (out / "korr.json").write_text(json.dumps(result, indent=1, default=float))
    from .experiment import plot_comparison

    plot_comparison(result, out / "korr.png")
    return result


def cmd_train_robosuite(args: argparse.Namespace) -> int:
    """``lstack korr train --env robosuite --base policies/korr_lift_base --kind korr --out DIR``."""
    if not args.base:
        raise SystemExit("--env robosuite needs --base <chunk base directory>")
    base, _ = load_chunk_base(args.base)
    horizon = args.num_steps or 60
    task_cfg = RobosuiteTaskConfig(num_envs=args.num_envs, horizon=horizon)
    ppo = ppo_config("cpu", num_envs=args.num_envs, num_steps=horizon, num_iterations=args.iterations,
                     update_epochs=args.epochs, seed=args.seed)
    model, res = train_robosuite_residual(task_cfg, base, args.kind, ppo, args.hidden, args.lift,
                                          workers=args.workers, ray_address=args.ray_address)
    save_residual(model, args.out, meta={"env": "robosuite", "task": task_cfg.to_dict(), "base": args.base,
                                         "ppo": ppo.to_dict(), "train_seed": args.seed,
                                         "best_iteration": res.best_iteration, "selection_rule": res.selection_rule},
                  source=args.base)
    print(f"wrote {args.out}: best train-eval success {res.best_success:.3f} at iteration {res.best_iteration}")
    return 0


__all__ = [
    "cmd_train_robosuite",
    "collect_demos",
    "evaluate_robosuite",
    "load_residual",
    "run_robosuite_study",
    "train_robosuite_residual",
]
