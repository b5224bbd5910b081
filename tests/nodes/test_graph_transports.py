"""The same node graph on the in-process bus and on Cyclone DDS (one process) gives identical outputs."""
from __future__ import annotations

import random

import pytest

from latentstack.nodes.sim_bridge import Episode
from latentstack.ros.graph import load_graph
from latentstack.ros.launcher import run_inprocess


@pytest.mark.dds
def test_inproc_and_dds_runs_are_identical(line_env, noisy_policy):
    pytest.importorskip("cyclonedds")
    plan = [Episode("line-a", s, "go right", 8) for s in range(20, 24)]
    spec = load_graph("ros/graphs/metaworld.yaml")
    runs = {}
    actions = {}
    for kind in ("inproc", "dds"):
        policy = noisy_policy()
        runs[kind] = run_inprocess(
            spec, transport=kind, domain_id=random.randint(1, 200), timeout=30,
            node_kwargs={"sim_bridge": {"env_factory": line_env, "episodes": plan},
                         "policy_node": {"policy": policy}},
        )
        actions[kind] = policy.calls
    assert runs["inproc"].finished and runs["dds"].finished
    assert runs["inproc"].results == runs["dds"].results
    assert actions["inproc"] == actions["dds"]
    assert 0 < sum(r.success for r in runs["dds"].results) < len(plan)


def test_free_running_graph_with_timer_policy_finishes(line_env, noisy_policy):
    """Real-time mode: sim at rate_hz with the newest action, policy on its own timer (watchdog on)."""
    spec = load_graph("ros/graphs/metaworld.yaml")
    spec.node("sim_bridge").params.update(lockstep=False, rate_hz=400.0, action_timeout_s=0.5)
    spec.node("policy_node").params.update(trigger="timer", control_rate_hz=400.0, watchdog_timeout_s=0.5)
    spec.validate()
    plan = [Episode("line-a", s, "go right", 20) for s in (20, 21)]
    run = run_inprocess(spec, timeout=30, node_kwargs={"sim_bridge": {"env_factory": line_env, "episodes": plan},
                                                        "policy_node": {"policy": noisy_policy()}})
    assert run.finished and [r.seed for r in run.results] == [20, 21]
    assert run.stats["policy_node"]["published"]["/action"] > 0
