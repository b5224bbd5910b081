"""Issue 16 item 3: the perception nodes take what real drivers publish, unchanged, and survive bad input.

LiDAR: Ouster / Velodyne / Livox PointCloud2 layouts (extra fields, padding, point_step 48/22/32/26, FLOAT64
coordinates, big-endian, organised with NaN or origin no-returns). Stereo: rgb8/bgr8/mono8/mono16 images,
CompressedImage (PNG/JPEG), raw distorted images rectified from their CameraInfo.
"""
from __future__ import annotations

import io
import logging

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from latentstack import msgs
from latentstack.nodes.lidar_detection import LidarDetectionNodeCore, LidarDetectionParams
from latentstack.nodes.stereo_depth import (
    COMPRESSED_TYPE,
    DISPARITY_TYPE,
    StereoDepthNodeCore,
    StereoDepthParams,
)
from latentstack.perception.stereo.configuration_stereo import StereoConfig
from latentstack.perception.stereo.model import SA2Tiny
from latentstack.transport import DEFAULT, SENSOR_DATA, InProcTransport

# ----------------------------------------------------------------------------- LiDAR
# (point_step, [(name, offset, numpy dtype)]) as the drivers publish them
LAYOUTS = {
    "ouster": (48, [("x", 0, "f4"), ("y", 4, "f4"), ("z", 8, "f4"), ("intensity", 16, "f4"), ("t", 20, "u4"),
                    ("reflectivity", 24, "u2"), ("ring", 26, "u2"), ("ambient", 28, "u2"), ("range", 32, "u4")]),
    "velodyne22": (22, [("x", 0, "f4"), ("y", 4, "f4"), ("z", 8, "f4"), ("intensity", 12, "f4"),
                        ("ring", 16, "u2"), ("time", 18, "f4")]),
    "velodyne32": (32, [("x", 0, "f4"), ("y", 4, "f4"), ("z", 8, "f4"), ("intensity", 16, "f4"),
                        ("ring", 20, "u2"), ("time", 24, "f4")]),
    "livox": (26, [("x", 0, "f4"), ("y", 4, "f4"), ("z", 8, "f4"), ("intensity", 12, "f4"), ("tag", 16, "u1"),
                   ("line", 17, "u1"), ("timestamp", 18, "f8")]),
    "float64_xyz": (32, [("x", 0, "f8"), ("y", 8, "f8"), ("z", 16, "f8"), ("intensity", 24, "f4")]),
}
_CODE = {"u1": 2, "u2": 4, "u4": 6, "f4": 7, "f8": 8}


def driver_cloud(layout: str, pts: np.ndarray, height: int, *, bigendian: bool = False, is_dense: bool = True):
    """PointCloud2 in a driver's layout holding ``pts`` (N, 4) x y z intensity; other fields get counters."""
    step, fields = LAYOUTS[layout]
    wire = np.dtype({"names": [f[0] for f in fields], "formats": [(">" if bigendian else "<") + f[2] for f in fields],
                     "offsets": [f[1] for f in fields], "itemsize": step})
    arr = np.zeros(len(pts), wire)
    for i, name in enumerate(("x", "y", "z", "intensity")):
        arr[name] = pts[:, i]
    for name, _o, dt in fields[4:]:
        arr[name] = np.arange(len(pts)) % 200
    width = len(pts) // height
    return msgs.new(
        "sensor_msgs/msg/PointCloud2", header=msgs.header(42, "os_sensor"), height=height, width=width,
        fields=[msgs.new("sensor_msgs/msg/PointField", name=n, offset=o, datatype=_CODE[d], count=1)
                for n, o, d in fields],
        is_bigendian=bigendian, point_step=step, row_step=width * step,
        data=np.frombuffer(arr.tobytes(), np.uint8), is_dense=is_dense)


class Detector:
    def __init__(self) -> None:
        self.clouds: list[np.ndarray] = []

    def detect(self, clouds):
        self.clouds.extend(clouds)
        return [{"boxes": np.array([[5.0, 0, 0, 4, 2, 1.5, 0]], np.float32), "scores": np.array([0.9], np.float32),
                 "labels": np.array([0])} for _ in clouds]


def _lidar_rig(**params):
    t = InProcTransport()
    det = Detector()
    node = LidarDetectionNodeCore(t, LidarDetectionParams(**params), model=det)
    pub = t.create_publisher("/points", "sensor_msgs/msg/PointCloud2", SENSOR_DATA)
    out: list = []
    t.create_subscription("/detections", "vision_msgs/msg/Detection3DArray", out.append, DEFAULT)

    def send(m) -> None:
        pub.publish(m)
        t.spin_once()
        assert node.wait_idle(60.0)
        for _ in range(2):
            t.spin_once()

    return node, det, send, out


