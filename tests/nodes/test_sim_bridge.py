"""Sim bridge core on a tiny env: lockstep closed loop == evaluate, bad actions, republish, free-running."""
from __future__ import annotations

import numpy as np
import pytest

from latentstack import msgs
from latentstack.nodes import Executor, ParameterError, decode_episode_event
from latentstack.nodes.commands import (
    ACTION_TYPE,
    KIND_ACTION,
    KIND_WATCHDOG_HOLD,
    CommandSequencer,
    action_command_msg,
)
from latentstack.nodes.policy_node import PolicyNodeCore, PolicyNodeParams
from latentstack.nodes.sim_bridge import Episode, SimBridgeCore, SimBridgeParams
from latentstack.sim.evaluation import evaluate
from latentstack.sim.suites import Suite, TaskSpec
from latentstack.transport import DEFAULT, InProcTransport, NodeId

SUITE = Suite(
    name="line",
    tasks=(TaskSpec("line-a", "go right", 8), TaskSpec("line-b", "go further right", 6)),
    seeds={"train": range(10), "select": range(10, 20), "test": range(20, 40)},
    image_size=8,
    camera="none",
)


def plan(n):
    return [Episode(t.name, s, t.instruction, t.max_episode_steps) for t in SUITE.tasks for s in range(20, 20 + n)]


def test_lockstep_closed_loop_equals_evaluate(line_env, noisy_policy):
    n = 6
    ref = evaluate(SUITE, {"p": noisy_policy()}, episodes_per_task=n, progress=False, env_factory=line_env)["p"]
    t = InProcTransport()
    sim = SimBridgeCore(t, SimBridgeParams(image_size=8), env_factory=line_env, episodes=plan(n))
    pol = noisy_policy()
    node = PolicyNodeCore(t, PolicyNodeParams(wait_for_episode=True), policy=pol)
    ex = Executor([sim, node])
    sim.start()
    assert ex.spin_until(lambda: sim.finished, timeout=30)
    assert sim.results == ref.episodes
    assert 0 < sum(e.success for e in sim.results) < len(sim.results)  # both outcomes occur
    assert {instr for _, instr in pol.calls} == {"go right", "go further right"}
    assert sim.counters["unexpected_action"] == 0 and node.counters["invalid_message"] == 0
    assert sim.env is None  # closed after the last episode


def test_episode_events_and_observation_topics(line_env, fixed_policy):
    t = InProcTransport()
    events, infos, states = [], [], []
    t.create_subscription("/episode", "diagnostic_msgs/msg/DiagnosticStatus",
                          lambda m: events.append(decode_episode_event(m)), "transient_local")
    t.create_subscription("/camera/camera_info", "sensor_msgs/msg/CameraInfo", infos.append, "sensor_data")
    t.create_subscription("/joint_states", "sensor_msgs/msg/JointState", states.append, "sensor_data")
    sim = SimBridgeCore(t, SimBridgeParams(image_size=8), env_factory=line_env,
                        episodes=[Episode("line-a", 3, "go right", 3)])
    PolicyNodeCore(t, PolicyNodeParams(), policy=fixed_policy([0.0, 0, 0, 0]))
    ex = Executor([sim])
    sim.start()
    ex.spin_until(lambda: sim.finished, timeout=5)
    ex.spin_once()
    assert [e.event for e in events] == ["start", "end"]
    assert events[0].seed == 3 and events[0].task == "line-a" and events[0].instruction == "go right"
    assert events[1].length == 3 and events[1].success is False
    assert [msgs.stamp_ns(s) for s in states] == [0, 12_500_000, 25_000_000]
    assert list(states[0].name) == ["hand_x", "hand_y", "hand_z", "gripper"]
    assert infos[0].width == 8 and infos[0].header.frame_id == "camera"


class Commander:
    """Stands in for the policy node: sequenced ActionCommands stamped with the sim's current observation."""

    def __init__(self, t, sim, node="policy_node", session=None):
        self.pub = t.create_publisher("/action", ACTION_TYPE, DEFAULT, node=NodeId(node) if node else None)
        self.sim, self.seq = sim, CommandSequencer(session)

    def publish(self, values, kind=KIND_ACTION, stamp=None):
        self.pub.publish(self.msg(values, kind, stamp))

    def msg(self, values, kind=KIND_ACTION, stamp=None):
        return action_command_msg(np.asarray(values, np.float32), kind, self.sim.stamp() if stamp is None else stamp,
                                  self.seq)

    def publish_raw(self, data):
        self.pub.publish_raw(data)


def make_sim(line_env, clock=None, **params):
    t = InProcTransport(clock=clock)
    sim = SimBridgeCore(t, SimBridgeParams(image_size=8, **params), env_factory=line_env,
                        episodes=[Episode("line-a", 1, "go right", 50)])
    return t, sim, Commander(t, sim)


