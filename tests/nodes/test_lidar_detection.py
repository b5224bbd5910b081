"""LiDAR detection node core: PointCloud2 in → Detection3DArray out, bad clouds dropped, params checked."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from latentstack import msgs
from latentstack.nodes import ParameterError, params_from_mapping
from latentstack.nodes.lidar_detection import LidarDetectionNodeCore, LidarDetectionParams
from latentstack.perception.lion import LionDetector, get_preset
from latentstack.sim.lidar_scenes import generate_scan
from latentstack.transport import DEFAULT, SENSOR_DATA, InProcTransport


class OracleDetector:
    """Returns a fixed set of boxes and records the clouds it saw."""

    def __init__(self) -> None:
        self.clouds: list[np.ndarray] = []

    def detect(self, clouds):
        self.clouds.extend(clouds)
        return [{"boxes": np.array([[10, 1, -1, 3.9, 1.6, 1.5, 0.3], [20, -2, -1, 0.8, 0.6, 1.7, -1.0]], np.float32),
                 "scores": np.array([0.9, 0.2], np.float32), "labels": np.array([0, 1])} for _ in clouds]


def _cloud_msg(points: np.ndarray, stamp: int = 5, fields=("x", "y", "z", "intensity")):
    arr = np.zeros(len(points), dtype=[(f, np.float32) for f in fields])
    for i, f in enumerate(fields):
        arr[f] = points[:, i]
    return msgs.pointcloud2_from_numpy(arr, stamp=stamp, frame_id="lidar")


def _rig(model, **params):
    t = InProcTransport()
    node = LidarDetectionNodeCore(t, LidarDetectionParams(**params), model=model)
    pub = t.create_publisher("/points", "sensor_msgs/msg/PointCloud2", SENSOR_DATA)
    out = []
    t.create_subscription("/detections", "vision_msgs/msg/Detection3DArray", out.append, DEFAULT)
    return t, node, pub, out


def _spin(t, node):
    """Delivers the clouds, waits for the node's worker (the detector runs there), delivers its detections."""
    t.spin_once()
    assert node.wait_idle(120.0)
    for _ in range(2):
        t.spin_once()


def test_cloud_in_detections_out_with_threshold_stamp_and_frame() -> None:
    det = OracleDetector()
    t, node, pub, out = _rig(det, score_threshold=0.5)
    scan = generate_scan(200_000)
    pub.publish(_cloud_msg(scan.points, stamp=123))
    _spin(t, node)
    assert len(out) == 1 and node.frames == 1
    np.testing.assert_array_equal(det.clouds[0], scan.points)
    d = msgs.detection3d_array_to_numpy(out[0])
    assert d["labels"] == ["Car"]
    np.testing.assert_allclose(d["boxes"][0], [10, 1, -1, 3.9, 1.6, 1.5, 0.3], atol=1e-6)
    assert msgs.stamp_ns(out[0]) == 123 and out[0].header.frame_id == "lidar"


def test_missing_intensity_is_zero_and_bad_clouds_are_dropped() -> None:
    det = OracleDetector()
    t, node, pub, out = _rig(det, max_points=1000)
    pts = np.random.default_rng(0).uniform(0, 10, (50, 3)).astype(np.float32)
    pub.publish(_cloud_msg(pts, fields=("x", "y", "z")))
    _spin(t, node)
    assert len(out) == 1 and (det.clouds[0][:, 3] == 0).all()
    pub.publish(_cloud_msg(pts[:, :2], fields=("x", "y")))  # no z
    bad = pts.copy()
    bad[3, 1] = np.nan
    pub.publish(_cloud_msg(bad, fields=("x", "y", "z")))
    pub.publish(_cloud_msg(np.zeros((2000, 3), np.float32), fields=("x", "y", "z")))  # too many points
    _spin(t, node)
    assert len(out) == 1 and node.counters["invalid_message"] == 3
    pub.publish(_cloud_msg(pts, fields=("x", "y", "z")))
    _spin(t, node)
    assert len(out) == 2  # still running


def test_runs_a_real_lion_detector() -> None:
    torch.manual_seed(0)
    model = LionDetector(get_preset("lion_tiny_identity", score_threshold=0.0, max_detections=7)).eval()
    t, node, pub, out = _rig(model, score_threshold=0.0)
    pub.publish(_cloud_msg(generate_scan(200_001).points))
    _spin(t, node)
    c = node.stats()["counters"]
    assert len(out) == 1 and c.get("callback_error", 0) == 0 and c.get("worker_error", 0) == 0
    d = msgs.detection3d_array_to_numpy(out[0])
    assert 1 <= len(d["labels"]) <= 7 and set(d["labels"]) <= {"Car", "Pedestrian", "Cyclist"}


def test_bad_parameters() -> None:
    with pytest.raises(ParameterError):
        params_from_mapping(LidarDetectionParams, {"score_threshold": 2.0})
    with pytest.raises(ParameterError):
        params_from_mapping(LidarDetectionParams, {"scoer_threshold": 0.1})


def test_vector_coordinate_fields_are_a_message_error_not_a_crash() -> None:
    """Issue 14 finding 7: ``x`` with count = 3 used to reach np.stack and raise a bare ValueError."""
    det = OracleDetector()
    t, node, pub, out = _rig(det)
    m = _cloud_msg(np.zeros((4, 3), np.float32), fields=("x", "y", "z"))
    m.fields[0].count = 3
    with pytest.raises(msgs.MessageValueError, match="count 1"):
        LidarDetectionNodeCore.cloud_array(msgs.decode(msgs.encode(m), "sensor_msgs/msg/PointCloud2"), 100)
    pub.publish(m)
    _spin(t, node)
    assert node.counters["invalid_message"] == 1 and node.counters["callback_error"] == 0 and out == []
