"""Recorder: rosbag2 directory with MCAP storage, read back with rosbags (and the mcap reader)."""
from __future__ import annotations

import numpy as np
import pytest

from latentstack import msgs
from latentstack.nodes import Executor
from latentstack.nodes.policy_node import PolicyNodeCore, PolicyNodeParams
from latentstack.nodes.recorder import RecorderCore, RecorderParams, read_bag
from latentstack.nodes.sim_bridge import Episode, SimBridgeCore, SimBridgeParams
from latentstack.transport import InProcTransport


def test_record_closed_loop_and_read_back(tmp_path, line_env, fixed_policy):
    bag = tmp_path / "bag"
    t = InProcTransport()
    rec = RecorderCore(t, RecorderParams(path=str(bag)))
    sim = SimBridgeCore(t, SimBridgeParams(image_size=8), env_factory=line_env,
                        episodes=[Episode("line-a", 5, "go right", 4), Episode("line-a", 6, "go right", 4)])
    PolicyNodeCore(t, PolicyNodeParams(wait_for_episode=True), policy=fixed_policy([0.1, 0, 0, 0.5]))
    ex = Executor([sim, rec])
    sim.start()
    ex.spin_until(lambda: sim.finished, timeout=10)
    ex.spin_once()
    rec.close()
    assert (bag / "metadata.yaml").is_file() and list(bag.glob("*.mcap"))

    from rosbags.rosbag2 import Reader

    with Reader(bag) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
        types = {c.topic: c.msgtype for c in reader.connections}
    assert counts["/camera/image_raw"] == 8 and counts["/joint_states"] == 8 and counts["/action"] == 8
    assert counts["/episode"] == 4 and counts["/instruction"] == 1  # start/end x 2, nothing overwritten
    assert types["/camera/image_raw"] == "sensor_msgs/msg/Image"
    images = [m for topic, _, m in read_bag(bag, ["/camera/image_raw"])]
    assert msgs.msg_to_image(images[0]).shape == (8, 8, 3)
    actions = [np.asarray(m.data) for _, _, m in read_bag(bag, ["/action"])]
    assert np.allclose(actions[0], [0.1, 0, 0, 0.5])

    from mcap.reader import make_reader

    with open(next(bag.glob("*.mcap")), "rb") as f:
        summary = make_reader(f).get_summary()
    schemas = {s.name: s.encoding for s in summary.schemas.values()}
    assert schemas["sensor_msgs/msg/Image"] == "ros2msg"


def test_recorder_refuses_to_overwrite(tmp_path):
    (tmp_path / "bag").mkdir()
    with pytest.raises(FileExistsError):
        RecorderCore(InProcTransport(), RecorderParams(path=str(tmp_path / "bag")))
    with pytest.raises(ValueError):
        RecorderParams(topics=("no_type_here",))
