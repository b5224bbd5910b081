"""Issue 14 finding 2: stamped, sequenced commands; episode control only from the configured source.

The probe that found it: a participant outside the graph drove 86 of 601 sim steps and reset the
policy's episode seed with a fake episode event, and actions carried no stamp or sequence.
"""
from __future__ import annotations

import numpy as np
import pytest

from latentstack import msgs
from latentstack.nodes import EpisodeEvent, Executor, ParameterError, episode_event_msg
from latentstack.nodes.commands import (
    ACTION_TYPE,
    KIND_ACTION,
    KIND_WATCHDOG_HOLD,
    ActionCommand,
    CommandFilter,
    CommandSequencer,
    action_command_msg,
    decode_action_command,
)
from latentstack.nodes.policy_node import PolicyNodeCore, PolicyNodeParams
from latentstack.nodes.sim_bridge import Episode, SimBridgeCore, SimBridgeParams
from latentstack.sim.evaluation import evaluate
from latentstack.sim.suites import Suite, TaskSpec
from latentstack.transport import DEFAULT, SENSOR_DATA, InProcTransport, NodeId

SUITE = Suite(name="line", tasks=(TaskSpec("line-a", "go right", 8),),
              seeds={"train": range(10), "select": range(10, 20), "test": range(20, 40)}, image_size=8, camera="none")
S = 1_000_000_000


def cmd(seq, session=5, stamp=10 * S, kind=KIND_ACTION):
    return ActionCommand(np.zeros(4, np.float32), kind, stamp, session, seq)


