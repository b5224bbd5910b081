"""The policy node with ``policy: ws://...`` (a policy served by ``lstack serve``) == the local policy in the
MetaWorld closed loop on the same seeds: same episode outcomes and the same actions at every step."""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
pytest.importorskip("metaworld")

from latentstack.ros.graph import load_graph
from latentstack.ros.launcher import run_inprocess
from latentstack.sim.evaluation import evaluate
from latentstack.sim.suites import TaskSpec, load_suite

TASK = "coffee-button-v3"
STEPS = 30


class ActionTrace:
    def __init__(self, inner):
        self.inner, self.actions = inner, []

    def reset(self, seed=None):
        self.inner.reset(seed=seed)

    def select_action(self, obs):
        a = self.inner.select_action(obs)
        self.actions.append(np.asarray(a).copy())
        return a

    def latent_sites(self):
        return self.inner.latent_sites()


def test_node_with_remote_policy_matches_local(serve, vla):
    from latentstack.nodes.policy_node import PolicyNodeParams, load_policy

    srv = serve()
    spec = load_graph("ros/graphs/metaworld.yaml")
    spec.node("sim_bridge").params.update(tasks=[TASK], episodes_per_task=2, max_episode_steps=STEPS)
    spec.validate()
    remote = load_policy(PolicyNodeParams(policy=f"ws://127.0.0.1:{srv.port}"))  # what the node builds
    assert type(remote).__name__ == "RemotePolicy"
    remote_trace = ActionTrace(remote)
    run = run_inprocess(spec, node_kwargs={"policy_node": {"policy": remote_trace}}, timeout=120)
    assert run.finished and len(run.results) == 2

    suite = load_suite("metaworld_mt6")
    sub = dataclasses.replace(suite, tasks=(TaskSpec(TASK, suite.task(TASK).instruction, STEPS),))
    local = ActionTrace(vla)
    ref = evaluate(sub, {"vla": local}, episodes_per_task=2, progress=False)["vla"]

    assert run.results == ref.episodes  # same (task, seed, success, length), same order
    assert len(remote_trace.actions) == len(local.actions) == 2 * STEPS
    assert all(np.array_equal(a, b) for a, b in zip(remote_trace.actions, local.actions))
    assert remote.requests == 2 * -(-STEPS // remote.n_action_steps)  # one request per chunk, not per step
    remote.close()

    # and the node building it from its own parameter (policy: ws://host:port), as a launch file would
    spec.node("policy_node").params.update(policy=f"ws://127.0.0.1:{srv.port}")
    run2 = run_inprocess(spec, timeout=120)
    assert run2.finished and run2.results == ref.episodes
