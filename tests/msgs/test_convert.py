"""numpy <-> message converters: round trips and validation errors."""
from __future__ import annotations

import numpy as np
import pytest

from latentstack import msgs


def rt(m):
    return msgs.decode(msgs.encode(m), msgs.type_of(m))


@pytest.mark.parametrize(
    "arr,enc",
    [
        (np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8), "rgb8"),
        (np.random.default_rng(1).integers(0, 256, (5, 7), dtype=np.uint8), "mono8"),
        (np.random.default_rng(2).integers(0, 65535, (4, 3), dtype=np.uint16), "mono16"),
        (np.random.default_rng(3).standard_normal((3, 6)).astype(np.float32), "32FC1"),
        (np.random.default_rng(4).integers(0, 256, (2, 3, 4), dtype=np.uint8), "rgba8"),
    ],
)
def test_image_roundtrip(arr, enc):
    m = msgs.image_to_msg(arr, enc, stamp=123, frame_id="cam")
    assert m.encoding == enc and m.step == arr.shape[1] * (arr.shape[2] if arr.ndim == 3 else 1) * arr.itemsize
    back = msgs.msg_to_image(rt(m))
    assert back.dtype == arr.dtype and np.array_equal(back, arr)
    assert back.flags.writeable
    assert msgs.stamp_ns(rt(m)) == 123


def test_image_bgr_to_rgb_step_padding_and_bigendian():
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    bgr = msgs.image_to_msg(rgb[..., ::-1].copy(), "bgr8")
    assert np.array_equal(msgs.msg_to_image(bgr, want="rgb8"), rgb)
    # a row stride larger than width * channels (padded rows)
    padded = msgs.new("sensor_msgs/msg/Image", height=2, width=3, encoding="rgb8", step=12,
                      data=np.concatenate([np.r_[rgb[0].ravel(), [0, 0, 0]], np.r_[rgb[1].ravel(), [0, 0, 0]]]).astype(np.uint8))
    assert np.array_equal(msgs.msg_to_image(padded), rgb)
    be = msgs.new("sensor_msgs/msg/Image", height=1, width=2, encoding="mono16", is_bigendian=1, step=4,
                  data=np.array([0x01, 0x02, 0x03, 0x04], np.uint8))
    assert msgs.msg_to_image(be).tolist() == [[0x0102, 0x0304]]


def test_image_validation_errors():
    ok = msgs.image_to_msg(np.zeros((4, 4, 3), np.uint8))
    short = msgs.new("sensor_msgs/msg/Image", height=4, width=4, encoding="rgb8", step=12, data=ok.data[:20])
    with pytest.raises(msgs.MessageValueError, match="bytes"):
        msgs.msg_to_image(short)
    with pytest.raises(msgs.MessageValueError, match="step"):
        msgs.msg_to_image(msgs.new("sensor_msgs/msg/Image", height=4, width=4, encoding="rgb8", step=3,
                                   data=ok.data))
    with pytest.raises(msgs.MessageValueError, match="encoding"):
        msgs.msg_to_image(msgs.new("sensor_msgs/msg/Image", height=1, width=1, encoding="yuv422", step=2,
                                   data=np.zeros(2, np.uint8)))
    with pytest.raises(msgs.MessageValueError):
        msgs.image_to_msg(np.zeros((2, 2, 3), np.float64), "rgb8")


