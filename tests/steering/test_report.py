from __future__ import annotations

import pytest

from latentstack.sim.evaluation import ConditionResult, EpisodeResult
from latentstack.steering.report import coast_payload, mcnemar_exact, paired_counts


def cond(name, outcomes, tasks=("a", "b")):
    r = ConditionResult(name)
    for t in tasks:
        for seed, ok in enumerate(outcomes):
            r.episodes.append(EpisodeResult(t, seed, ok, 10))
    return r


def test_mcnemar_exact():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 0) == pytest.approx(2 / 32)
    assert mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(10, 1) == pytest.approx(2 * 12 / 2**11)


def test_payload_schema_and_pairing():
    base, steer = cond("base", [1, 0, 0, 1]), cond("coast", [1, 1, 0, 0])
    res = {"base": base, "coast": steer, "shrinkage": cond("shrinkage", [0, 0, 0, 0])}
    p = coast_payload(res, 4, 1.01, preset="paper")
    assert p["n_tasks"] == 2 and p["episodes_per_task"] == 4 and p["gate_overhead_ratio"] == 1.01
    assert p["preset"] == "paper"
    c = p["conditions"]["coast"]
    assert set(c) >= {"success", "ci_low", "ci_high", "per_task"} and c["success"] == 0.5
    assert c["ci_low"] < 0.5 < c["ci_high"] and set(c["per_task"]) == {"a", "b"}
    pc = p["paired"]["coast"]
    assert (pc["both"], pc["only_condition"], pc["only_base"], pc["neither"]) == (2, 2, 2, 2)
    assert p["paired"]["shrinkage"]["only_base"] == 4
    with pytest.raises(ValueError):
        paired_counts(base, cond("x", [1, 0, 0, 1], tasks=("a",)))
