"""Issue 18 item 2: a policy node without rclpy is configured by a ROS 2 client over DDS.

The client (tests/transport/ros2_wire_client.py) is written from the wire spec with cyclonedds-python alone;
the policy node runs in another process with the shipped weak VLA and a COAST conceptor, and the test sees
its actions change when ``steering_beta`` is set through ``~/set_parameters``, and come back when it is reset.
"""
from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from latentstack import msgs
from latentstack.nodes import EpisodeEvent, episode_event_msg
from latentstack.nodes.commands import ACTION_TYPE, KIND_ACTION
from latentstack.transport import DEFAULT, SENSOR_DATA, NodeId, make_transport

pytestmark = pytest.mark.dds
ROOT = Path(__file__).resolve().parents[2]
WEAK = ROOT / "policies" / "vla_metaworld_mt6_weak"
ART = WEAK / "conceptors" / "all__expert.layer2__global__a10__paper"
sys.path.insert(0, str(ROOT / "tests" / "transport"))

NODE = """
import sys, time
from latentstack.nodes import Executor
from latentstack.nodes.policy_node import PolicyNodeCore, PolicyNodeParams
from latentstack.transport import make_transport
t = make_transport("dds", domain_id=int(sys.argv[1]), config="loopback")
node = PolicyNodeCore(t, PolicyNodeParams(policy=sys.argv[2], steering=sys.argv[3], steering_beta=0.0,
                                          wait_for_episode=True, watchdog_timeout_s=30.0))
print("ready", flush=True)
Executor([node]).spin_until(lambda: False, timeout=float(sys.argv[4]))
"""


def test_set_steering_beta_through_the_parameter_service_from_another_process():
    pytest.importorskip("cyclonedds")
    if not (ART / "config.json").exists():
        pytest.skip("shipped weak VLA / conceptor artifact not present")
    from cyclonedds.domain import DomainParticipant
    from ros2_wire_client import (
        GetParametersRequest,
        GetParametersResponse,
        Parameter,
        ParameterValue,
        ServiceClient,
        SetParametersRequest,
        SetParametersResponse,
    )

    domain = random.randint(1, 200)
    proc = subprocess.Popen([sys.executable, "-c", NODE, str(domain), str(WEAK), str(ART), "150"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t = make_transport("dds", domain_id=domain, config="loopback")
    dp = DomainParticipant(domain)
    try:
        sim = NodeId("sim_bridge")  # the policy node takes episode control from this name only
        img = t.create_publisher("/camera/image_raw", "sensor_msgs/msg/Image", SENSOR_DATA, node=sim)
        js = t.create_publisher("/joint_states", "sensor_msgs/msg/JointState", SENSOR_DATA, node=sim)
        ep = t.create_publisher("/episode", "diagnostic_msgs/msg/DiagnosticStatus", "transient_local", node=sim)
        events, answers = [], []
        t.create_subscription("/action", ACTION_TYPE, answers.append, DEFAULT)
        t.create_subscription("/parameter_events", "rcl_interfaces/msg/ParameterEvent", events.append, "parameters")
        setp = ServiceClient(dp, "/policy_node/set_parameters", SetParametersRequest, SetParametersResponse)
        getp = ServiceClient(dp, "/policy_node/get_parameters", GetParametersRequest, GetParametersResponse, guid=7)
        assert setp.wait_for_service(90) and getp.wait_for_service(30), proc.stderr.read() if proc.poll() else ""
        assert t.wait_for_matches(js, 1, timeout=30, poll=lambda: t.spin_once(0.01))
        image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)

        def act(index: int) -> np.ndarray:
            """Episode start (seed 3) then one observation: the policy's first action of the episode."""
            ep.publish(episode_event_msg(EpisodeEvent("start", "button-press-topdown-v3", 3,
                                                      "press the button from the top", index=index, session=5)))
            n = len(answers)
            time.sleep(0.3)
            img.publish(msgs.image_to_msg(image, "rgb8", stamp=12_500_000))
            js.publish(msgs.joint_state(["hand_x", "hand_y", "hand_z", "gripper"], [0.0, 0.6, 0.2, 1.0],
                                        stamp=12_500_000))
            end = time.monotonic() + 30
            while time.monotonic() < end:
                t.spin_once(0.05)
                got = [a for a in answers[n:] if a.kind == KIND_ACTION and msgs.stamp_ns(a) == 12_500_000]
                if got:
                    return np.asarray(got[0].data).copy()
            raise AssertionError("no answer from the policy node")

        def set_beta(beta: float):
            return setp.call(parameters=[Parameter("steering_beta", ParameterValue(type=3, double_value=beta))])

        a0 = act(0)
        assert set_beta(0.5).results[0].successful
        a_half = act(1)
        assert getp.call(names=["steering_beta"]).values[0].double_value == 0.5
        refused = set_beta(1.5).results[0]  # outside the conceptor gate's range: refused, nothing changes
        assert not refused.successful and refused.reason
        assert getp.call(names=["steering_beta"]).values[0].double_value == 0.5
        assert set_beta(0.0).results[0].successful
        a_back = act(2)
        assert not np.array_equal(a_half, a0)  # the steering took effect in the other process
        assert np.array_equal(a_back, a0)  # β = 0 again: bit-identical to the unsteered action
        for _ in range(20):
            t.spin_once(0.05)
        changed = [(p.name, p.value.double_value) for e in events for p in e.changed_parameters]
        assert changed == [("steering_beta", 0.5), ("steering_beta", 0.0)]
        assert all(e.node == "/policy_node" for e in events)
    finally:
        proc.kill()
        proc.wait(10)
        t.close()
        dp.__del__()