def test_camera_info_joint_state_float_array_twist():
    ci = rt(msgs.camera_info_from_fovy(64, 64, 90.0, 5, "cam"))
    assert (ci.width, ci.height, ci.header.frame_id) == (64, 64, "cam")
    assert ci.k[0] == pytest.approx(32.0) and ci.k[2] == pytest.approx(31.5) and ci.k[8] == 1.0
    js = rt(msgs.joint_state(["b", "a"], [2.0, 1.0]))
    assert msgs.joint_state_to_dict(js) == {"b": 2.0, "a": 1.0}
    assert msgs.joint_state_positions(js, ["a", "b"]).tolist() == [1.0, 2.0]
    with pytest.raises(msgs.MessageValueError, match="lacks"):
        msgs.joint_state_positions(js, ["a", "c"])
    bad = msgs.new("sensor_msgs/msg/JointState", name=["a", "b"], position=np.array([1.0]))
    with pytest.raises(msgs.MessageValueError, match="names"):
        msgs.joint_state_positions(bad)
    nan = msgs.joint_state(["a"], [float("nan")])
    with pytest.raises(msgs.MessageValueError, match="NaN"):
        msgs.joint_state_positions(nan)
    fa = rt(msgs.float32_array([0.25, -1.0, 3.0], "action"))
    assert fa.layout.dim[0].label == "action" and msgs.float32_array_values(fa, 3).tolist() == [0.25, -1.0, 3.0]
    with pytest.raises(msgs.MessageValueError, match="expected 4"):
        msgs.float32_array_values(fa, 4)
    with pytest.raises(msgs.MessageValueError, match="NaN"):
        msgs.float32_array_values(msgs.float32_array([np.nan]))
    lin, ang = msgs.twist_to_numpy(rt(msgs.twist((1, 2, 3), (4, 5, 6))))
    assert lin.tolist() == [1, 2, 3] and ang.tolist() == [4, 5, 6]


def test_time_negative_seconds_and_range():
    t = msgs.ns_to_time(-1)
    assert (t.sec, t.nanosec) == (-1, 999_999_999) and msgs.time_to_ns(t) == -1
    assert msgs.time_to_ns(rt(msgs.header(-1)).stamp) == -1
    with pytest.raises(msgs.MessageValueError):
        msgs.ns_to_time(2**31 * 10**9)


def test_pointcloud2_roundtrip_exact():
    pts = np.zeros(5, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("ring", "<u2"), ("t", "<f8")])
    rng = np.random.default_rng(0)
    for k in ("x", "y", "z", "t"):
        pts[k] = rng.standard_normal(5)
    pts["ring"] = np.arange(5)
    m = rt(msgs.pointcloud2_from_numpy(pts, 1, "lidar"))
    assert [f.name for f in m.fields] == ["x", "y", "z", "ring", "t"] and m.point_step == pts.dtype.itemsize
    back = msgs.pointcloud2_to_numpy(m)
    assert back.tobytes() == pts.tobytes()
    broken = msgs.new("sensor_msgs/msg/PointCloud2", height=1, width=10, point_step=24, row_step=240,
                      fields=m.fields, data=np.zeros(24, np.uint8))
    with pytest.raises(msgs.MessageValueError):
        msgs.pointcloud2_to_numpy(broken)


def test_detections_roundtrip_and_registered_types():
    boxes = np.array([[1, 2, 3, 4, 5, 6, 0.5], [0, 0, 0, 1, 1, 1, -1.0]])
    m = rt(msgs.detection3d_array(boxes, [0.9, 0.2], ["car", "cyclist"], 4, "lidar"))
    out = msgs.detection3d_array_to_numpy(m)
    assert np.allclose(out["boxes"], boxes) and out["labels"] == ["car", "cyclist"]
    assert msgs.field_names("vision_msgs/msg/Detection2D") == ("header", "results", "bbox", "id")
    assert msgs.field_names("vision_msgs/msg/BoundingBox2D") == ("center", "size_x", "size_y")
    assert msgs.dds_type_name("vision_msgs/msg/Detection3DArray") == "vision_msgs::msg::dds_::Detection3DArray_"


def test_register_custom_type_and_definition_text():
    msgs.register_msg("latentstack_test_msgs/msg/Pair", "int32 a\nstring b\n")
    m = msgs.new("latentstack_test_msgs/msg/Pair", a=3, b="x")
    assert rt(m).a == 3 and msgs.rihs01("latentstack_test_msgs/msg/Pair").startswith("RIHS01_")
    assert "MSG: std_msgs/Header" in msgs.message_definition("sensor_msgs/msg/Image")
    with pytest.raises(msgs.MessageEncodeError):
        msgs.new("std_msgs/msg/String", nope=1)
