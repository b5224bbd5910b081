"""``lstack korr train | eval | compare | robosuite`` commands; the flags are in :mod:`latentstack.cli.korr`
(torch-free). Heavy modules load inside the command functions.

``--device``: residual PPO, its environments and the evaluation run on the CPU so far (the RL trainer's
:class:`~latentstack.koopman.configuration_korr.PPOConfig` has no device); any other device is refused with a
clear message instead of being ignored.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["cmd_compare", "cmd_eval", "cmd_robosuite", "cmd_train"]


def _cpu_only(args: argparse.Namespace, what: str) -> None:
    from latentstack.core.device import device_kwargs

    from .configuration_korr import PPOConfig

    device_kwargs(PPOConfig, getattr(args, "device", "cpu"), what)


def _load_yaml(path: str) -> dict[str, Any]:
    """A config by path (checkout-relative paths work from any cwd) or by name (``korr_toy``: the data resolver)."""
    import yaml

    from latentstack.core.paths import find_config

    try:
        p = find_config(path)
    except FileNotFoundError as e:
        raise SystemExit(f"config {path} not found ({e})") from None
    return yaml.safe_load(p.read_text()) or {}


def cmd_robosuite(args: argparse.Namespace) -> int:
    import torch

    from .robosuite_task import run_robosuite_study

    _cpu_only(args, "the KORR robosuite study")
    torch.set_num_threads(1)
    res = run_robosuite_study(args.out, args.policies, tuple(args.kinds.split(",")), args.demo_batches,
                              args.demo_noise, args.bc_steps, args.num_envs, args.horizon, args.iterations,
                              args.epochs, tuple(int(s) for s in args.train_seeds.split(",")), args.test_batches,
                              base_dir=args.base, workers=args.workers, ray_address=args.ray_address)
    path = Path(args.out) / "korr.json"
    full = json.loads(path.read_text())
    full["command"] = "lstack korr robosuite " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                                                           if k not in ("func", "korr_cmd", "command") and v is not None
                                                           and not (k == "workers" and v == 1))
    path.write_text(json.dumps(full, indent=1))
    for name, c in res["conditions"].items():
        p = c["perturbed"]
        print(f"{name:6s} nominal {c['success']:.3f} [{c['ci_low']:.3f}, {c['ci_high']:.3f}]  "
              f"perturbed {p['success']:.3f} [{p['ci_low']:.3f}, {p['ci_high']:.3f}]  n={c['trials']}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    import torch

    from .artifact import load_residual
    from .configuration_korr import ppo_config
    from .experiment import run_toy_comparison
    from .toy_env import ToyInsertionConfig

    _cpu_only(args, "KORR compare")
    torch.set_num_threads(1)
    cfg = _load_yaml(args.config)
    if cfg.get("env") != "toy_insertion":
        raise SystemExit(f"compare supports env toy_insertion, got {cfg.get('env')!r}")
    ppo_kw = dict(cfg.get("ppo", {}))
    ppo = ppo_config(ppo_kw.pop("preset", "cpu"), **ppo_kw)
    res = run_toy_comparison(cfg["kinds"], cfg["train_seeds"], ppo, ToyInsertionConfig(**cfg.get("env_config", {})),
                             cfg["test_batches"], args.out, base_kwargs=cfg.get("base", {}),
                             preregistered_margin=cfg.get("preregistered_margin", 0.1),
                             artifacts_dir=args.artifacts, from_artifacts=args.from_artifacts,
                             workers=args.workers, ray_address=args.ray_address, **cfg.get("residual", {}))
    res_path = Path(args.out) / "toy.json"
    full = json.loads(res_path.read_text())
    full["command"] = f"lstack korr compare --config {args.config} --out {args.out}" + (
        f" --from-artifacts {args.from_artifacts}" if args.from_artifacts else "") + (
        f" --workers {args.workers}" if args.workers > 1 else "") + (
        f" --ray-address {args.ray_address}" if args.ray_address else "")
    for spec in args.histories_from:  # per-iteration diagnostics of separately trained residuals
        kind, _, d = spec.partition("=")
        meta = load_residual(d)[1]  # the training meta (history, seed) is the artifact's "extra"
        full.setdefault("histories", {}).setdefault(kind, {})[str(meta["train_seed"])] = meta["history"]
        full["command"] += f" --histories-from {spec}"
    if args.histories_from:
        from .experiment import plot_comparison

        plot_comparison(full, Path(args.out) / "toy.png")
    res_path.write_text(json.dumps(full, indent=1))
    for name, c in res["conditions"].items():
        p = c["perturbed"]
        print(f"{name:6s} nominal {c['success']:.3f} [{c['ci_low']:.3f}, {c['ci_high']:.3f}]  "
              f"perturbed {p['success']:.3f} [{p['ci_low']:.3f}, {p['ci_high']:.3f}]  n={c['trials']}")
    print("acceptance:", json.dumps(res["acceptance"]))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    _cpu_only(args, "KORR training (residual PPO)")
    torch.set_num_threads(1)
    if args.env != "robosuite" and (args.workers > 1 or args.ray_address):
        # the toy env is one batched torch computation: there is nothing to shard
        raise SystemExit("--workers/--ray-address: only --env robosuite steps its training envs on Ray")
    if args.env == "robosuite":
        from .robosuite_task import cmd_train_robosuite

        return cmd_train_robosuite(args)
    from .artifact import save_residual
    from .configuration_korr import ppo_config, residual_config
    from .modeling_korr import make_residual
    from .toy_env import ChunkedToyBase, ToyInsertionConfig, ToyInsertionEnv
    from .trainer import train_residual

    env_cfg = ToyInsertionConfig(num_envs=args.num_envs)
    ppo = ppo_config("cpu", num_envs=args.num_envs, num_steps=args.num_steps or env_cfg.max_steps,
                     num_iterations=args.iterations, update_epochs=args.epochs, seed=args.seed)
    torch.manual_seed(args.seed)
    model = make_residual(residual_config(ToyInsertionEnv.obs_dim, ToyInsertionEnv.action_dim, args.kind,
                                          hidden_dim=args.hidden, lift_dim=args.lift))
    res = train_residual(ToyInsertionEnv(env_cfg), ChunkedToyBase(), model, ppo)
    path = save_residual(model, args.out, state_dict=res.best_state,
                         meta={"env": "toy_insertion", "env_config": env_cfg.to_dict(), "base": {"kind": "ChunkedToyBase"},
                               "ppo": ppo.to_dict(), "train_seed": args.seed, "best_iteration": res.best_iteration,
                               "selection_rule": res.selection_rule, "history": res.history})
    print(f"wrote {path}: best train-eval success {res.best_success:.3f} at iteration {res.best_iteration}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from .artifact import load_residual
    from .experiment import rate_block, test_seeds
    from .parallel import evaluate_korr_conditions
    from .toy_env import ToyInsertionConfig

    _cpu_only(args, "KORR evaluation")
    torch.set_num_threads(1)
    seeds = test_seeds(args.test_batches)
    modes = {"on": [True], "off": [False], "both": [False, True]}[args.perturb]
    if args.env == "robosuite":
        from latentstack.sim.robosuite_env import RobosuiteTaskConfig

        from .base_policy import load_chunk_base

        if not args.base:
            raise SystemExit("--env robosuite needs --base <chunk base directory>")
        base: Any = load_chunk_base(args.base)[0]
        env_cfg: Any = RobosuiteTaskConfig(num_envs=args.episodes_per_batch or 8, horizon=60)
    else:
        base, env_cfg = {}, ToyInsertionConfig(num_envs=args.episodes_per_batch or 512)  # ChunkedToyBase()
    models: dict[str, Any] = {"base": None}
    for spec in args.residual:
        name, _, d = spec.rpartition("=")
        # robosuite: a residual trained on a saved base must name that base (refused otherwise)
        models[name or Path(d).name] = load_residual(d, source=args.base if args.env == "robosuite" else None)[0]
    # --workers/--ray-address: one Ray job per (model, mode, test seed), same successes as in-process
    succ = evaluate_korr_conditions(args.env, env_cfg, base, models, modes, seeds, workers=args.workers,
                                    ray_address=args.ray_address, progress=args.workers > 1)
    out: dict[str, Any] = {"env": args.env, "test_seeds": seeds, "conditions": {}}
    for name in models:
        entry: dict[str, Any] = {}
        for pert in modes:
            s = succ[name][pert]
            blk = rate_block(int(s.sum()), s.numel())
            if pert:
                entry["perturbed"] = blk
            else:
                entry.update(blk)
        out["conditions"][name] = entry
        print(name, json.dumps(entry))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "eval.json").write_text(json.dumps(out, indent=1))
    return 0
