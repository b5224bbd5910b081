"""Stereo depth node core: pairing by stamp, camera-info baseline, outputs, bad input keeps the node alive."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from latentstack import msgs
from latentstack.nodes import ParameterError, params_from_mapping
from latentstack.nodes.stereo_depth import DISPARITY_TYPE, StereoDepthNodeCore, StereoDepthParams
from latentstack.perception.stereo.configuration_stereo import StereoConfig
from latentstack.perception.stereo.model import SA2Tiny
from latentstack.transport import SENSOR_DATA, InProcTransport

H, W, F, B = 30, 60, 40.0, 0.3  # not multiples of 16: the node pads and crops


class Rig:
    def __init__(self, **params):
        torch.manual_seed(0)
        model = SA2Tiny(StereoConfig(hidden=16, feat_dim=16, fmap_dim=16, enc_channels=(8, 16, 16, 16)))
        self.t = InProcTransport()
        self.node = StereoDepthNodeCore(self.t, StereoDepthParams(**{"iters": 2, **params}), model=model)
        pub = lambda topic, typ: self.t.create_publisher(topic, typ, SENSOR_DATA)
        self.left = pub("/left/image_rect", "sensor_msgs/msg/Image")
        self.right = pub("/right/image_rect", "sensor_msgs/msg/Image")
        self.linfo = pub("/left/camera_info", "sensor_msgs/msg/CameraInfo")
        self.rinfo = pub("/right/camera_info", "sensor_msgs/msg/CameraInfo")
        self.depth, self.disp = [], []
        self.t.create_subscription("/depth", "sensor_msgs/msg/Image", self.depth.append, SENSOR_DATA)
        self.t.create_subscription("/disparity", DISPARITY_TYPE, self.disp.append, SENSOR_DATA)

    def info(self):
        self.linfo.publish(msgs.camera_info(W, H, F, F, W / 2, H / 2))
        right = msgs.camera_info(W, H, F, F, W / 2, H / 2)
        right.p[3] = -F * B  # ROS stereo convention: P[0,3] = −f·B
        self.rinfo.publish(right)
        self.spin()

    def pair(self, stamp, stamp_r=None, shape=(H, W, 3)):
        rng = np.random.default_rng(stamp)
        self.left.publish(msgs.image_to_msg(rng.integers(0, 255, shape, dtype=np.uint8), stamp=stamp))
        self.right.publish(msgs.image_to_msg(rng.integers(0, 255, shape, dtype=np.uint8),
                                             stamp=stamp if stamp_r is None else stamp_r))
        self.spin()

    def spin(self):
        """Delivers the inputs, waits for the node's worker (the model runs there), delivers its outputs."""
        self.t.spin_once()
        assert self.node.wait_idle(120.0)
        for _ in range(2):
            self.t.spin_once()


def test_pair_and_camera_info_give_depth_and_disparity():
    r = Rig()
    r.pair(10**9)
    assert r.depth == []  # no camera info yet
    r.info()
    assert len(r.depth) == 1 and len(r.disp) == 1  # the buffered pair is answered once info arrives
    depth = msgs.msg_to_image(r.depth[0])
    d = r.disp[0]
    disp = msgs.msg_to_image(d.image)
    assert depth.shape == (H, W) and disp.shape == (H, W)
    assert d.f == pytest.approx(F) and d.t == pytest.approx(B) and msgs.stamp_ns(r.depth[0]) == 10**9
    ok = np.isfinite(depth)
    np.testing.assert_allclose(depth[ok], F * B / disp[ok], rtol=1e-5)  # depth = f·B / d
    r.pair(10**9)
    assert len(r.depth) == 1  # same stamp: not recomputed
    r.pair(2 * 10**9, stamp_r=2 * 10**9 + 50_000_000)
    assert len(r.depth) == 1  # 50 ms apart: not a pair
    r.pair(3 * 10**9)
    assert len(r.depth) == 2


def test_malformed_messages_are_logged_and_the_node_keeps_running(caplog):
    r = Rig()
    r.info()
    with caplog.at_level(logging.WARNING):
        r.left.publish(msgs.image_to_msg(np.zeros((H, W), np.float32), stamp=5 * 10**9))  # wrong encoding
        r.spin()
        r.pair(6 * 10**9, shape=(8, 8, 3))  # too small
        bad = msgs.camera_info(W, H, F, F, W / 2, H / 2)
        bad.p[3] = 5.0  # negative baseline
        r.rinfo.publish(bad)
        r.spin()
    assert r.node.counters["invalid_message"] >= 3
    r.pair(7 * 10**9)
    assert len(r.depth) == 1  # still serving


def test_parameters_are_validated():
    with pytest.raises(ParameterError):
        params_from_mapping(StereoDepthParams, {"iters": 0})
    with pytest.raises(ParameterError):
        params_from_mapping(StereoDepthParams, {"mde_init": "stereo"})
    with pytest.raises(ParameterError):
        params_from_mapping(StereoDepthParams, {"unknown": 1})
    r = Rig(baseline_m=0.5, mde_init="zero")
    r.linfo.publish(msgs.camera_info(W, H, F, F, W / 2, H / 2))
    r.pair(11)
    assert len(r.disp) == 1 and r.disp[0].t == pytest.approx(0.5)


@pytest.mark.parametrize("focal,baseline", [(2e38, 0.3), (1e39, 1e-9), (40.0, 1e39)])
def test_calibration_beyond_float32_refuses_the_pair_instead_of_half_publishing(focal, baseline):
    """Found by tests/fuzz: K[0] = 1.1e38 passed the camera_info check, the depth image was published, then the
    DisparityImage (float32 f, t, disparity range) failed to encode: depth without disparity, frame not counted."""
    r = Rig()
    r.linfo.publish(msgs.camera_info(W, H, focal, F, W / 2, H / 2))
    right = msgs.camera_info(W, H, F, F, W / 2, H / 2)
    right.p[3] = -F * baseline
    r.rinfo.publish(right)
    r.spin()
    r.pair(10**9)
    c = r.node.stats()["counters"]
    assert r.depth == [] and r.disp == [] and r.node.frames == 0
    assert c["invalid_message"] == 1 and not c.get("worker_error") and not c.get("callback_error")
    r.info()  # a sane calibration: the next pair gets both outputs
    r.pair(2 * 10**9)
    assert len(r.depth) == 1 and len(r.disp) == 1 and r.node.frames == 1
