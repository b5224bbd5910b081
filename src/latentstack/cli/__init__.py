"""``lstack`` command line: every component as ``lstack <component> <verb>``, with the same flags for the same
things (:mod:`latentstack.cli.common`).

Building the parser imports no torch and no model stack (``lstack --help`` is instant); each command imports
what it needs when it runs. Components: ``record``, ``train`` (dispatches on a config's ``type``), ``eval``,
``demo``, ``launch``, ``steer``, ``quantize``, ``act``, ``lion``, ``unilion``, ``stereo``, ``korr``, ``serve``, ``export``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from latentstack.cli.common import (
    DEFAULT_POLICY,
    DEFAULT_SUITE,
    LazyCommand,
    add_data_arg,
    add_device_arg,
    add_episodes_arg,
    add_out_arg,
    add_policy_arg,
    add_ray_args,
    add_suite_arg,
    device_or_exit,
)

# Offline by construction: nothing may be fetched from a hub at run time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("WANDB_MODE", "disabled")

__all__ = ["DEFAULT_POLICY", "DEFAULT_SUITE", "build_parser", "main", "run_evaluation"]

# component -> module defining ``add_parser(subparsers)`` (torch-free; commands load lazily)
COMPONENTS: dict[str, str] = {
    "launch": "latentstack.launch_cli",
    "steer": "latentstack.cli.steer",
    "quantize": "latentstack.cli.quantize",
    "act": "latentstack.cli.act",
    "lion": "latentstack.cli.lion",
    "unilion": "latentstack.cli.unilion",
    "korr": "latentstack.cli.korr",
    "stereo": "latentstack.cli.stereo",
    "ros": "latentstack.cli.ros",
    "serve": "latentstack.cli.serve",
    "export": "latentstack.cli.export",
}


def _resolve(path: str) -> str:
    """Relative artifact paths are looked up in the cwd first, then in the checkout / installed data."""
    for prefix in ("random:", "quant:"):
        if path.startswith(prefix):
            return prefix + _resolve(path[len(prefix) :])
    p = Path(path)
    if p.is_absolute() or p.exists() or path in ("vla",):
        return path
    from latentstack.core.paths import resolve_path

    candidate = resolve_path(p)
    return str(candidate) if candidate.exists() else path


def _parse_conditions(specs: list[str]) -> dict[str, str]:
    """``name=path`` or ``path`` (name = last path component, ``untrained`` for ``random:``)."""
    out: dict[str, str] = {}
    for spec in specs:
        if "=" in spec:
            name, path = spec.split("=", 1)
        else:
            path = spec
            name = "untrained" if spec.startswith("random:") else Path(spec).name
        if name in out:
            raise SystemExit(f"duplicate condition name {name!r}; use name=path")
        out[name] = _resolve(path)
    return out


def cmd_record(args: argparse.Namespace) -> int:
    from latentstack.sim.record import record_demos
    from latentstack.sim.suites import load_suite

    suite = load_suite(args.suite)
    ds = record_demos(suite, Path(args.data), episodes_per_task=args.episodes_per_task, split="train")
    print(f"recorded {ds.num_episodes} episodes, {ds.num_frames} frames -> {args.data}")
    return 0


def build_policies(conditions: dict[str, str], device: str = "cpu") -> dict:
    """``{name: policy}`` for ``lstack eval`` conditions, in eval mode; module-level so Ray workers can run it."""
    from latentstack.policies.factory import make_policy

    policies = {}
    for name, path in conditions.items():
        policy = make_policy(path, device=device)
        if hasattr(policy, "eval"):
            policy.eval()  # nn.Module policies: dropout/augmentation off
        policies[name] = policy
    return policies


def run_evaluation(
    suite_name: str,
    conditions: dict[str, str],
    episodes_per_task: int,
    split: str,
    out_dir: Path | None,
    stem: str = "eval",
    progress: bool = True,
    device: str = "cpu",
    workers: int = 1,
    ray_address: str | None = None,
) -> dict:
    """``workers > 1`` or a Ray address (argument or ``RAY_ADDRESS``): the episodes run as Ray tasks
    (:func:`latentstack.sim.evaluation.evaluate_parallel`), with the same outcomes as in-process."""
    import functools

    import torch

    from latentstack.sim.evaluation import evaluate_parallel, latency_table, outcome_table, write_report
    from latentstack.sim.suites import load_suite

    device = device_or_exit(device)
    suite = load_suite(suite_name)
    make = functools.partial(build_policies, dict(conditions), device)
    in_process = workers <= 1 and not (ray_address or os.environ.get("RAY_ADDRESS"))
    if in_process:  # loaded before the clock starts, as before (wall_s times the episodes only)
        policies = make()
        make = functools.partial(dict, policies)
    t0 = time.perf_counter()
    with torch.inference_mode():
        results = evaluate_parallel(suite, make, episodes_per_task, split=split, workers=workers,
                                    ray_address=ray_address, progress=progress,
                                    gpus_per_worker=0.0 if device == "cpu" or in_process else 1.0 / max(1, workers))
    wall = time.perf_counter() - t0
    print()
    print(f"suite {suite.name} | split {split} | seeds {list(suite.seeds[split])[:episodes_per_task][0]}.."
          f"{list(suite.seeds[split])[:episodes_per_task][-1]} per task | {wall:.0f} s")
    print(outcome_table(results))
    print()
    print(latency_table(results))
    meta = {
        "title": f"{suite.name} ({split} seeds, {episodes_per_task}/task)",
        "suite": suite.name,
        "split": split,
        "seeds": list(suite.seeds[split])[:episodes_per_task],
        "conditions": conditions,
        "wall_s": wall,
        "torch_threads": torch.get_num_threads(),
        "device": device,
        **({} if in_process else {"ray_workers": workers}),
    }
    summary = {n: r.summary() for n, r in results.items()}
    if out_dir is not None:
        jp, pp = write_report(results, out_dir, meta, stem=stem)
        print(f"\nreport -> {jp} , {pp}")
    return {"meta": meta, "conditions": summary, "results": results}


def cmd_eval(args: argparse.Namespace) -> int:
    conditions = _parse_conditions(args.policy)
    run_evaluation(args.suite, conditions, args.episodes_per_task, args.split, Path(args.out) if args.out else None,
                   device=args.device, workers=args.workers, ray_address=args.ray_address)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    policy = _resolve(args.policy)
    if not Path(policy).exists():
        print(f"shipped checkpoint {policy} is missing", file=sys.stderr)
        return 2
    if args.graph:
        from latentstack import launch_cli

        return launch_cli.main([args.graph, "--episodes-per-task", str(args.episodes_per_task), "--policy", policy,
                                "--device", args.device, "--compare-eval"])
    conditions = {"vla": policy}
    if not args.no_baseline:
        conditions["untrained"] = f"random:{policy}"
    out = Path(args.out) if args.out else None
    run_evaluation(args.suite, conditions, args.episodes_per_task, "test", out, stem="demo", device=args.device,
                   workers=args.workers, ray_address=args.ray_address)
    return 0


def build_parser() -> argparse.ArgumentParser:
    import importlib

    p = argparse.ArgumentParser(prog="lstack", description="latentstack: policies, steering, quantization, ROS 2 nodes")
    sub = p.add_subparsers(dest="command", required=True, metavar="<component>")

    r = sub.add_parser("record", help="record scripted-expert demonstrations into a LeRobotDataset")
    add_suite_arg(r)
    add_data_arg(r, "data/demos_metaworld_mt6", help="LeRobotDataset directory to write", aliases=("--root",))
    add_episodes_arg(r, 50)
    r.set_defaults(func=LazyCommand("latentstack.cli:cmd_record"))

    from latentstack.cli import train

    train.add_parser(sub)

    e = sub.add_parser("eval", help="closed-loop evaluation on a suite's held-out seeds")
    add_suite_arg(e)
    add_policy_arg(e, repeat=True, required=True)
    add_episodes_arg(e, 20)
    e.add_argument("--split", default="test", choices=["train", "select", "test"])
    add_device_arg(e)
    add_ray_args(e)
    add_out_arg(e, help="report directory (JSON + PNG)")
    e.set_defaults(func=LazyCommand("latentstack.cli:cmd_eval"))

    d = sub.add_parser("demo", help="evaluate the shipped checkpoint on the suite's test seeds")
    add_suite_arg(d)
    add_policy_arg(d, DEFAULT_POLICY)
    add_episodes_arg(d, 10)
    d.add_argument("--no-baseline", action="store_true", help="skip the untrained-policy baseline")
    add_device_arg(d)
    add_ray_args(d)
    add_out_arg(d, "outputs/demo", help="report directory (JSON + PNG)")
    d.add_argument("--graph", default=None,
                   help="run the closed loop through a node graph (e.g. ros/graphs/metaworld.yaml) instead")
    d.set_defaults(func=LazyCommand("latentstack.cli:cmd_demo"))

    for module in COMPONENTS.values():  # each adds `lstack <component> ...` (torch-free modules)
        importlib.import_module(module).add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from latentstack.core.device import DeviceError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DeviceError as exc:  # e.g. --device cuda for a component that still runs on the CPU only
        print(f"lstack: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
