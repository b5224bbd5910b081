"""COAST report payload (issue 5 schema) and paired statistics against the base condition.

``coast_payload(results, ...)`` returns::

    {"conditions": {name: {success, ci_low, ci_high, successes, episodes, per_task}},
     "n_tasks", "episodes_per_task", "gate_overhead_ratio",
     "paired": {name: {both, only_condition, only_base, neither, p_mcnemar_exact}}, ...meta}

``success`` / CIs are pooled over all episodes (Wilson 95 %); ``per_task`` holds the per-task blocks.
Pairing is by (task, seed); a condition that ran different episodes than base raises.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["coast_payload", "mcnemar_exact", "paired_counts"]


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts ``b``, ``c`` (binomial, p = 1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def paired_counts(base: Any, cond: Any) -> dict[str, Any]:
    """Concordance table of two ``ConditionResult``s over the same (task, seed) episodes."""
    a = {(e.task, e.seed): e.success for e in base.episodes}
    b = {(e.task, e.seed): e.success for e in cond.episodes}
    if a.keys() != b.keys():
        raise ValueError(f"conditions {base.name!r} and {cond.name!r} ran different episodes (not paired)")
    both = sum(a[k] and b[k] for k in a)
    only_c = sum(b[k] and not a[k] for k in a)
    only_b = sum(a[k] and not b[k] for k in a)
    return {"both": both, "only_condition": only_c, "only_base": only_b, "neither": len(a) - both - only_c - only_b,
            "difference": (only_c - only_b) / len(a) if a else 0.0, "p_mcnemar_exact": mcnemar_exact(only_c, only_b)}


def coast_payload(results: Mapping[str, Any], episodes_per_task: int, gate_overhead_ratio: float,
                  base: str = "base", **meta: Any) -> dict[str, Any]:
    if base not in results:
        raise KeyError(f"no {base!r} condition in {sorted(results)}")
    conditions = {}
    for name, r in results.items():
        s = r.summary()
        o = s["overall"]
        conditions[name] = {"success": o["success"], "ci_low": o["ci_low"], "ci_high": o["ci_high"],
                            "successes": o["successes"], "episodes": o["episodes"],
                            "mean_task_success": o["mean_task_success"], "per_task": s["per_task"]}
    tasks = {e.task for r in results.values() for e in r.episodes}
    paired = {n: paired_counts(results[base], r) for n, r in results.items() if n != base}
    return {**meta, "conditions": conditions, "n_tasks": len(tasks), "episodes_per_task": episodes_per_task,
            "gate_overhead_ratio": gate_overhead_ratio, "paired": paired}
