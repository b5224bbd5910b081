"""Policy node core: lockstep pairing, episode resets, watchdog hold, clamps, bad input, adapters."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from latentstack import msgs
from latentstack.nodes import EpisodeEvent, ParameterError, episode_event_msg, params_from_mapping
from latentstack.nodes.commands import ACTION_TYPE
from latentstack.nodes.policy_node import (
    POLICY_ADAPTERS,
    PolicyNodeCore,
    PolicyNodeParams,
    register_policy_adapter,
)
from latentstack.transport import DEFAULT, SENSOR_DATA, InProcTransport, NodeId

JOINTS = ["hand_x", "hand_y", "hand_z", "gripper"]


class Rig:
    """A policy node on an in-process bus, plus publishers standing in for the sim."""

    def __init__(self, policy, clock=None, **params):
        self.t = InProcTransport(clock=clock)
        self.node = PolicyNodeCore(self.t, PolicyNodeParams(**params), policy=policy)
        self.img = self.t.create_publisher("/camera/image_raw", "sensor_msgs/msg/Image", SENSOR_DATA)
        self.js = self.t.create_publisher("/joint_states", "sensor_msgs/msg/JointState", SENSOR_DATA)
        # episode events come from the node the policy node allows by default
        self.ep = self.t.create_publisher("/episode", "diagnostic_msgs/msg/DiagnosticStatus", "transient_local",
                                          node=NodeId("sim_bridge"))
        self.actions = []
        self.commands = []  # the raw ActionCommand messages
        self.t.create_subscription("/action", ACTION_TYPE, self._on_action, DEFAULT)

    def _on_action(self, m):
        self.commands.append(m)
        self.actions.append(np.asarray(m.data, np.float32).copy())

    def obs(self, stamp, x=0.0, value=10, gripper=0.0):
        self.img.publish(msgs.image_to_msg(np.full((4, 4, 3), value, np.uint8), stamp=stamp))
        self.js.publish(msgs.joint_state(JOINTS, [x, 0, 0, gripper], stamp=stamp))
        self.spin()

    def start(self, seed, task="t", instruction="do it"):
        self.ep.publish(episode_event_msg(EpisodeEvent("start", task, seed, instruction)))
        self.spin()

    def spin(self):
        for _ in range(3):
            self.t.spin_once()


def test_one_action_per_synchronized_observation(fixed_policy):
    pol = fixed_policy([0.1, 0.2, 0.3, 0.4])
    r = Rig(pol, wait_for_episode=True)
    r.obs(0)
    assert r.actions == []  # no episode yet
    r.start(7, instruction="close the drawer")
    assert len(r.actions) == 1 and pol.resets[-1] == 7  # the buffered first frame is answered after the reset
    assert pol.obs[0]["instruction"] == "close the drawer" and pol.obs[0]["state"].dtype == np.float32
    r.img.publish(msgs.image_to_msg(np.zeros((4, 4, 3), np.uint8), stamp=12_500_000))
    r.spin()
    assert len(r.actions) == 1  # image alone (state still at the old stamp): not a pair
    r.js.publish(msgs.joint_state(JOINTS, [0, 0, 0, 0], stamp=12_500_000))
    r.spin()
    assert len(r.actions) == 2
    r.obs(12_500_000)  # a re-sent observation (same stamp) is not answered twice
    assert len(r.actions) == 2
    r.obs(0)  # next episode's first frame before its start event: wait
    assert len(r.actions) == 2 and r.node.counters["waiting_for_episode"] >= 1
    r.start(8)
    assert len(r.actions) == 3 and pol.resets[-1] == 8
    assert np.allclose(r.actions[-1], [0.1, 0.2, 0.3, 0.4])


def test_clamps_and_non_finite_policy_output(fixed_policy):
    pol = fixed_policy([2.0, -3.0, 0.5, 7.0])
    r = Rig(pol, action_low=(-1.0,), action_high=(1.0, 1.0, 1.0, 0.8))
    r.obs(0)
    assert np.array_equal(r.actions[-1], np.float32([1.0, -1.0, 0.5, 0.8])) and r.node.counters["clamped"] == 1
    pol.action = np.array([np.nan, 0, 0, 0.3], np.float32)
    r.obs(1)
    # hold = last action with the motion dims zeroed, gripper kept
    assert np.array_equal(r.actions[-1], np.float32([0.0, 0.0, 0.0, 0.8]))
    assert r.node.counters["bad_policy_output"] == 1


def test_watchdog_holds_on_stale_or_missing_observations(fixed_policy, clock):
    pol = fixed_policy([0.5, 0.5, 0.5, -1.0])
    r = Rig(pol, clock=clock, trigger="timer", control_rate_hz=10.0, watchdog_timeout_s=0.25)
    from latentstack.nodes import Executor

    ex = Executor([r.node])
    clock.advance(0.1)
    ex.spin_once()
    r.spin()
    assert r.actions[-1].tolist() == [0, 0, 0, 0] and r.node.holds_published == 1  # nothing seen yet
    r.obs(0)
    clock.advance(0.1)
    ex.spin_once()
    r.spin()
    assert r.actions[-1].tolist() == [0.5, 0.5, 0.5, -1.0]
    clock.advance(0.3)  # observation now 0.3 s old > 0.25 s
    ex.spin_once()
    r.spin()
    assert r.actions[-1].tolist() == [0.0, 0.0, 0.0, -1.0] and r.node.counters["stale_observation"] == 2


def test_malformed_and_out_of_range_messages_are_logged_and_the_node_keeps_running(fixed_policy, caplog):
    pol = fixed_policy([0.1, 0.1, 0.1, 0.1])
    r = Rig(pol)
    with caplog.at_level(logging.WARNING):
        r.img.publish_raw(b"\x00\x01\x00\x00garbage!")  # undecodable bytes
        r.img.publish(msgs.new("sensor_msgs/msg/Image", height=4, width=4, encoding="rgb8", step=12,
                               data=np.zeros(5, np.uint8)))  # decodes, but data too short
        r.js.publish(msgs.joint_state(["a", "b"], [1.0, 2.0]))  # wrong joints
        r.js.publish(msgs.joint_state(JOINTS, [np.nan, 0, 0, 0]))  # NaN state
        r.ep.publish(msgs.new("diagnostic_msgs/msg/DiagnosticStatus", name="episode", message="explode"))
        r.spin()
    assert r.actions == []
    assert r.node.counters["invalid_message"] == 4
    assert r.node.stats()["subscriptions"]["/camera/image_raw"]["decode_errors"] == 1
    assert "ignored message on camera/image_raw" in caplog.text and "dropped malformed message" in caplog.text
    r.obs(5)  # still alive: the next good observation is answered
    assert len(r.actions) == 1


def test_parameters_are_validated():
    with pytest.raises(ParameterError, match="trigger"):
        PolicyNodeParams(trigger="sometimes")
    with pytest.raises(ParameterError, match="action_low"):
        PolicyNodeParams(action_low=(1.0,), action_high=(-1.0,))
    with pytest.raises(ParameterError, match="1 or action_dim"):
        PolicyNodeParams(action_low=(-1.0, -1.0))
    with pytest.raises(ParameterError, match="steering"):
        PolicyNodeParams(steering_beta=0.5)
    with pytest.raises(ParameterError, match="quantization"):
        PolicyNodeParams(quantization="int3")
    with pytest.raises(ParameterError, match="unknown parameter"):
        params_from_mapping(PolicyNodeParams, {"polcy": "x"})
    with pytest.raises(ParameterError, match="expected a number"):
        params_from_mapping(PolicyNodeParams, {"control_rate_hz": "fast"})
    p = params_from_mapping(PolicyNodeParams, {"action_low": -0.5, "wait_for_episode": "true", "seed": 3})
    assert p.action_low == (-0.5,) and p.wait_for_episode is True and p.seed == 3


def test_steering_quantization_residual_switches_need_their_adapters(fixed_policy, tmp_path):
    art = tmp_path / "conceptor.safetensors"
    art.write_bytes(b"")
    t = InProcTransport()
    with pytest.raises(FileNotFoundError):
        PolicyNodeCore(t, PolicyNodeParams(steering=str(tmp_path / "missing")), policy=fixed_policy([0, 0, 0, 0]))
    # steering is built in (COAST): a bare tensor file without its JSON card is refused by the loader
    with pytest.raises(FileNotFoundError):
        PolicyNodeCore(t, PolicyNodeParams(steering=str(art), steering_beta=0.3), policy=fixed_policy([0, 0, 0, 0]))
    with pytest.raises(NotImplementedError, match="quantization"):
        PolicyNodeCore(t, PolicyNodeParams(quantization="w8a8"), policy=fixed_policy([0, 0, 0, 0]))
    seen = []

    def fake_steering(policy, params):
        seen.append((params.steering, params.steering_beta))
        return policy

    register_policy_adapter("steering", fake_steering)
    try:
        node = PolicyNodeCore(InProcTransport(), PolicyNodeParams(steering=str(art), steering_beta=0.3),
                              policy=fixed_policy([0, 0, 0, 0]))
        assert seen == [(str(art), 0.3)] and node.policy is not None
    finally:
        POLICY_ADAPTERS.pop("steering", None)


# -- issue 14: the node always answers (action or hold), bounded clock skew, episode seeds -----------------
class RaisingPolicy:
    """Stands in for a VLA that raises on an input it cannot handle (e.g. a 0-width image)."""

    def __init__(self):
        self.calls = 0

    def reset(self, seed=None):
        if not isinstance(seed, int) or not 0 <= seed < 2**32:  # like legacy numpy seeding
            raise ValueError(f"bad seed {seed!r}")

    def select_action(self, obs):
        self.calls += 1
        raise RuntimeError("shape mismatch in the vision tower")

    def latent_sites(self):
        return {}


def _action_labels(r):
    labels = []
    r.t.create_subscription("/action", ACTION_TYPE,
                            lambda m: labels.append(("action", "watchdog_hold")[m.kind]), DEFAULT)
    return labels


def test_policy_error_publishes_hold_in_both_trigger_modes(fixed_policy, clock, caplog):
    from latentstack.nodes import Executor

    pol = RaisingPolicy()
    r = Rig(pol, clock=clock, trigger="timer", control_rate_hz=10.0, watchdog_timeout_s=1.0)
    ex = Executor([r.node])
    r.obs(0)
    with caplog.at_level(logging.WARNING):
        for _ in range(8):
            clock.advance(0.1)
            ex.spin_once()
            r.spin()
    assert pol.calls == 8 and len(r.actions) == 8  # one hold per tick, never silence
    assert all(a.tolist() == [0, 0, 0, 0] for a in r.actions)
    assert r.node.counters["policy_error"] == 8 and r.node.counters["timer_error"] == 0
    assert caplog.text.count("policy raised") == 1  # rate-limited: one line, counted
    pol2 = RaisingPolicy()
    r2 = Rig(pol2)  # lockstep: the observation is answered with the hold
    r2.obs(0)
    r2.obs(1)
    assert len(r2.actions) == 2 and r2.node.counters["callback_error"] == 0


def test_empty_images_are_refused(fixed_policy):
    pol = fixed_policy([0.1, 0.1, 0.1, 0.1])
    r = Rig(pol)
    for h, w in ((0, 0), (64, 0), (0, 64)):
        r.img.publish(msgs.new("sensor_msgs/msg/Image", height=h, width=w, encoding="rgb8", step=3 * w,
                               data=np.zeros(0, np.uint8), header=msgs.header(0)))
        r.js.publish(msgs.joint_state(JOINTS, [0, 0, 0, 0], stamp=0))
        r.spin()
    assert pol.obs == [] and r.node.counters["invalid_message"] == 3


def test_observation_mode_watchdog_holds_when_observations_stop(fixed_policy, clock):
    from latentstack.nodes import Executor

    pol = fixed_policy([0.5, 0.5, 0.5, -1.0])
    r = Rig(pol, clock=clock, watchdog_timeout_s=0.25)
    labels = _action_labels(r)
    ex = Executor([r.node])
    r.obs(0)
    assert r.actions[-1].tolist() == [0.5, 0.5, 0.5, -1.0]
    clock.advance(0.2)
    ex.spin_once()
    r.spin()
    assert len(r.actions) == 1  # within the timeout: nothing extra
    clock.advance(0.2)  # 0.4 s without an observation > 0.25 s
    ex.spin_once()
    r.spin()
    assert len(r.actions) == 2 and r.actions[-1].tolist() == [0.0, 0.0, 0.0, -1.0]
    assert labels[-1] == "watchdog_hold" and r.node.counters["stale_observation"] == 1
    r.obs(1)  # observations resume: answered again
    assert r.actions[-1].tolist() == [0.5, 0.5, 0.5, -1.0] and labels[-1] == "action"
    slow = type(pol)([0.5, 0.5, 0.5, -1.0])
    slow.select_action = lambda obs: (clock.advance(0.3), slow.action.copy())[1]  # 0.3 s > the timeout
    r2 = Rig(slow, clock=clock, watchdog_timeout_s=0.25)
    ex2 = Executor([r2.node])
    r2.obs(0)
    clock.advance(0.1)
    ex2.spin_once()
    r2.spin()
    assert len(r2.actions) == 1 and r2.node.holds_published == 0  # counted from the answer, not the input
    for k in range(4):  # observations keep coming but none can be answered (stamps went backwards): hold
        r2.obs(0)
        clock.advance(0.1)
        ex2.spin_once()
        r2.spin()
    assert r2.node.holds_published >= 1 and r2.actions[-1].tolist() == [0.0, 0.0, 0.0, -1.0]


def test_a_future_stamp_does_not_freeze_the_lockstep_policy(fixed_policy, clock, caplog):
    pol = fixed_policy([0.1, 0.1, 0.1, 0.1])
    r = Rig(pol, clock=clock)  # the node clock reads 1 s
    r.obs(0)
    assert len(r.actions) == 1
    year_2038 = 2_145_916_800 * 10**9
    with caplog.at_level(logging.WARNING):
        r.obs(year_2038)
        r.img.publish(msgs.image_to_msg(np.zeros((4, 4, 3), np.uint8), stamp=year_2038))  # image alone, too
        r.spin()
    assert len(r.actions) == 1 and r.node.counters["future_stamp"] == 3
    assert "clock skew" in caplog.text
    for k in range(1, 101):  # the next 100 normal observations are all answered
        r.obs(k * 1_000_000)
    assert len(r.actions) == 101
    r.obs(clock.t + 500_000_000)  # ahead of the node clock, but within max_clock_skew_s = 1 s: fine
    assert len(r.actions) == 102
    with pytest.raises(ParameterError, match="max_clock_skew_s"):
        PolicyNodeParams(max_clock_skew_s=-1.0)


def test_bad_episode_seeds_are_refused_and_the_node_keeps_going(fixed_policy, caplog):
    pol = fixed_policy([0.1, 0.1, 0.1, 0.1])
    r = Rig(pol, wait_for_episode=True)
    r.start(7)
    r.obs(0)
    assert pol.resets == [0, 7] and len(r.actions) == 1
    with caplog.at_level(logging.WARNING):
        for bad in (2**64, -1, "1.5", "seven"):
            r.ep.publish(msgs.new("diagnostic_msgs/msg/DiagnosticStatus", name="episode", message="start",
                                  values=msgs.kv_pairs({"task": "t", "seed": bad})))
        r.spin()
    assert pol.resets == [0, 7] and r.node.counters["invalid_message"] == 4  # refused: nothing reset
    assert r.node.counters["callback_error"] == 0 and "seed" in caplog.text
    r.obs(12_500_000)  # the episode goes on
    assert len(r.actions) == 2

    class NarrowSeeds(type(pol)):
        def reset(self, seed=None):
            if seed is not None and seed >= 2**32:  # e.g. legacy numpy seeding
                raise ValueError("Seed must be between 0 and 2**32 - 1")
            super().reset(seed)

    pol2 = NarrowSeeds([0.1, 0.1, 0.1, 0.1])
    r2 = Rig(pol2, wait_for_episode=True)
    r2.start(2**40)  # in the message range, but this policy's reset raises: refused with a log
    assert pol2.resets == [0] and r2.node.counters["bad_episode"] == 1 and r2.node.counters["callback_error"] == 0
    r2.start(3)
    r2.obs(0)
    assert pol2.resets == [0, 3] and len(r2.actions) == 1
    with pytest.raises(ParameterError, match="seed"):
        PolicyNodeParams(seed=2**64)


# -- issue 14, finding 9: run-time parameter changes are atomic ------------------------------------------
class FakeSteerable:
    """The steering adapter's contract (``set_steering`` validates, then swaps the gate), without a VLA."""

    def __init__(self, policy, params):
        self.policy, self.artifact_path, self.beta, self.fail = policy, params.steering, params.steering_beta, None

    def set_steering(self, artifact=None, beta=None):
        from pathlib import Path

        path = self.artifact_path if artifact is None else artifact
        b = self.beta if beta is None else float(beta)  # like the real adapter: '0.5' would pass here
        if self.fail is not None:
            raise self.fail
        if not 0.0 <= b <= 1.0:
            raise ValueError(f"steering_beta must be in [0, 1], got {b}")
        if path and not Path(path).exists():
            raise FileNotFoundError(path)
        self.artifact_path, self.beta = path, b

    def reset(self, seed=None):
        self.policy.reset(seed)

    def select_action(self, obs):
        return self.policy.select_action(obs)


