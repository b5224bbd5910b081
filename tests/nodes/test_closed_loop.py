"""Closed loop through the node graph (MetaWorld + VLA) == evaluate() on the same seeds."""
from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
torch = pytest.importorskip("torch")
pytest.importorskip("metaworld")

from latentstack.ros.graph import load_graph
from latentstack.ros.launcher import run_inprocess
from latentstack.sim.evaluation import evaluate
from latentstack.sim.suites import TaskSpec, load_suite

TASKS = ["coffee-button-v3", "handle-press-v3"]
STEPS = 40


class TracePolicy:
    """Records what the policy saw (image/state digests) and did, so both paths can be compared step by step."""

    def __init__(self, inner):
        self.inner = inner
        self.trace = []

    def reset(self, seed=None):
        self.trace.append(("reset", seed))
        self.inner.reset(seed=seed)

    def select_action(self, obs):
        a = self.inner.select_action(obs)
        digest = hashlib.sha1(np.ascontiguousarray(obs["image"]).tobytes() + np.asarray(obs["state"]).tobytes())
        self.trace.append((digest.hexdigest(), obs["instruction"], np.asarray(a).tobytes()))
        return a

    def latent_sites(self):
        return self.inner.latent_sites()


@pytest.fixture(scope="module")
def tiny_vla():
    from latentstack.policies.vla import VLAPolicy, WordTokenizer, get_vla_config

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    suite = load_suite("metaworld_mt6")
    vocab = tuple(WordTokenizer.build([t.instruction for t in suite.tasks]).vocab)
    policy = VLAPolicy(get_vla_config("vla_tiny", vocab=vocab)).eval()
    yield policy
    torch.set_num_threads(n)


def test_node_graph_closed_loop_matches_evaluate(tiny_vla):
    spec = load_graph("ros/graphs/metaworld.yaml")
    spec.node("sim_bridge").params.update(tasks=TASKS, episodes_per_task=2, max_episode_steps=STEPS)
    spec.validate()
    graph_policy = TracePolicy(tiny_vla)
    run = run_inprocess(spec, node_kwargs={"policy_node": {"policy": graph_policy}}, timeout=120)
    assert run.finished and len(run.results) == 4

    suite = load_suite("metaworld_mt6")
    sub = dataclasses.replace(suite, tasks=tuple(TaskSpec(t, suite.task(t).instruction, STEPS) for t in TASKS))
    eval_policy = TracePolicy(tiny_vla)
    ref = evaluate(sub, {"vla": eval_policy}, episodes_per_task=2, progress=False)["vla"]

    assert run.results == ref.episodes  # same (task, seed, success, length), same order
    assert [(e.task, e.seed) for e in run.results] == [(t, s) for t in TASKS for s in (20000, 20001)]
    # stronger: identical observations (bytes) and actions at every step
    assert graph_policy.trace[0] == ("reset", 0)  # the node's start-up reset (parameter seed)
    assert graph_policy.trace[1:] == eval_policy.trace
    stats = run.stats
    assert stats["policy_node"]["counters"].get("invalid_message", 0) == 0
    assert stats["sim_bridge"]["counters"].get("unexpected_action", 0) == 0


@pytest.mark.slow
@pytest.mark.parametrize("artifact", ["policies/vla_metaworld_mt6", "policies/vla_metaworld_mt6_w4a8"])
def test_shipped_checkpoint_through_the_graph_matches_evaluate(artifact):
    """The trained policy (fp32, and the shipped W4A8 artifact) through the node graph."""
    from latentstack.nodes.policy_node import PolicyNodeParams, load_policy, resolve_policy_path

    path = resolve_policy_path(artifact)
    assert os.path.isdir(path), f"shipped artifact {artifact} missing"
    policy = load_policy(PolicyNodeParams(policy=path))
    tasks = ["button-press-topdown-v3", "coffee-button-v3"]
    spec = load_graph("ros/graphs/metaworld.yaml")
    spec.node("sim_bridge").params.update(tasks=tasks, episodes_per_task=2)
    spec.validate()
    run = run_inprocess(spec, node_kwargs={"policy_node": {"policy": policy}}, timeout=600)
    suite = load_suite("metaworld_mt6")
    sub = dataclasses.replace(suite, tasks=tuple(suite.task(t) for t in tasks))
    with torch.inference_mode():
        ref = evaluate(sub, {"vla": policy}, episodes_per_task=2, progress=False)["vla"]
    assert run.results == ref.episodes
    assert sum(e.success for e in run.results) > 0, "the trained policy should succeed somewhere"