def _points(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.uniform(-40, 40, (n, 3)), rng.integers(0, 255, (n, 1))], 1).astype(np.float32)


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_lidar_node_takes_driver_layouts_unchanged(layout, bigendian):
    node, det, send, out = _lidar_rig()
    pts = _points(64)
    send(driver_cloud(layout, pts, height=8 if layout == "ouster" else 1, bigendian=bigendian))
    assert len(out) == 1 and node.counters.get("invalid_message", 0) == 0
    np.testing.assert_array_equal(det.clouds[0], pts)  # x y z intensity, other fields ignored, order kept
    assert msgs.stamp_ns(out[0]) == 42 and out[0].header.frame_id == "os_sensor"


def test_organised_clouds_drop_no_return_points_when_not_dense():
    node, det, send, out = _lidar_rig()
    pts = _points(16 * 8, seed=1)
    velodyne, ouster = pts.copy(), pts.copy()
    velodyne[::3, :3] = np.nan  # Velodyne/Hesai organised clouds: NaN where no return
    ouster[1::4, :3] = 0.0  # Ouster: x = y = z = 0 where no return
    send(driver_cloud("velodyne32", velodyne, height=16, is_dense=False))
    send(driver_cloud("ouster", ouster, height=16, is_dense=False))
    assert len(out) == 2 and node.counters.get("invalid_message", 0) == 0
    np.testing.assert_array_equal(det.clouds[0], pts[np.arange(len(pts)) % 3 != 0])
    np.testing.assert_array_equal(det.clouds[1], pts[np.arange(len(pts)) % 4 != 1])
    send(driver_cloud("velodyne32", velodyne, height=16, is_dense=True))  # claims dense but has NaN: malformed
    assert len(out) == 2 and node.counters["invalid_message"] == 1


def test_float64_coordinates_beyond_float32_are_non_finite_points():
    node, det, send, out = _lidar_rig()
    pts = _points(16, seed=2).astype(np.float64)
    pts[5, 0] = 1e300  # a FLOAT64 x the float32 detector input cannot hold
    with np.errstate(over="raise"):  # the node does not warn either: the overflow is handled
        send(driver_cloud("float64_xyz", pts, height=1, is_dense=False))
        send(driver_cloud("float64_xyz", pts, height=1, is_dense=True))
    assert len(out) == 1 and node.counters["invalid_message"] == 1
    np.testing.assert_array_equal(det.clouds[0], np.delete(pts, 5, 0).astype(np.float32))


def test_malformed_and_oversized_driver_clouds_are_logged_and_the_node_keeps_running(caplog):
    node, det, send, out = _lidar_rig(max_points=4096)
    good = driver_cloud("ouster", _points(64), height=8)
    with caplog.at_level(logging.WARNING):
        send(driver_cloud("ouster", _points(64 * 128), height=128))  # 8192 points > max_points
        short = driver_cloud("velodyne22", _points(64), height=1)
        short.data = short.data[:-5]  # truncated
        send(short)
        lying = driver_cloud("livox", _points(64), height=1)
        lying.point_step = 20  # the FLOAT64 timestamp at offset 18 now runs past the point
        send(lying)
    assert det.clouds == [] and out == [] and node.counters["invalid_message"] == 3
    assert node.counters.get("callback_error", 0) == 0
    assert sum("invalid" in r.getMessage().lower() or "PointCloud2" in r.getMessage() for r in caplog.records) >= 1
    send(good)
    assert len(out) == 1  # still serving


# ----------------------------------------------------------------------------- stereo
H, W, F, B = 32, 64, 40.0, 0.3
S = 10**9  # stamps one second apart: never paired across frames (sync_tolerance_s 5 ms)