def test_parameter_changes_are_atomic_and_exceptions_never_escape(fixed_policy, tmp_path):
    art = tmp_path / "conceptor"
    art.mkdir()
    register_policy_adapter("steering", FakeSteerable)
    try:
        node = PolicyNodeCore(InProcTransport(), PolicyNodeParams(steering=str(art)), policy=fixed_policy([0] * 4))
    finally:
        POLICY_ADAPTERS.pop("steering", None)

    def consistent():
        return (node.params.steering_beta == node.policy.beta and node.params.steering == node.policy.artifact_path
                and type(node.params.steering_beta) is float)

    ok, reason = node.on_set_parameters({"steering_beta": "0.5"})  # coerced like start-up values, or refused
    assert consistent() and (ok and node.params.steering_beta == 0.5 or not ok and node.params.steering_beta == 0.0)
    before = node.params
    for bad in ({"steering_beta": None}, {"steering_beta": float("nan")}, {"steering_beta": True},
                {"steering_beta": 0.2, "policy": "x"}, {"steering_beta": 0.3, "steering": str(tmp_path / "no")},
                {"steering": "", "steering_beta": 0.3}, {"steering_beta": 1.5}):
        ok, reason = node.on_set_parameters(bad)
        assert not ok and reason, bad
        assert node.params == before and consistent(), bad  # nothing changed
    node.policy.fail = RuntimeError("corrupt artifact")  # an unexpected exception from the adapter
    ok, reason = node.on_set_parameters({"steering_beta": 0.7})
    assert not ok and "corrupt artifact" in reason and node.params == before
    node.policy.fail = None
    ok, _ = node.on_set_parameters({"steering_beta": 0.7})
    assert ok and node.params.steering_beta == 0.7 and consistent()
