"""Asynchronous chunk execution on the shipped VLA in the MetaWorld closed loop (issue 19, deliverable 2).

    nice -n 5 .venv/bin/python benchmarks/async_chunks.py --episodes-per-task 6   # -> reports/async/
    nice -n 5 .venv/bin/python benchmarks/async_chunks.py --episodes-per-task 1 --out /tmp/async  # smoke

Conditions, all on the same (task, test seed) episodes of ``metaworld_mt6`` (paired), one policy model:

- ``sync`` — the policy's own ``select_action`` (inference takes no control time: the synchronous baseline);
- ``<preset>@d<d>`` — :class:`latentstack.policies.async_chunks.ChunkExecutor` with a simulated inference delay
  of ``d`` control steps (0, 2, 4) and the aggregation preset ``latest_only``, ``weighted_average``
  (0.3 old / 0.7 new) or ``rtc`` (prefix-inpainted sampling, delay estimated from consumed actions).

Success with Wilson 95% intervals (:mod:`latentstack.stats` through :func:`evaluate`), and the mean action jerk
(mean L2 norm of the third difference of the executed actions, per episode, averaged over episodes).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = "policies/vla_metaworld_mt6"
DELAYS = (0, 2, 4)


class ActionLog:
    """Policy wrapper that keeps each episode's executed actions (for the jerk metric)."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.episodes: list[list[np.ndarray]] = []

    def reset(self, seed: int | None = None) -> None:
        self.policy.reset(seed=seed)
        self.episodes.append([])

    def select_action(self, obs: Any) -> np.ndarray:
        a = self.policy.select_action(obs)
        self.episodes[-1].append(np.asarray(a, dtype=np.float32).copy())
        return a

    def latent_sites(self) -> Any:
        return self.policy.latent_sites()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes-per-task", type=int, default=6)
    ap.add_argument("--delays", type=int, nargs="+", default=list(DELAYS))
    ap.add_argument("--out", default="reports/async")
    args = ap.parse_args(argv)

    import torch

    from latentstack.policies.async_chunks import AGGREGATIONS, ChunkExecutor, VLAChunker, action_jerk
    from latentstack.policies.factory import make_policy
    from latentstack.sim.evaluation import evaluate, outcome_table
    from latentstack.sim.suites import load_suite

    torch.set_num_threads(1)
    suite = load_suite("metaworld_mt6")
    policy = make_policy(str(ROOT / SHIPPED))
    policy.eval()
    conditions: dict[str, ActionLog] = {"sync": ActionLog(policy)}
    for d in args.delays:
        for agg in AGGREGATIONS:
            conditions[f"{agg}@d{d}"] = ActionLog(ChunkExecutor(VLAChunker(policy), delay_steps=d, aggregate=agg))
    t0 = time.perf_counter()
    results = evaluate(suite, conditions, args.episodes_per_task, split="test", progress=False)
    wall = time.perf_counter() - t0

    out = ROOT / args.out if not Path(args.out).is_absolute() else Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cmd = "python benchmarks/async_chunks.py " + " ".join(argv if argv is not None else sys.argv[1:])
    rows = {}
    for name, r in results.items():
        s = r.summary()
        jerks = [action_jerk(np.stack(ep)) for ep in conditions[name].episodes if len(ep)]
        rows[name] = {**s["overall"], "per_task": s["per_task"], "mean_action_jerk": float(np.mean(jerks)),
                      "policy_calls": s["policy_calls"]}
    payload = {
        "meta": {"command": cmd.strip(), "policy": SHIPPED, "suite": suite.name, "split": "test",
                 "episodes_per_task": args.episodes_per_task, "seeds": list(suite.seeds["test"])[:args.episodes_per_task],
                 "delays": args.delays, "aggregations": list(AGGREGATIONS), "wall_s": round(wall, 1),
                 "torch_threads": 1},
        "conditions": rows,
        "episodes": {n: [{"task": e.task, "seed": e.seed, "success": e.success, "length": e.length}
                         for e in r.episodes] for n, r in results.items()},
    }
    (out / "async.json").write_text(json.dumps(payload, indent=2))
    _plot(rows, args.delays, out / "async.png")
    table = outcome_table(results)
    lines = [
        "# Asynchronous chunk execution (issue 19, deliverable 2)", "",
        f"Command: `{cmd.strip()}` ({wall / 60:.1f} min, 1 torch thread, shared 2-core CPU).", "",
        (f"Shipped `{SHIPPED}` (chunk 16, 8 steps executed per request), suite `{suite.name}`, "
         f"the first {args.episodes_per_task} test seeds of each of the {len(suite.tasks)} tasks "
         f"({args.episodes_per_task * len(suite.tasks)} episodes per condition, the same episodes for every "
         "condition). Inference delay simulated in control steps (deterministic)."), "",
        "| condition | success | Wilson 95% CI | mean length | mean action jerk |", "|---|---|---|---|---|",
    ]
    for n, row in rows.items():
        lines.append(f"| {n} | {row['successes']}/{row['episodes']} = {row['success']:.1%} | "
                     f"[{row['ci_low']:.2f}, {row['ci_high']:.2f}] | {row['mean_length']:.1f} | "
                     f"{row['mean_action_jerk']:.4f} |")
    lines += ["", "Per task:", "", "```", table, "```", ""]
    (out / "summary.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


def _plot(rows: dict[str, dict], delays: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from latentstack.policies.async_chunks import AGGREGATIONS

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    x = np.arange(len(delays))
    width = 0.8 / (len(AGGREGATIONS) + 1)
    series = [("sync", ["sync"] * len(delays))] + [(a, [f"{a}@d{d}" for d in delays]) for a in AGGREGATIONS]
    for i, (label, names) in enumerate(series):
        off = (i - len(AGGREGATIONS) / 2) * width
        y = np.array([rows[n]["success"] for n in names])
        err = np.array([[rows[n]["success"] - rows[n]["ci_low"] for n in names],
                        [rows[n]["ci_high"] - rows[n]["success"] for n in names]])
        axes[0].bar(x + off, y, width, yerr=err, capsize=3, label=label)
        axes[1].bar(x + off, [rows[n]["mean_action_jerk"] for n in names], width, label=label)
    for ax, yl in zip(axes, ("success (Wilson 95% CI)", "mean action jerk")):
        ax.set_xticks(x, [f"delay {d}" for d in delays])
        ax.set_ylabel(yl)
    axes[0].set_ylim(0, 1.05)
    axes[1].legend(fontsize=8)
    fig.suptitle("async chunk execution, VLA on metaworld_mt6 (sync repeated at every delay)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