class Stereo:
    """Stereo node with a tiny real model; records the RGB pairs the model was given."""

    def __init__(self, **params) -> None:
        torch.manual_seed(0)
        model = SA2Tiny(StereoConfig(hidden=16, feat_dim=16, fmap_dim=16, enc_channels=(8, 16, 16, 16)))
        self.t = InProcTransport()
        self.node = StereoDepthNodeCore(self.t, StereoDepthParams(**{"iters": 1, **params}), model=model)
        self.inputs: list[tuple[np.ndarray, np.ndarray]] = []
        infer = self.node.infer
        self.node.infer = lambda left, right, fb: self.inputs.append((left, right)) or infer(left, right, fb)
        typ = COMPRESSED_TYPE if params.get("compressed") else "sensor_msgs/msg/Image"
        suffix = "/compressed" if params.get("compressed") else ""
        raw = "image_raw" if params.get("rectify") else "image_rect"
        self.img = {s: self.t.create_publisher(f"/{s}/{raw}{suffix}", typ, SENSOR_DATA) for s in ("left", "right")}
        self.info = {s: self.t.create_publisher(f"/{s}/camera_info", "sensor_msgs/msg/CameraInfo", SENSOR_DATA)
                     for s in ("left", "right")}
        self.depth: list = []
        self.disp: list = []
        self.t.create_subscription("/depth", "sensor_msgs/msg/Image", self.depth.append, SENSOR_DATA)
        self.t.create_subscription("/disparity", DISPARITY_TYPE, self.disp.append, SENSOR_DATA)

    def send_info(self, left=None, right=None) -> None:
        left = left if left is not None else msgs.camera_info(W, H, F, F, W / 2, H / 2)
        right = right if right is not None else msgs.camera_info(W, H, F, F, W / 2, H / 2)
        right.p[3] = -right.p[0] * B
        self.info["left"].publish(left)
        self.info["right"].publish(right)
        self.spin()

    def send(self, left, right) -> None:
        self.img["left"].publish(left)
        self.img["right"].publish(right)
        self.spin()

    def spin(self) -> None:
        self.t.spin_once()
        assert self.node.wait_idle(60.0)
        for _ in range(2):
            self.t.spin_once()


def _pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:H, 0:W]
    rng = np.random.default_rng(seed)
    left = np.stack([(xx * 4 + yy) % 256, (yy * 8) % 256, rng.integers(0, 256, (H, W))], -1).astype(np.uint8)
    return left, np.roll(left, -3, axis=1)


def _compressed(img: np.ndarray, codec: str, stamp: int, fmt: str):
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=codec, **({"quality": 95} if codec == "JPEG" else {}))
    return msgs.new(COMPRESSED_TYPE, header=msgs.header(stamp, "cam"), format=fmt,
                    data=np.frombuffer(buf.getvalue(), np.uint8))


def test_stereo_encodings_reach_the_model_as_the_same_rgb_pair():
    r = Stereo(baseline_m=B)
    r.send_info()
    left, right = _pair()
    r.send(msgs.image_to_msg(left, "rgb8", stamp=1 * S), msgs.image_to_msg(right, "rgb8", stamp=1 * S))
    bgr = msgs.image_to_msg(np.ascontiguousarray(left[..., ::-1]), "bgr8", stamp=2 * S)
    r.send(bgr, msgs.image_to_msg(right, "rgb8", stamp=2 * S))  # left and right in different encodings
    grey = left[..., 0]
    r.send(msgs.image_to_msg(grey, "mono8", stamp=3 * S), msgs.image_to_msg(right[..., 0], "mono8", stamp=3 * S))
    r.send(msgs.image_to_msg(grey.astype(np.uint16) * 257, "mono16", stamp=4 * S),
           msgs.image_to_msg(right[..., 0].astype(np.uint16) * 257, "mono16", stamp=4 * S))
    assert len(r.depth) == 4 and r.node.counters.get("invalid_message", 0) == 0
    np.testing.assert_array_equal(r.inputs[1][0], left)  # bgr8 left arrives as the rgb8 image
    grey3 = np.repeat(grey[..., None], 3, 2)
    for k in (2, 3):  # mono8 and full-range mono16 both give the grey image on three channels
        np.testing.assert_array_equal(r.inputs[k][0], grey3)
    # same pair, same ops on the same machine: the same depth
    np.testing.assert_array_equal(msgs.msg_to_image(r.depth[2]), msgs.msg_to_image(r.depth[3]))
    np.testing.assert_array_equal(msgs.msg_to_image(r.depth[0]), msgs.msg_to_image(r.depth[1]))


