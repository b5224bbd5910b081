"""Closed-loop evaluation harness: paired seeds, Wilson intervals, latency, JSON + PNG.

Every condition runs on exactly the same (task, seed) episodes, so conditions are paired.
Outcomes (success, episode length) are a deterministic function of the policy weights and
the seeds; latency is measured wall time and is reported apart from the outcome table.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from latentstack.policies.protocol import Policy
from latentstack.stats import percentile_ms, wilson_interval

from .rollout import EpisodeResult, LatencyRecorder, RolloutHook, rollout
from .suites import Suite

__all__ = ["ConditionResult", "EpisodeResult", "evaluate", "evaluate_sharded", "latency_table", "outcome_table",
           "run_episode", "write_report"]


@dataclass
class ConditionResult:
    name: str
    episodes: list[EpisodeResult] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)

    def task_names(self) -> list[str]:
        return list(dict.fromkeys(e.task for e in self.episodes))

    def summary(self) -> dict:
        per_task = {}
        for task in self.task_names():
            eps = [e for e in self.episodes if e.task == task]
            per_task[task] = _success_block(eps)
        overall = _success_block(self.episodes)
        overall["mean_task_success"] = float(np.mean([v["success"] for v in per_task.values()])) if per_task else 0.0
        return {
            "overall": overall,
            "per_task": per_task,
            "latency_ms_p50": percentile_ms(self.latencies_s, 50),
            "latency_ms_p99": percentile_ms(self.latencies_s, 99),
            "policy_calls": len(self.latencies_s),
        }


def _success_block(eps: Sequence[EpisodeResult]) -> dict:
    n = len(eps)
    k = sum(e.success for e in eps)
    lo, hi = wilson_interval(k, n)
    lengths = [e.length for e in eps]
    return {
        "success": k / n if n else 0.0,
        "ci_low": lo,
        "ci_high": hi,
        "successes": k,
        "episodes": n,
        "mean_length": float(np.mean(lengths)) if lengths else 0.0,
    }


PolicyFactory = Callable[[], Policy]


def run_episode(env, policy: Policy, seed: int, latencies_s: list[float] | None = None,
                hooks: Sequence[RolloutHook] = ()) -> EpisodeResult:
    """One closed-loop episode; ``seed`` fixes both the initial state and the policy's noise.

    Runs :func:`latentstack.sim.rollout.rollout` (ends at success or truncation); ``latencies_s`` receives
    the wall time of each ``select_action`` call; ``hooks`` are more rollout hooks (e.g. tapping latents)."""
    all_hooks = [*hooks, *([LatencyRecorder(latencies_s)] if latencies_s is not None else [])]
    return rollout(env, policy.select_action, seed, reset=lambda s: policy.reset(seed=s), hooks=all_hooks)


def evaluate(
    suite: Suite,
    conditions: Mapping[str, Policy | PolicyFactory],
    episodes_per_task: int,
    split: str = "test",
    progress: bool | Callable[[str, str], None] = True,
    env_factory: Callable[..., object] | None = None,
) -> dict[str, ConditionResult]:
    """Runs every condition on the first ``episodes_per_task`` seeds of ``split`` for each task.

    ``progress``: True for a tqdm bar, or a callable ``(condition, task)`` called after each episode.
    """
    import torch

    from .metaworld_env import MetaWorldLangEnv

    make_env = env_factory or MetaWorldLangEnv
    seeds = list(suite.seeds[split])[:episodes_per_task]
    if len(seeds) < episodes_per_task:
        raise ValueError(f"suite {suite.name!r} has only {len(seeds)} {split} seeds, asked {episodes_per_task}")
    # One simulator in-process: one torch thread avoids OpenMP stalls and keeps runs repeatable.
    torch.set_num_threads(1)
    policies = {name: (c() if callable(c) and not hasattr(c, "select_action") else c) for name, c in conditions.items()}
    results = {name: ConditionResult(name) for name in policies}
    total = len(suite.tasks) * len(seeds) * len(policies)
    bar = None
    on_episode = progress if callable(progress) else None
    if progress is True:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="eval", unit="ep", dynamic_ncols=True)
    for spec in suite.tasks:
        env = make_env(
            spec.name,
            image_size=suite.image_size,
            camera=suite.camera,
            max_episode_steps=spec.max_episode_steps,
            instruction=spec.instruction,
        )
        try:
            for name, policy in policies.items():
                for seed in seeds:
                    ep = run_episode(env, policy, seed, results[name].latencies_s)
                    results[name].episodes.append(ep)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix_str(f"{name}/{spec.name}")
                    if on_episode is not None:
                        on_episode(name, spec.name)
        finally:
            env.close()
    if bar is not None:
        bar.close()
    return results


def _evaluate_shard(make_conditions: Callable[[], Mapping[str, Policy | PolicyFactory]], suite: Suite,
                    tasks: Sequence[str], episodes_per_task: int, split: str,
                    env_factory: Callable[..., object] | None, ticks: object | None = None) -> str:
    """One worker of :func:`evaluate_sharded`: its tasks, every condition; returns JSON (no pickled objects back)."""
    import dataclasses

    sub = dataclasses.replace(suite, tasks=tuple(suite.task(t) for t in tasks))
    report = (lambda name, task: ticks.put(1)) if ticks is not None else False  # type: ignore[attr-defined]
    res = evaluate(sub, make_conditions(), episodes_per_task, split=split, progress=report, env_factory=env_factory)
    return json.dumps({n: {"episodes": [asdict(e) for e in r.episodes], "latencies_s": r.latencies_s}
                       for n, r in res.items()})


def evaluate_sharded(
    suite: Suite,
    make_conditions: Callable[[], Mapping[str, Policy | PolicyFactory]],
    episodes_per_task: int,
    split: str = "test",
    workers: int = 2,
    progress: bool = True,
    env_factory: Callable[..., object] | None = None,
    n_conditions: int | None = None,
) -> dict[str, ConditionResult]:
    """:func:`evaluate` with the suite's tasks spread over ``workers`` spawned processes.

    ``make_conditions`` must be picklable by reference (a module-level function or a
    ``functools.partial`` of one with plain arguments): each worker builds its own policies.
    Outcomes equal the single-process run's (same seeds, same per-episode reseeding); results come
    back in suite task order. ``workers <= 1`` runs in-process. ``n_conditions`` sizes the progress bar.
    """
    if workers <= 1:
        return evaluate(suite, make_conditions(), episodes_per_task, split=split, progress=progress,
                        env_factory=env_factory)
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    names = list(suite.task_names)
    shards = [names[i::workers] for i in range(workers) if names[i::workers]]
    outs: dict[int, dict] = {}
    with mp.get_context("spawn").Manager() as manager, \
            ProcessPoolExecutor(len(shards), mp_context=mp.get_context("spawn")) as pool:
        ticks = manager.Queue() if progress else None
        futs = {pool.submit(_evaluate_shard, make_conditions, suite, shard, episodes_per_task, split, env_factory,
                            ticks): i for i, shard in enumerate(shards)}
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=episodes_per_task * len(names) * n_conditions if n_conditions else None,
                       desc=f"eval ({workers} workers, {split})", unit="ep", dynamic_ncols=True)
        pending = set(futs)
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for f in done:
                outs[futs[f]] = json.loads(f.result())
            if bar is not None:
                while not ticks.empty():  # type: ignore[union-attr]
                    ticks.get()  # type: ignore[union-attr]
                    bar.update(1)
        if bar is not None:
            bar.close()
    cond_names = list(outs[0])
    rank = {t: i for i, t in enumerate(names)}
    results = {n: ConditionResult(n) for n in cond_names}
    for n in cond_names:
        eps = [EpisodeResult(**e) for i in sorted(outs) for e in outs[i][n]["episodes"]]
        eps.sort(key=lambda e: rank.get(e.task, rank.get(f"{e.task}-v3", len(rank))))  # stable: seed order kept
        results[n].episodes.extend(eps)
        for i in sorted(outs):
            results[n].latencies_s.extend(outs[i][n]["latencies_s"])
    return results


def outcome_table(results: Mapping[str, ConditionResult]) -> str:
    """Success per task and condition (deterministic for fixed seeds and weights)."""
    names = list(results)
    tasks = results[names[0]].task_names()
    header = f"{'task':<24}" + "".join(f"{n:>28}" for n in names)
    lines = [header, "-" * len(header)]
    summaries = {n: results[n].summary() for n in names}
    for task in tasks + ["overall"]:
        cells = []
        for n in names:
            b = summaries[n]["overall"] if task == "overall" else summaries[n]["per_task"][task]
            cells.append(f"{b['successes']:>3}/{b['episodes']:<3} {b['success']:5.0%} [{b['ci_low']:.2f},{b['ci_high']:.2f}]")
        if task == "overall":
            lines.append("-" * len(header))
        lines.append(f"{task:<24}" + "".join(f"{c:>28}" for c in cells))
    lines.append(
        f"{'mean task success':<24}"
        + "".join(f"{summaries[n]['overall']['mean_task_success']:>28.1%}" for n in names)
    )
    lines.append(
        f"{'mean episode length':<24}" + "".join(f"{summaries[n]['overall']['mean_length']:>28.1f}" for n in names)
    )
    return "\n".join(lines)


def latency_table(results: Mapping[str, ConditionResult]) -> str:
    lines = [f"{'policy latency (ms)':<24}{'p50':>10}{'p99':>10}{'calls':>10}"]
    for n, r in results.items():
        s = r.summary()
        lines.append(f"{n:<24}{s['latency_ms_p50']:>10.2f}{s['latency_ms_p99']:>10.2f}{s['policy_calls']:>10}")
    return "\n".join(lines)


def write_report(
    results: Mapping[str, ConditionResult],
    out_dir: Path,
    meta: Mapping[str, object],
    stem: str = "eval",
) -> tuple[Path, Path]:
    """Writes ``<stem>.json`` (summaries + every episode) and ``<stem>.png`` (success with CIs)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "meta": dict(meta),
        "conditions": {n: r.summary() for n, r in results.items()},
        "episodes": {n: [asdict(e) for e in r.episodes] for n, r in results.items()},
    }
    json_path = out_dir / f"{stem}.json"
    json_path.write_text(json.dumps(payload, indent=2, sort_keys=False))
    png_path = out_dir / f"{stem}.png"
    plot_success(results, png_path, title=str(meta.get("title", stem)))
    return json_path, png_path


def plot_success(results: Mapping[str, ConditionResult], path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    tasks = results[names[0]].task_names() + ["overall"]
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(1.4 * len(tasks) + 2, 3.8))
    for i, n in enumerate(names):
        s = results[n].summary()
        blocks = [s["per_task"][t] for t in tasks[:-1]] + [s["overall"]]
        y = np.array([b["success"] for b in blocks])
        err = np.array([[b["success"] - b["ci_low"] for b in blocks], [b["ci_high"] - b["success"] for b in blocks]])
        x = np.arange(len(tasks)) + (i - (len(names) - 1) / 2) * width
        ax.bar(x, y, width, yerr=err, capsize=3, label=n)
    ax.set_xticks(np.arange(len(tasks)), tasks, rotation=25, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success (Wilson 95% CI)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
