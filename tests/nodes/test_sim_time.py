"""Issue 18 item 4: /clock from the simulators, use_sim_time in the node cores, the camera on /tf_static."""
from __future__ import annotations

import numpy as np
import pytest

from latentstack import msgs
from latentstack.nodes import Executor
from latentstack.nodes.policy_node import PolicyNodeCore, PolicyNodeParams
from latentstack.nodes.sim_bridge import Episode, SimBridgeCore, SimBridgeParams
from latentstack.sim.evaluation import evaluate
from latentstack.sim.suites import Suite, TaskSpec
from latentstack.transport import InProcTransport

SUITE = Suite(name="line", tasks=(TaskSpec("line-a", "go right", 8),),
              seeds={"train": range(10), "select": range(10, 20), "test": range(20, 40)}, image_size=8, camera="none")


def test_lockstep_graph_in_sim_time_equals_evaluate(line_env, noisy_policy, clock):
    n = 3
    ref = evaluate(SUITE, {"p": noisy_policy()}, episodes_per_task=n, progress=False, env_factory=line_env)["p"]
    t = InProcTransport(clock=clock)
    clocks = []
    t.create_subscription("/clock", "rosgraph_msgs/msg/Clock", lambda m: clocks.append(msgs.time_to_ns(m.clock)),
                          "clock")
    sim = SimBridgeCore(t, SimBridgeParams(image_size=8), env_factory=line_env,
                        episodes=[Episode("line-a", s, "go right", 8) for s in range(20, 20 + n)])
    node = PolicyNodeCore(t, PolicyNodeParams(wait_for_episode=True, use_sim_time=True, max_clock_skew_s=0.0),
                          policy=noisy_policy())
    assert node.now_ns() == 0  # no /clock yet
    ex = Executor([sim, node])
    sim.start()
    assert ex.spin_until(lambda: sim.finished, timeout=30)
    assert sim.results == ref.episodes
    # with zero allowed skew every observation passed the stamp check: the node's time was the sim's
    assert node.counters["future_stamp"] == 0 and node.counters["stale_observation"] == 0
    assert clocks[:3] == [0, 12_500_000, 25_000_000] and node.now_ns() == clocks[-1]
    assert node.counters["clock_jump_back"] == n - 1  # each episode restarts sim time at 0, like a sim reset


def test_sim_time_drives_the_watchdog_and_the_skew_check(fixed_policy):
    t = InProcTransport()
    node = PolicyNodeCore(t, PolicyNodeParams(use_sim_time=True, watchdog_timeout_s=0.25), policy=fixed_policy([0.1] * 4))
    clock = t.create_publisher("/clock", "rosgraph_msgs/msg/Clock", "clock")
    img = t.create_publisher("/camera/image_raw", "sensor_msgs/msg/Image", "sensor_data")
    holds = []
    t.create_subscription("/action", "latentstack_msgs/msg/ActionCommand", holds.append, "default")
    ex = Executor([node])

    def at(ns):
        clock.publish(msgs.new("rosgraph_msgs/msg/Clock", clock=msgs.ns_to_time(ns)))
        ex.spin_once()
        ex.spin_once()

    at(0)
    at(100_000_000)
    assert holds == []  # 0.1 s of sim time: no watchdog yet, however long the wall clock took
    at(400_000_000)
    assert len(holds) == 1 and holds[0].kind == 1 and msgs.stamp_ns(holds[0]) == 400_000_000
    img.publish(msgs.image_to_msg(np.zeros((4, 4, 3), np.uint8), stamp=400_000_000 + 2 * 10**9))
    ex.spin_once()
    assert node.counters["future_stamp"] == 1  # 2 s ahead of sim time > max_clock_skew_s


@pytest.mark.slow
def test_sim_bridge_publishes_the_camera_on_tf_static():
    pytest.importorskip("metaworld")
    from latentstack.sim.metaworld_env import MetaWorldLangEnv

    t = InProcTransport()
    tfs = []
    t.create_subscription("/tf_static", "tf2_msgs/msg/TFMessage", tfs.append, "transient_local")
    sim = SimBridgeCore(t, SimBridgeParams(image_size=32, camera="corner4"), env_factory=MetaWorldLangEnv,
                        episodes=[Episode("reach-v3", 1, "reach", 3)])
    sim.start()
    t.spin_once()
    (tf,) = tfs[0].transforms
    assert (tf.header.frame_id, tf.child_frame_id) == ("world", "camera")
    import mujoco
    from scipy.spatial.transform import Rotation

    cam = mujoco.mj_name2id(sim.env.model, mujoco.mjtObj.mjOBJ_CAMERA, "corner4")
    pos = np.array([tf.transform.translation.x, tf.transform.translation.y, tf.transform.translation.z])
    assert np.allclose(pos, sim.env.data.cam_xpos[cam])
    q = tf.transform.rotation
    R = Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix()
    xmat = sim.env.data.cam_xmat[cam].reshape(3, 3)
    assert np.allclose(R[:, 2], -xmat[:, 2], atol=1e-9)  # optical z = the direction MuJoCo's camera looks (-z)
    assert np.allclose(R[:, 1], -xmat[:, 1], atol=1e-9)  # optical y points down
    sim.close()


def test_sensors_publish_clock_and_their_frames():
    from latentstack.nodes.lidar_sensor import LidarSceneCore, LidarSceneParams
    from latentstack.nodes.stereo_sensor import StereoSceneCore, StereoSceneParams

    t = InProcTransport()
    got: dict[str, list] = {"/clock": [], "/tf_static": [], "/tf": [], "info": []}
    t.create_subscription("/clock", "rosgraph_msgs/msg/Clock", got["/clock"].append, "sensor_data")  # depth 5
    from latentstack.transport.qos import TRANSIENT_LOCAL

    # a tf listener keeps many latched samples (one per static broadcaster)
    t.create_subscription("/tf_static", "tf2_msgs/msg/TFMessage", got["/tf_static"].append,
                          TRANSIENT_LOCAL.with_depth(100))
    t.create_subscription("/tf", "tf2_msgs/msg/TFMessage", got["/tf"].append, "default")
    lidar = LidarSceneCore(t, LidarSceneParams(frames=1))
    stereo = StereoSceneCore(t, StereoSceneParams(frames=1, height=32, width=64))
    t.create_subscription(stereo.params.right_info_topic, "sensor_msgs/msg/CameraInfo", got["info"].append,
                          "sensor_data")
    lidar.start()
    stereo.start()
    for _ in range(3):
        t.spin_once()
    assert [msgs.time_to_ns(c.clock) for c in got["/clock"]] == [0, 0]  # frame 0 of each sensor, before the frame
    mounts = {(tf.header.frame_id, tf.child_frame_id) for m in got["/tf_static"] for tf in m.transforms}
    assert mounts == {("base_link", "lidar"), ("base_link", "stereo_left")}
    (rig,) = got["/tf"][0].transforms
    info = got["info"][0]
    assert (rig.header.frame_id, rig.child_frame_id) == ("stereo_left", "stereo_right")
    assert rig.transform.translation.x == pytest.approx(-info.p[3] / info.p[0])  # baseline = -P[3] / f
    lidar.close()
    stereo.close()
