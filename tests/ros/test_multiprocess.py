"""`lstack launch --multiprocess`: sim and policy in separate processes over Cyclone DDS (loopback)."""
from __future__ import annotations

import dataclasses
import os
import random

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")  # before anything imports mujoco

pytestmark = pytest.mark.dds


def test_multiprocess_dds_closed_loop_matches_evaluate():
    pytest.importorskip("cyclonedds")
    pytest.importorskip("metaworld")
    import torch

    from latentstack.policies.factory import make_policy
    from latentstack.ros.graph import load_graph
    from latentstack.ros.launcher import run_multiprocess
    from latentstack.sim.evaluation import evaluate
    from latentstack.sim.suites import TaskSpec, load_suite

    spec = load_graph("ros/graphs/metaworld.yaml")
    spec.node("sim_bridge").params.update(tasks=["coffee-button-v3"], episodes_per_task=2, max_episode_steps=10)
    spec.node("policy_node").params["policy"] = "vla_tiny"  # deterministic init: the same weights in every process
    spec.validate()
    run = run_multiprocess(spec, domain_id=random.randint(1, 200), timeout=120)
    assert run.finished and len(run.results) == 2

    suite = load_suite("metaworld_mt6")
    sub = dataclasses.replace(suite, tasks=(TaskSpec("coffee-button-v3", suite.task("coffee-button").instruction, 10),))
    n = torch.get_num_threads()
    try:
        ref = evaluate(sub, {"p": make_policy("vla_tiny")}, episodes_per_task=2, progress=False)["p"]
    finally:
        torch.set_num_threads(n)
    assert run.results == ref.episodes
    assert run.stats["sim_bridge"]["counters"].get("unexpected_action", 0) == 0


def test_a_dead_process_stops_the_run_instead_of_stalling_lockstep():
    pytest.importorskip("cyclonedds")
    from latentstack.ros.graph import load_graph
    from latentstack.ros.launcher import run_multiprocess

    spec = load_graph("ros/graphs/metaworld.yaml")
    spec.node("sim_bridge").params.update(tasks=["coffee-button-v3"], max_episode_steps=5)
    spec.node("policy_node").params["policy"] = "policies/no_such_checkpoint"
    spec.validate()
    with pytest.raises(RuntimeError, match="exited early"):
        run_multiprocess(spec, domain_id=random.randint(1, 200), timeout=60)
