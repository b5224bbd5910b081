"""Policy node with asynchronous chunk execution (parameter ``async_chunks``)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from latentstack import msgs
from latentstack.nodes import ParameterError
from latentstack.nodes.commands import ACTION_TYPE
from latentstack.nodes.policy_node import PolicyNodeCore, PolicyNodeParams
from latentstack.policies.async_chunks import ThreadedChunkExecutor
from latentstack.policies.vla import VLAPolicy
from latentstack.policies.vla.configuration_vla import get_vla_config
from latentstack.policies.vla.tokenizer import WordTokenizer
from latentstack.transport import DEFAULT, SENSOR_DATA, InProcTransport

JOINTS = ["hand_x", "hand_y", "hand_z", "gripper"]


def test_async_chunks_parameter_validated() -> None:
    with pytest.raises(ParameterError):
        PolicyNodeParams(async_chunks="sometimes")
    with pytest.raises(ParameterError):
        PolicyNodeParams(async_chunks="rtc", policy="ws://localhost:8000")


@pytest.mark.parametrize("agg", ["latest_only", "rtc"])
def test_node_publishes_every_step_with_threaded_chunks(agg: str) -> None:
    torch.set_num_threads(1)
    cfg = get_vla_config("vla_tiny", vocab=tuple(WordTokenizer.build(["do it"]).vocab))
    policy = VLAPolicy(cfg).eval()
    t = InProcTransport()
    node = PolicyNodeCore(t, PolicyNodeParams(async_chunks=agg), policy=policy)
    try:
        assert isinstance(node.policy, ThreadedChunkExecutor)
        img = t.create_publisher("/camera/image_raw", "sensor_msgs/msg/Image", SENSOR_DATA)
        js = t.create_publisher("/joint_states", "sensor_msgs/msg/JointState", SENSOR_DATA)
        actions: list[np.ndarray] = []
        t.create_subscription("/action", ACTION_TYPE, lambda m: actions.append(np.asarray(m.data)), DEFAULT)
        for k in range(20):
            stamp = k * 12_500_000
            img.publish(msgs.image_to_msg(np.full((32, 32, 3), 10 * k % 255, np.uint8), stamp=stamp))
            js.publish(msgs.joint_state(JOINTS, [0.01 * k, 0, 0, 0], stamp=stamp))
            for _ in range(3):
                t.spin_once()
        assert len(actions) == 20 and all(np.all(np.isfinite(a)) for a in actions)
        assert node.holds_published == 0
        # requests at 0 (blocking), 4, 8, ... each merged after a measured number of consumed actions
        assert len(node.policy.measured_delays) >= 4 and node.policy.measured_delays[0] == 0
    finally:
        node.close()
    assert node.policy._pool._shutdown