def test_command_filter_refuses_replayed_out_of_order_foreign_stale_and_future():
    f = CommandFilter(max_age_s=0.25, max_future_s=0.0, session_timeout_s=1.0)
    assert f.check(cmd(1), now_ns=10 * S) is None
    assert f.check(cmd(1), now_ns=10 * S) == "replayed"
    assert f.check(cmd(3), now_ns=10 * S) is None  # gaps are fine (a lost message)
    assert f.check(cmd(2), now_ns=10 * S) == "out_of_order"
    assert f.check(cmd(1, session=9), now_ns=10 * S + S // 2) == "foreign_session"  # the first is alive
    assert f.check(cmd(4, stamp=9 * S), now_ns=10 * S) == "stale"  # 1 s old > 0.25 s
    assert f.check(cmd(5, stamp=11 * S), now_ns=10 * S) == "future"
    assert f.check(cmd(6, stamp=0, kind=KIND_WATCHDOG_HOLD), now_ns=10 * S) is None  # a hold is never stale
    assert f.check(cmd(7, stamp=8 * S), now_ns=10 * S, reference_stamp_ns=8 * S) is None  # sim-time reference
    # the pinned session fell silent for > session_timeout_s: a restarted publisher takes over
    assert f.check(cmd(1, session=9, stamp=12 * S), now_ns=12 * S) is None and f.session == 9
    assert f.check(cmd(8, session=5, stamp=12 * S), now_ns=12 * S) == "foreign_session"


def test_action_command_round_trip_and_malformed_commands():
    seq = CommandSequencer(session=77)
    m = msgs.decode(msgs.encode(action_command_msg(np.float32([0.1, 0.2, 0.3, 0.4]), KIND_ACTION, 12_500_000, seq,
                                                   "/policy_node")), ACTION_TYPE)
    c = decode_action_command(m, 4)
    assert (c.session, c.sequence, c.stamp_ns, c.kind, c.source) == (77, 1, 12_500_000, KIND_ACTION, "/policy_node")
    assert c.values.tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert action_command_msg(np.zeros(4), KIND_ACTION, 0, seq).sequence == 2
    for bad, match in [({"kind": 7}, "kind"), ({"data": np.zeros(3, np.float32)}, "3 values"),
                       ({"data": np.float32([np.nan, 0, 0, 0])}, "non-finite"), ({"sequence": 0}, "sequence")]:
        m2 = action_command_msg(np.zeros(4), KIND_ACTION, 0, CommandSequencer(3))
        for k, v in bad.items():
            setattr(m2, k, v)
        with pytest.raises(msgs.MessageValueError, match=match):
            decode_action_command(m2, 4)
    with pytest.raises(ValueError):
        CommandSequencer(session=0)


class Intruder:
    """A participant outside the graph: its own node name, or the policy node's name and a session of its own."""

    def __init__(self, t, sim, node):
        self.pub = t.create_publisher("/action", ACTION_TYPE, DEFAULT, node=NodeId(node))
        self.sim, self.seq = sim, CommandSequencer()

    def push(self):
        self.pub.publish(action_command_msg(np.float32([1.0, 0, 0, 1.0]), KIND_ACTION, self.sim.stamp(), self.seq))


@pytest.mark.parametrize("intruder_name", ["intruder", "policy_node"])
def test_an_intruder_cannot_drive_the_sim_and_outcomes_equal_evaluate(line_env, noisy_policy, intruder_name):
    n = 4
    ref = evaluate(SUITE, {"p": noisy_policy()}, episodes_per_task=n, progress=False, env_factory=line_env)["p"]
    t = InProcTransport()
    eps = [Episode("line-a", s, "go right", 8) for s in range(20, 20 + n)]
    sim = SimBridgeCore(t, SimBridgeParams(image_size=8), env_factory=line_env, episodes=eps)
    node = PolicyNodeCore(t, PolicyNodeParams(wait_for_episode=True), policy=noisy_policy())
    bad = Intruder(t, sim, intruder_name)
    ex = Executor([sim, node])
    sim.start()
    while not sim.finished:
        # before every delivery round, stamped with the awaited observation. An impostor using the policy
        # node's name starts once the policy's session is established: one that comes first takes the
        # session (identification is not authentication: README threat model; use guid: entries or SROS2)
        if intruder_name == "intruder" or sim._t > 0 or sim.results:
            bad.push()
        ex.spin_once()
    assert sim.results == ref.episodes  # not one step was driven by the intruder
    c = sim.counters
    if intruder_name == "intruder":  # not on the allow-list: refused before decoding
        sub = next(s for s in sim.subscriptions if s.topic == "/action")
        assert sub.refused_senders > 0 and c["command_foreign_session"] == 0
    else:  # claims the policy node's name: its second session is refused while the policy's is alive
        assert c["command_foreign_session"] > 0


def test_sim_bridge_refuses_replayed_stale_and_unlisted_commands(line_env):
    t = InProcTransport()
    sim = SimBridgeCore(t, SimBridgeParams(image_size=8), env_factory=line_env,
                        episodes=[Episode("line-a", 1, "go right", 50)])
    pol = t.create_publisher("/action", ACTION_TYPE, DEFAULT, node=NodeId("policy_node"))
    anon = t.create_publisher("/action", ACTION_TYPE, DEFAULT)  # no node at all
    seq = CommandSequencer()
    sim.start()
    first = msgs.encode(action_command_msg(np.float32([0.1, 0, 0, 0]), KIND_ACTION, sim.stamp(), seq))
    pol.publish_raw(first)
    t.spin_once()
    assert sim.env.t == 1
    pol.publish_raw(first)  # the same bytes again: a replay
    t.spin_once()
    assert sim.env.t == 1 and sim.counters["command_replayed"] == 1
    pol.publish(action_command_msg(np.float32([0.1, 0, 0, 0]), KIND_ACTION, 0, seq))  # answers step 0, not step 1
    t.spin_once()
    assert sim.env.t == 1 and sim.counters["command_stale"] == 1
    anon.publish(action_command_msg(np.float32([0.1, 0, 0, 0]), KIND_ACTION, sim.stamp(), seq))
    t.spin_once()
    assert sim.env.t == 1
    pol.publish(action_command_msg(np.float32([0.1, 0, 0, 0]), KIND_ACTION, sim.stamp(), seq))
    t.spin_once()
    assert sim.env.t == 2  # the graph keeps going
    with pytest.raises(ParameterError, match="action_publishers"):
        SimBridgeParams(action_publishers=("not a name!",))
    assert SimBridgeParams(action_publishers=("/robot1/policy_node", "guid:0110ab")).action_publishers


def test_free_running_sim_refuses_stale_answers(line_env, clock):
    t = InProcTransport(clock=clock)
    sim = SimBridgeCore(t, SimBridgeParams(image_size=8, lockstep=False, rate_hz=10.0, action_timeout_s=0.05),
                        env_factory=line_env, episodes=[Episode("line-a", 1, "go right", 50)])
    pol = t.create_publisher("/action", ACTION_TYPE, DEFAULT, node=NodeId("policy_node"))
    seq = CommandSequencer()
    ex = Executor([sim])
    sim.start()
    for _ in range(8):  # sim time moves 12.5 ms a step
        clock.advance(0.1)
        ex.spin_once()
    pol.publish(action_command_msg(np.float32([0.3, 0, 0, 0]), KIND_ACTION, 0, seq))  # answers the 100 ms old obs
    pol.publish(action_command_msg(np.float32([0.3, 0, 0, 0]), KIND_ACTION, sim.stamp() + S, seq))  # from the future
    ex.spin_once()
    assert sim.counters["command_stale"] == 1 and sim.counters["command_future"] == 1
    pol.publish(action_command_msg(np.float32([0.3, 0, 0, 0]), KIND_ACTION, sim.stamp(), seq))
    clock.advance(0.1)
    ex.spin_once()
    ex.spin_once()
    assert sim.env.actions[-1].tolist() == pytest.approx([0.3, 0, 0, 0])


class PolicyRig:
    def __init__(self, policy, **params):
        self.t = InProcTransport()
        self.node = PolicyNodeCore(self.t, PolicyNodeParams(**{"wait_for_episode": True, **params}), policy=policy)
        self.img = self.t.create_publisher("/camera/image_raw", "sensor_msgs/msg/Image", SENSOR_DATA)
        self.js = self.t.create_publisher("/joint_states", "sensor_msgs/msg/JointState", SENSOR_DATA)
        self.cmds = []
        self.t.create_subscription("/action", ACTION_TYPE, self.cmds.append, DEFAULT)

    def episode_pub(self, node):
        return self.t.create_publisher("/episode", "diagnostic_msgs/msg/DiagnosticStatus", "transient_local",
                                       node=NodeId(node) if node else None)

    def obs(self, stamp, size=4):
        self.img.publish(msgs.image_to_msg(np.full((size, size, 3), 10, np.uint8), stamp=stamp))
        self.js.publish(msgs.joint_state(["hand_x", "hand_y", "hand_z", "gripper"], [0, 0, 0, 0], stamp=stamp))
        self.spin()

    def spin(self):
        for _ in range(3):
            self.t.spin_once()


def test_episode_events_only_from_the_configured_source_and_never_replayed(fixed_policy):
    pol = fixed_policy([0.1, 0.2, 0.3, 0.4])
    r = PolicyRig(pol)
    fake, anon, real = r.episode_pub("intruder"), r.episode_pub(None), r.episode_pub("sim_bridge")
    fake.publish(episode_event_msg(EpisodeEvent("start", "t", 666, session=3, index=0)))
    anon.publish(episode_event_msg(EpisodeEvent("start", "t", 667)))
    r.spin()
    assert pol.resets == [0] and r.node.counters["episodes"] == 0  # only the start-up reset
    start = episode_event_msg(EpisodeEvent("start", "t", 7, session=11, index=0, source="/sim_bridge"))
    real.publish(start)
    r.spin()
    assert pol.resets == [0, 7]
    real.publish(start)  # replayed (same session, same index)
    r.spin()
    assert pol.resets == [0, 7] and r.node.counters["bad_episode"] == 1
    real.publish(episode_event_msg(EpisodeEvent("start", "t", 8, session=11, index=1)))
    real.publish(episode_event_msg(EpisodeEvent("start", "t", 9, session=12, index=0)))  # a restarted sim bridge
    r.spin()
    assert pol.resets == [0, 7, 8, 9]
    anyone = PolicyRig(fixed_policy([0.0] * 4), episode_publishers=())  # () = anyone, as before
    anyone.episode_pub(None).publish(episode_event_msg(EpisodeEvent("start", "t", 5)))
    anyone.spin()
    assert anyone.node.policy.resets == [0, 5]


def test_policy_node_commands_are_stamped_and_sequenced(fixed_policy, clock):
    r = PolicyRig(fixed_policy([0.1, 0.2, 0.3, 0.4]), wait_for_episode=False)
    r.obs(12_500_000)
    r.obs(25_000_000)
    answers = [decode_action_command(m, 4) for m in r.cmds]
    assert [(c.kind, c.stamp_ns, c.sequence) for c in answers] == [(KIND_ACTION, 12_500_000, 1),
                                                                    (KIND_ACTION, 25_000_000, 2)]
    assert answers[0].session == answers[1].session == r.node.sequencer.session and answers[0].source == "/policy_node"
    # a watchdog hold is stamped with the node clock and marked as a hold
    t = InProcTransport(clock=clock)
    node = PolicyNodeCore(t, PolicyNodeParams(), policy=fixed_policy([0.1, 0.2, 0.3, 0.4]))
    got = []
    t.create_subscription("/action", ACTION_TYPE, got.append, DEFAULT)
    clock.advance(0.5)
    Executor([node]).spin_once()
    t.spin_once()
    hold = decode_action_command(got[-1], 4)
    assert hold.is_hold and hold.stamp_ns == clock() and hold.sequence == 1


def test_policy_node_refuses_oversized_images_before_conversion(fixed_policy, monkeypatch):
    pol = fixed_policy([0.1, 0.2, 0.3, 0.4])
    r = PolicyRig(pol, wait_for_episode=False, max_image_width=64, max_image_height=64)
    converted = []
    real = msgs.msg_to_image
    monkeypatch.setattr(msgs, "msg_to_image", lambda m, **k: converted.append(m.width) or real(m, **k))
    r.obs(1, size=65)
    assert pol.obs == [] and converted == [] and r.node.counters["invalid_message"] == 1
    r.obs(2, size=64)
    assert len(pol.obs) == 1
    assert PolicyNodeParams().max_image_width == 1024  # the default cap: an 8000x8000 frame never reaches the VLA
    with pytest.raises(ParameterError, match="max_image"):
        PolicyNodeParams(max_image_width=0)
