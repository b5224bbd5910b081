"""`lstack` command line. Subcommands import their stacks lazily so `lstack --help` is instant."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# Offline by construction: nothing may be fetched from a hub at run time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("WANDB_MODE", "disabled")

DEFAULT_SUITE = "metaworld_mt6"
DEFAULT_POLICY = "policies/vla_metaworld_mt6"


def repo_root() -> Path:
    env = os.environ.get("LATENTSTACK_ROOT")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "sim" / "suites").is_dir() and (parent / "pyproject.toml").is_file():
            return parent
    return Path.cwd()


def _resolve(path: str) -> str:
    """Relative artifact paths are looked up in the cwd first, then in the repository root."""
    for prefix in ("random:", "quant:"):
        if path.startswith(prefix):
            return prefix + _resolve(path[len(prefix) :])
    p = Path(path)
    if p.is_absolute() or p.exists() or path in ("vla",):
        return path
    candidate = repo_root() / p
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
    ds = record_demos(suite, Path(args.root), episodes_per_task=args.episodes_per_task, split="train")
    print(f"recorded {ds.num_episodes} episodes, {ds.num_frames} frames -> {args.root}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from latentstack.policies.train import run_from_args

    return run_from_args(args)


def run_evaluation(
    suite_name: str,
    conditions: dict[str, str],
    episodes_per_task: int,
    split: str,
    out_dir: Path | None,
    stem: str = "eval",
    progress: bool = True,
) -> dict:
    import torch

    from latentstack.policies.factory import make_policy
    from latentstack.sim.evaluation import evaluate, latency_table, outcome_table, write_report
    from latentstack.sim.suites import load_suite

    suite = load_suite(suite_name)
    policies = {}
    for name, path in conditions.items():
        policy = make_policy(path)
        if hasattr(policy, "eval"):
            policy.eval()  # nn.Module policies: dropout/augmentation off
        policies[name] = policy
    t0 = time.perf_counter()
    with torch.inference_mode():
        results = evaluate(suite, policies, episodes_per_task=episodes_per_task, split=split, progress=progress)
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
    }
    summary = {n: r.summary() for n, r in results.items()}
    if out_dir is not None:
        jp, pp = write_report(results, out_dir, meta, stem=stem)
        print(f"\nreport -> {jp} , {pp}")
    return {"meta": meta, "conditions": summary, "results": results}


def cmd_eval(args: argparse.Namespace) -> int:
    conditions = _parse_conditions(args.policy)
    run_evaluation(args.suite, conditions, args.episodes_per_task, args.split, Path(args.out) if args.out else None)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    policy = _resolve(args.policy)
    if not Path(policy).exists():
        print(f"shipped checkpoint {policy} is missing", file=sys.stderr)
        return 2
    if args.graph:
        from latentstack import launch_cli

        return launch_cli.main(
            [args.graph, "--episodes", str(args.episodes_per_task), "--policy", policy, "--compare-eval"]
        )
    conditions = {"vla": policy}
    if not args.no_baseline:
        conditions["untrained"] = f"random:{policy}"
    out = Path(args.out) if args.out else None
    run_evaluation(args.suite, conditions, args.episodes_per_task, "test", out, stem="demo")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lstack", description="latentstack: policies, steering, quantization, ROS 2 nodes")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("record", help="record scripted-expert demonstrations into a LeRobotDataset")
    r.add_argument("--suite", default=DEFAULT_SUITE)
    r.add_argument("--root", default="data/demos_metaworld_mt6")
    r.add_argument("--episodes-per-task", type=int, default=50)
    r.set_defaults(func=cmd_record)

    t = sub.add_parser("train", help="train the VLA on a LeRobotDataset (resumable; progress bar + loss plot)")
    from latentstack.policies.train import add_train_arguments

    add_train_arguments(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="closed-loop evaluation on a suite's held-out seeds")
    e.add_argument("--suite", default=DEFAULT_SUITE)
    e.add_argument("--policy", action="append", required=True,
                   help="checkpoint dir, name=dir, or random:<dir> (untrained twin); repeat for paired conditions")
    e.add_argument("--episodes-per-task", type=int, default=20)
    e.add_argument("--split", default="test", choices=["train", "select", "test"])
    e.add_argument("--out", default=None, help="report directory (JSON + PNG)")
    e.set_defaults(func=cmd_eval)

    d = sub.add_parser("demo", help="evaluate the shipped checkpoint on the suite's test seeds")
    d.add_argument("--suite", default=DEFAULT_SUITE)
    d.add_argument("--policy", default=DEFAULT_POLICY)
    d.add_argument("--episodes-per-task", type=int, default=10)
    d.add_argument("--no-baseline", action="store_true", help="skip the untrained-policy baseline")
    d.add_argument("--out", default="outputs/demo")
    d.add_argument("--graph", default=None,
                   help="run the closed loop through a node graph (e.g. ros/graphs/metaworld.yaml) instead")
    d.set_defaults(func=cmd_demo)

    from latentstack.launch_cli import add_launch_parser

    add_launch_parser(sub)

    from latentstack.steering.cli import add_steer_parser

    add_steer_parser(sub)

    from latentstack.quant.cli import add_quantize_parser

    add_quantize_parser(sub)
    from latentstack.policies.lerobot_act.cli import add_act_parser
    add_act_parser(sub)
    from latentstack.perception.lion.cli import add_lion_parser
    add_lion_parser(sub)

    from latentstack.koopman.cli import add_korr_parser

    add_korr_parser(sub)
    from latentstack.perception.stereo.cli import add_stereo_parser

    add_stereo_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
