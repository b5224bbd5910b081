"""Closed-loop evaluation harness: paired seeds, Wilson intervals, latency, JSON + PNG.

Every condition runs on exactly the same (task, seed) episodes, so conditions are paired.
Outcomes (success, episode length) are a deterministic function of the policy weights and
the seeds; latency is measured wall time and is reported apart from the outcome table.
"""
from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from latentstack.policies.protocol import Policy
from latentstack.stats import percentile_ms, wilson_interval

from .rollout import EpisodeResult, LatencyRecorder, RolloutHook, rollout
from .suites import Suite

__all__ = ["ConditionResult", "EpisodeResult", "evaluate", "evaluate_parallel", "latency_table", "outcome_table",
           "ray_actors", "ray_map", "ray_requested", "ray_session", "ray_worker_env", "run_episode", "write_report"]


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


def _shards(task_names: Sequence[str], seeds: Sequence[int], workers: int,
            chunk: int | None) -> list[tuple[str, list[int]]]:
    """(task, seed chunk) pairs in suite task order, then seed order: merging them in this order gives the
    in-process episode (and latency) order. Default chunk: about four shards per worker, so a slow task
    does not leave the other workers idle."""
    if chunk is None:
        chunk = max(1, -(-len(task_names) * len(seeds) // (4 * max(1, workers))))
    return [(t, list(seeds[i:i + chunk])) for t in task_names for i in range(0, len(seeds), chunk)]


class _ShardWorker:
    """Runs (task, seed chunk) shards with :func:`evaluate` on conditions built once (in a Ray actor).

    Returns JSON, so no pickled objects come back from a worker. Each episode is reseeded from its own seed
    (env reset and ``policy.reset(seed=...)``), so which worker runs which shard does not change outcomes."""

    def __init__(self, make_conditions: Callable[[], Mapping[str, Policy | PolicyFactory]],
                 env_factory: Callable[..., object] | None) -> None:
        conds = make_conditions()
        self.policies = {n: (c() if callable(c) and not hasattr(c, "select_action") else c) for n, c in conds.items()}
        self.env_factory = env_factory

    def __call__(self, suite: Suite, task: str, seeds: list[int], split: str) -> str:
        import dataclasses

        import torch

        # the split's seeds narrowed to this chunk (contiguous, so still a valid non-overlapping range)
        sub = dataclasses.replace(suite, tasks=(suite.task(task),),
                                  seeds={**suite.seeds, split: range(seeds[0], seeds[-1] + 1)})
        with torch.inference_mode():
            res = evaluate(sub, self.policies, len(seeds), split=split, progress=False, env_factory=self.env_factory)
        return json.dumps({n: {"episodes": [asdict(e) for e in r.episodes], "latencies_s": r.latencies_s}
                           for n, r in res.items()})


def ray_worker_env() -> dict[str, str]:
    """Environment of every Ray worker: MuJoCo's GL backend as the driver's, one BLAS/OpenMP thread."""
    import os

    return {"MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "PYOPENGL_PLATFORM": os.environ.get("PYOPENGL_PLATFORM", os.environ.get("MUJOCO_GL", "egl"))}


def ray_requested(workers: int, ray_address: str | None = None) -> bool:
    """Whether :func:`ray_map` runs on Ray: more than one worker, or a cluster address (argument or
    ``RAY_ADDRESS``). Otherwise callers run in-process, without importing Ray."""
    import os

    return workers > 1 or bool(ray_address or os.environ.get("RAY_ADDRESS"))


@contextlib.contextmanager
def ray_session(workers: int, ray_address: str | None = None) -> Iterator[None]:
    """Ray for the block: the cluster already initialised in this process, else ``ray_address``/``RAY_ADDRESS``,
    else a local one on this machine with ``workers`` CPUs; one this call started is shut down on exit. Wrap
    several :func:`ray_map` calls in one session to start the cluster once."""
    import os

    import ray

    address = ray_address or os.environ.get("RAY_ADDRESS") or None
    owns = not ray.is_initialized()
    if owns:
        kw = {"address": address} if address else {"num_cpus": max(1, workers)}
        ray.init(**kw, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield
    finally:
        if owns:
            ray.shutdown()


class _RayActor:
    """One Ray actor of :func:`ray_map`: builds its worker once (``make_worker()``), then runs jobs on it."""

    def __init__(self, make_worker: Callable[[], Callable[..., object]]) -> None:
        import torch

        torch.set_num_threads(1)  # one simulator per process: OpenMP threads only contend
        self.worker = make_worker()

    def run(self, index: int, args: tuple) -> tuple[int, object]:
        return index, self.worker(*args)

    def call(self, method: str, *args: object) -> object:
        """A method of a stateful worker (e.g. an env shard's ``step``) on this actor."""
        return getattr(self.worker, method)(*args)


def ray_actors(make_workers: Sequence[Callable[[], object]], gpus_per_worker: float = 0.0) -> list:
    """One actor per factory (each builds its worker once; :func:`ray_worker_env`, one torch thread): the actors
    of :func:`ray_map`, and stateful workers driven call by call (``actor.call.remote(method, *args)``).
    Inside a :func:`ray_session`; the caller kills them (``ray.kill``) when done."""
    import ray

    # worker env on the actors, so it holds on a cluster the caller initialised too
    actor_cls = ray.remote(num_cpus=1, num_gpus=gpus_per_worker,
                           runtime_env={"env_vars": ray_worker_env()})(_RayActor)
    return [actor_cls.remote(m) for m in make_workers]


def ray_map(make_worker: Callable[[], Callable[..., object]], jobs: Sequence[tuple], workers: int,
            ray_address: str | None = None, gpus_per_worker: float = 0.0,
            on_result: Callable[[int], None] | None = None) -> list:
    """``[make_worker()(*job) for job in jobs]``, with the jobs run as Ray tasks on ``workers`` actors.

    The one Ray mechanism of the project (evaluation sweeps, the COAST grid, KORR rollouts). The cluster: the
    one already initialised in this process, else ``ray_address``/``RAY_ADDRESS``, else a local one on this
    machine with ``workers`` CPUs (started here and shut down after). Ray workers are separate processes (never
    a fork of this one, which MuJoCo does not survive), with :func:`ray_worker_env` and one torch thread.
    ``make_worker`` must be picklable (a module-level callable or a ``functools.partial`` of one): each actor
    builds one worker and runs its share of the jobs on it. Results come back in job order (keep them plain
    data: JSON text, lists, numbers); ``on_result(i)`` is called as job ``i`` finishes (in any order).
    ``gpus_per_worker``: each actor's GPU share (Ray hides GPUs from actors that ask for none)."""
    import ray
    from ray.util import ActorPool

    outs: dict[int, object] = {}
    with ray_session(workers, ray_address):
        actors = ray_actors([make_worker] * max(1, min(workers, len(jobs))), gpus_per_worker)
        pool = ActorPool(actors)
        for i, job in enumerate(jobs):
            pool.submit(lambda a, v: a.run.remote(*v), (i, tuple(job)))
        while pool.has_next():
            i, out = pool.get_next_unordered()
            outs[i] = out
            if on_result is not None:
                on_result(i)
        for a in actors:
            ray.kill(a)
    return [outs[i] for i in range(len(jobs))]


def evaluate_parallel(
    suite: Suite,
    make_conditions: Callable[[], Mapping[str, Policy | PolicyFactory]],
    episodes_per_task: int,
    split: str = "test",
    workers: int = 1,
    ray_address: str | None = None,
    progress: bool = True,
    env_factory: Callable[..., object] | None = None,
    chunk: int | None = None,
    gpus_per_worker: float = 0.0,
) -> dict[str, ConditionResult]:
    """:func:`evaluate` with (task × seed chunk) shards run as Ray tasks on ``workers`` actors (:func:`ray_map`).

    ``workers <= 1`` and no address (argument or ``RAY_ADDRESS``): in-process, no Ray. Otherwise a Ray
    cluster: the one already initialised in this process, else ``ray_address``/``RAY_ADDRESS``, else a local
    one on this machine with ``workers`` CPUs (started here and shut down after). ``make_conditions`` must be
    picklable (a module-level function or a ``functools.partial`` of one): each actor builds its own policies
    once. Outcomes and their order equal the in-process run's (same seeds, same per-episode reseeding).
    ``gpus_per_worker``: each actor's GPU share (Ray hides GPUs from actors that ask for none)."""
    import functools

    if not ray_requested(workers, ray_address):
        return evaluate(suite, make_conditions(), episodes_per_task, split=split, progress=progress,
                        env_factory=env_factory)
    seeds = list(suite.seeds[split])[:episodes_per_task]
    if len(seeds) < episodes_per_task:
        raise ValueError(f"suite {suite.name!r} has only {len(seeds)} {split} seeds, asked {episodes_per_task}")
    shards = _shards(suite.task_names, seeds, workers, chunk)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(seeds) * len(suite.tasks), desc=f"eval (ray, {min(workers, len(shards))} workers, "
                   f"{split})", unit="ep", dynamic_ncols=True)
    try:
        texts = ray_map(functools.partial(_ShardWorker, make_conditions, env_factory),
                        [(suite, task, chunk_seeds, split) for task, chunk_seeds in shards], workers,
                        ray_address=ray_address, gpus_per_worker=gpus_per_worker,
                        on_result=(lambda i: bar.update(len(shards[i][1]))) if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    outs = [json.loads(t) for t in texts]
    results = {n: ConditionResult(n) for n in outs[0]}
    for out in outs:  # shard order = suite task order, then seed order: the in-process order
        for n, r in results.items():
            r.episodes.extend(EpisodeResult(**e) for e in out[n]["episodes"])
            r.latencies_s.extend(out[n]["latencies_s"])
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