def test_bad_actions_are_logged_and_ignored(line_env, caplog):
    t, sim, act = make_sim(line_env)
    sim.start()
    act.publish([0.1, 0.0])  # wrong length
    act.publish([np.nan, 0, 0, 0])  # NaN
    act.publish_raw(b"\x00\x01\x00\x00\x01")  # undecodable
    t.spin_once()
    assert sim.env.t == 0 and sim.counters["invalid_message"] == 2
    act.publish([5.0, 0, 0, -9.0])  # out of range: clamped, applied
    t.spin_once()
    assert sim.env.t == 1 and sim.env.actions[-1].tolist() == [1.0, 0.0, 0.0, -1.0]
    assert sim.counters["action_clamped"] == 1
    assert "ignored message on action" in caplog.text


def test_lockstep_republishes_until_an_action_arrives(line_env, clock):
    t, sim, _ = make_sim(line_env, clock=clock, republish_s=0.5)
    got = []
    t.create_subscription("/joint_states", "sensor_msgs/msg/JointState", got.append, "sensor_data")
    ex = Executor([sim])
    sim.start()
    ex.spin_once()
    clock.advance(0.6)
    ex.spin_once()
    ex.spin_once()
    assert len(got) == 2 and msgs.stamp_ns(got[0]) == msgs.stamp_ns(got[1]) == 0
    assert sim.counters["republished"] == 1


def test_free_running_holds_without_fresh_actions(line_env, clock):
    _, sim, act = make_sim(line_env, clock=clock, lockstep=False, rate_hz=10.0, action_timeout_s=0.15)
    ex = Executor([sim])
    sim.start()
    clock.advance(0.1)
    ex.spin_once()
    assert sim.env.t == 1 and sim.env.actions[-1].tolist() == [0, 0, 0, 0]  # no action yet: hold
    act.publish([0.2, 0, 0, 0.7])
    clock.advance(0.1)
    ex.spin_once()
    ex.spin_once()
    clock.advance(0.1)
    ex.spin_once()
    assert sim.env.actions[-1].tolist() == pytest.approx([0.2, 0, 0, 0.7])
    clock.advance(0.2)  # the action is now 0.3 s old > 0.15 s: zero motion, gripper kept
    ex.spin_once()
    assert sim.env.actions[-1].tolist() == pytest.approx([0, 0, 0, 0.7]) and sim.counters["hold_steps"] >= 2


def test_params_validation():
    with pytest.raises(ParameterError, match="split"):
        SimBridgeParams(split="val")
    with pytest.raises(ParameterError, match="rate_hz"):
        SimBridgeParams(rate_hz=0)
    with pytest.raises(ParameterError, match="duplicate"):
        SimBridgeParams(tasks=("a", "a"))


def test_lockstep_ignores_watchdog_holds_but_free_running_applies_them(line_env, clock):
    """A watchdog hold is not the answer to the current observation: a lockstep sim waits for the answer."""
    t, sim, act = make_sim(line_env)
    sim.start()
    act.publish([0, 0, 0, 0.5], KIND_WATCHDOG_HOLD)
    t.spin_once()
    assert sim.env.t == 0 and sim.counters["watchdog_hold_ignored"] == 1
    act.publish([0.2, 0, 0, 0.5], KIND_ACTION)
    t.spin_once()
    assert sim.env.t == 1
    _, free, act2 = make_sim(line_env, clock=clock, lockstep=False, rate_hz=10.0)
    ex = Executor([free])
    free.start()
    act2.publish([0.0, 0, 0, 0.7], KIND_WATCHDOG_HOLD, stamp=10**18)  # a hold is never stale or early
    clock.advance(0.1)
    ex.spin_once()
    ex.spin_once()
    assert free.env.actions[-1].tolist() == pytest.approx([0, 0, 0, 0.7])  # a robot applies the hold


def test_bad_episode_seeds_are_refused_and_the_run_goes_on(line_env, caplog):
    class PickyEnv(line_env):
        def reset(self, seed=None):
            if seed == 13:
                raise RuntimeError("env cannot reset with this seed")
            return super().reset(seed)

    t = InProcTransport()
    events = []
    t.create_subscription("/episode", "diagnostic_msgs/msg/DiagnosticStatus",
                          lambda m: events.append(decode_episode_event(m)), "transient_local")
    eps = [Episode("line-a", s, "go right", 2) for s in (2**64, -1, 13, 5)]
    sim = SimBridgeCore(t, SimBridgeParams(image_size=8), env_factory=PickyEnv, episodes=eps)
    act = Commander(t, sim)
    sim.start()  # must not raise
    for _ in range(2):
        act.publish([0.1, 0, 0, 0])
        t.spin_once()
    assert sim.finished and [r.seed for r in sim.results] == [5]
    assert sim.counters["episodes_refused"] == 3 and "seed" in caplog.text
    t.spin_once()  # deliver the end event
    assert [(e.event, e.seed) for e in events] == [("start", 5), ("end", 5)]
    with pytest.raises(ParameterError, match="seed"):
        SimBridgeParams(seeds=(2**64,))
    with pytest.raises(ParameterError, match="seed"):
        SimBridgeParams(seeds=(-3,))