def test_stereo_compressed_topics_png_exact_jpeg_close_and_bad_ones_dropped(caplog):
    r = Stereo(baseline_m=B, compressed=True, max_width=512, max_height=512)
    r.send_info()
    left, right = _pair(1)
    r.send(_compressed(left, "PNG", 1 * S, "rgb8; png compressed bgr8"), _compressed(right, "PNG", 1 * S, "png"))
    assert len(r.depth) == 1
    np.testing.assert_array_equal(r.inputs[0][0], left)
    np.testing.assert_array_equal(r.inputs[0][1], right)
    jpeg = _compressed(left, "JPEG", 2 * S, "bgr8; jpeg compressed bgr8")
    r.send(jpeg, _compressed(right, "JPEG", 2 * S, "jpeg"))
    assert len(r.depth) == 2
    # lossy: compare with OpenCV's decoder of the same bytes (another libjpeg build: IDCT rounding may differ)
    ref = cv2.imdecode(np.asarray(jpeg.data), cv2.IMREAD_COLOR)[..., ::-1]
    assert r.inputs[1][0].shape == ref.shape and np.abs(r.inputs[1][0].astype(int) - ref).mean() < 1.0
    with caplog.at_level(logging.WARNING):
        junk = msgs.new(COMPRESSED_TYPE, header=msgs.header(3 * S, "cam"), format="jpeg",
                        data=np.arange(100, dtype=np.uint8))
        r.send(junk, _compressed(right, "PNG", 3 * S, "png"))
        bomb = _compressed(np.zeros((4096, 4096, 3), np.uint8), "PNG", 4 * S, "png")  # ~100 kB, 48 MB decoded
        r.send(bomb, _compressed(right, "PNG", 4 * S, "png"))
        depth_png = _compressed(np.zeros((H, W), np.uint16), "PNG", 5 * S, "16UC1; compressedDepth png")
        r.send(depth_png, _compressed(right, "PNG", 5 * S, "png"))
    assert len(r.depth) == 2 and len(r.inputs) == 2 and r.node.counters["invalid_message"] >= 3
    assert r.node.counters.get("callback_error", 0) == 0
    r.send(_compressed(left, "PNG", 6 * S, "png"), _compressed(right, "PNG", 6 * S, "png"))
    assert len(r.depth) == 3  # still serving


def _distorted_info(d, model="plumb_bob"):
    info = msgs.camera_info(W, H, F, F, (W - 1) / 2, (H - 1) / 2)
    info.distortion_model = model
    info.d = np.asarray(d, np.float64)
    return info


def test_stereo_rectify_undistorts_raw_images_with_the_camera_info():
    d = [-0.25, 0.06, 0.0, 0.0, 0.0]
    r = Stereo(baseline_m=0.0, rectify=True, left_topic="left/image_raw", right_topic="right/image_raw")
    left, right = _pair(2)
    r.send(msgs.image_to_msg(left, stamp=1 * S), msgs.image_to_msg(right, stamp=1 * S))
    assert r.depth == []  # waits for both camera_infos
    r.send_info(_distorted_info(d), _distorted_info(d))
    assert len(r.depth) == 1 and r.disp[0].t == pytest.approx(B)
    k = np.asarray(_distorted_info(d).k).reshape(3, 3)
    for got, raw in zip(r.inputs[0], (left, right), strict=True):
        want = cv2.undistort(raw, k, np.asarray(d), newCameraMatrix=k)  # OpenCV's own one-shot undistortion
        inner = (slice(4, -4), slice(4, -4))  # borders: bilinear vs fixed-point interpolation at the edge
        assert np.abs(got[inner].astype(int) - want[inner]).mean() < 1.5
        assert np.abs(got[inner].astype(int) - raw[inner]).mean() > 5  # the images really were remapped


def test_stereo_rectify_refuses_unknown_models_and_mismatched_sizes(caplog):
    r = Stereo(baseline_m=B, rectify=True, left_topic="left/image_raw", right_topic="right/image_raw")
    left, right = _pair(3)
    with caplog.at_level(logging.WARNING):
        r.send_info(_distorted_info(np.zeros(9), "kannala_brandt"), _distorted_info(np.zeros(5)))
        r.send(msgs.image_to_msg(left, stamp=1 * S), msgs.image_to_msg(right, stamp=1 * S))
    assert r.depth == [] and r.node.counters["invalid_message"] >= 1
    assert any("kannala_brandt" in rec.getMessage() for rec in caplog.records)
    r.send_info(_distorted_info(np.zeros(5)), _distorted_info(np.zeros(5)))
    assert len(r.depth) == 1  # a valid calibration serves the waiting pair
    small = np.zeros((H, W - 16, 3), np.uint8)
    r.send(msgs.image_to_msg(small, stamp=2 * S), msgs.image_to_msg(small, stamp=2 * S))  # not the calibrated size
    assert len(r.depth) == 1 and r.node.counters["invalid_message"] >= 2
    r.send(msgs.image_to_msg(left, stamp=3 * S), msgs.image_to_msg(right, stamp=3 * S))
    assert len(r.depth) == 2


def test_stereo_focal_length_comes_from_the_rectified_projection():
    r = Stereo(baseline_m=B)
    left_info = msgs.camera_info(W, H, F, F, W / 2, H / 2)
    left_info.p[0] = 45.0  # image_proc: rectified images have P's intrinsics, K is the raw camera
    r.send_info(left_info)
    left, right = _pair(4)
    r.send(msgs.image_to_msg(left, stamp=1 * S), msgs.image_to_msg(right, stamp=1 * S))
    assert len(r.disp) == 1 and r.disp[0].f == pytest.approx(45.0)
