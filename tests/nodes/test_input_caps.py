"""Issue 14 finding 6: perception inputs have documented caps, checked before any decoding or model call."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from latentstack import msgs
from latentstack.nodes import ParameterError, params_from_mapping
from latentstack.nodes.lidar_detection import LidarDetectionNodeCore, LidarDetectionParams
from latentstack.nodes.stereo_depth import StereoDepthNodeCore, StereoDepthParams
from latentstack.perception.stereo.configuration_stereo import StereoConfig
from latentstack.perception.stereo.model import SA2Tiny
from latentstack.transport import SENSOR_DATA, InProcTransport


class CountingStereo(torch.nn.Module):
    """A real (tiny) stereo model that counts its forward calls."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.inner = SA2Tiny(StereoConfig(hidden=16, feat_dim=16, fmap_dim=16, enc_channels=(8, 16, 16, 16)))
        self.calls = 0

    def forward(self, *a, **k):
        self.calls += 1
        return self.inner(*a, **k)


def _stereo(**params):
    model = CountingStereo()
    t = InProcTransport()
    node = StereoDepthNodeCore(t, StereoDepthParams(**{"iters": 1, "baseline_m": 0.3, **params}), model=model)
    pubs = {k: t.create_publisher(f"/{k}", typ, SENSOR_DATA) for k, typ in (
        ("left/image_rect", "sensor_msgs/msg/Image"), ("right/image_rect", "sensor_msgs/msg/Image"),
        ("left/camera_info", "sensor_msgs/msg/CameraInfo"))}
    out: list = []
    t.create_subscription("/depth", "sensor_msgs/msg/Image", out.append, SENSOR_DATA)
    pubs["left/camera_info"].publish(msgs.camera_info(64, 32, 40.0, 40.0, 32, 16))

    def pair(h: int, w: int, stamp: int, frame_id: str = "") -> None:
        img = np.zeros((h, w, 3), np.uint8)
        for side in ("left", "right"):
            pubs[f"{side}/image_rect"].publish(msgs.image_to_msg(img, stamp=stamp, frame_id=frame_id))
        t.spin_once()
        assert node.wait_idle(120.0)  # the model runs on the node's worker thread
        for _ in range(2):
            t.spin_once()

    return node, model, pair, out


def test_stereo_refuses_undersized_and_oversized_pairs_without_calling_the_model():
    node, model, pair, out = _stereo()
    pair(32, 16, 1)  # width 16: used to crash the model ("Output size is too small") with a traceback
    pair(8, 64, 2)  # below the height minimum
    pair(20, 1025, 3)  # wider than the default max_width 1024
    pair(1025, 32, 4)  # taller than the default max_height 1024
    assert model.calls == 0 and out == []
    c = node.stats()["counters"]
    assert c.get("callback_error", 0) == 0 and c.get("worker_error", 0) == 0 and c["invalid_message"] >= 4
    pair(32, 64, 5)  # a normal pair is still served
    assert model.calls == 1 and len(out) == 1


def test_stereo_caps_are_parameters():
    _node, model, pair, _out = _stereo(max_width=64, max_height=48)
    pair(32, 80, 1)
    assert model.calls == 0
    pair(48, 64, 2)
    assert model.calls == 1
    p = StereoDepthParams()
    assert (p.min_width, p.min_height, p.max_width, p.max_height) == (32, 16, 1024, 1024)
    with pytest.raises(ParameterError):
        params_from_mapping(StereoDepthParams, {"min_width": 16})  # below what the model supports
    with pytest.raises(ParameterError):
        params_from_mapping(StereoDepthParams, {"max_width": 20})  # max < min
    with pytest.raises(ParameterError):
        params_from_mapping(StereoDepthParams, {"max_string_length": 0})


def test_stereo_refuses_huge_frame_ids():
    node, model, pair, _out = _stereo()
    pair(32, 64, 1, frame_id="f" * 10_000)
    assert model.calls == 0 and node.counters["invalid_message"] >= 1


class Detector:
    def __init__(self) -> None:
        self.calls = 0

    def detect(self, clouds):
        self.calls += 1
        return [{"boxes": np.zeros((0, 7), np.float32), "scores": np.zeros(0, np.float32),
                 "labels": np.zeros(0, np.int64)} for _ in clouds]


def _lidar(monkeypatch, **params):
    decoded = []
    real = msgs.pointcloud2_to_numpy
    monkeypatch.setattr(msgs, "pointcloud2_to_numpy", lambda m: decoded.append(1) or real(m))
    det = Detector()
    t = InProcTransport()
    node = LidarDetectionNodeCore(t, LidarDetectionParams(**params), model=det)
    pub = t.create_publisher("/points", "sensor_msgs/msg/PointCloud2", SENSOR_DATA)

    def send(n: int, frame_id: str = "lidar", fields=("x", "y", "z")) -> None:
        arr = np.zeros(n, dtype=[(f, np.float32) for f in fields])
        pub.publish(msgs.pointcloud2_from_numpy(arr, frame_id=frame_id))
        t.spin_once()
        assert node.wait_idle(120.0)  # the detector runs on the node's worker thread

    return node, det, decoded, send


def test_lidar_point_cap_is_checked_before_decoding(monkeypatch):
    assert LidarDetectionParams().max_points == 300_000
    node, det, decoded, send = _lidar(monkeypatch)
    send(300_001)
    assert decoded == [] and det.calls == 0 and node.counters["invalid_message"] == 1
    send(1000)
    assert det.calls == 1


def test_lidar_refuses_long_strings_and_too_many_fields(monkeypatch):
    node, det, decoded, send = _lidar(monkeypatch)
    send(10, frame_id="f" * 10_000)
    send(10, fields=("x", "y", "z", *(f"f{i}" for i in range(100))))
    send(10, fields=("x", "y", "z", "i" * 1000))
    assert decoded == [] and det.calls == 0 and node.counters["invalid_message"] == 3
    with pytest.raises(ParameterError):
        params_from_mapping(LidarDetectionParams, {"max_string_length": 0})
