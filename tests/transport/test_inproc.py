"""In-process transport: codec on the path, FIFO order, DDS-like QoS, malformed bytes logged not raised."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from latentstack import msgs
from latentstack.transport import (
    DEFAULT,
    SENSOR_DATA,
    TRANSIENT_LOCAL,
    InProcBus,
    InProcTransport,
    TopicTypeError,
    make_transport,
)


def test_pubsub_roundtrip_and_fifo_order():
    t = make_transport("inproc")
    got = []
    t.create_subscription("/a", "std_msgs/msg/String", lambda m: got.append(("a", m.data)))
    t.create_subscription("/b", "sensor_msgs/msg/Image", lambda m: got.append(("b", msgs.msg_to_image(m).sum())),
                          SENSOR_DATA)
    pa = t.create_publisher("/a", "std_msgs/msg/String")
    pb = t.create_publisher("b", "sensor_msgs/Image", SENSOR_DATA.with_depth(10))
    pa.publish(msgs.string_msg("1"))
    pb.publish(msgs.image_to_msg(np.ones((2, 2, 3), np.uint8)))
    pa.publish(msgs.string_msg("2"))
    assert got == [] and t.pending() == 3  # nothing is delivered before spinning
    assert t.spin_once() == 3
    assert got == [("a", "1"), ("b", 12), ("a", "2")]
    with pytest.raises(msgs.MessageEncodeError):
        pa.publish(msgs.header())  # wrong type for the topic


def test_keep_last_drops_oldest_and_callbacks_publish_next_round():
    t = InProcTransport()
    got = []
    t.create_subscription("/x", "std_msgs/msg/String", lambda m: got.append(m.data), SENSOR_DATA.with_depth(2))
    p = t.create_publisher("/x", "std_msgs/msg/String", SENSOR_DATA)
    for i in range(5):
        p.publish(msgs.string_msg(str(i)))
    t.spin_once()
    assert got == ["3", "4"]


def test_reliability_and_durability_matching():
    bus = InProcBus()
    a, b = InProcTransport(bus), InProcTransport(bus)  # two "processes" on one bus
    rel, be = [], []
    b.create_subscription("/s", "std_msgs/msg/String", lambda m: rel.append(m.data), DEFAULT)
    b.create_subscription("/s", "std_msgs/msg/String", lambda m: be.append(m.data), SENSOR_DATA)
    pub = a.create_publisher("/s", "std_msgs/msg/String", SENSOR_DATA)
    assert pub.matched_count() == 1
    pub.publish(msgs.string_msg("x"))
    b.spin_once()
    assert rel == [] and be == ["x"]  # a RELIABLE reader does not match a BEST_EFFORT writer
    latched = a.create_publisher("/latched", "std_msgs/msg/String", TRANSIENT_LOCAL.with_depth(2))
    for s in ("old", "mid", "new"):
        latched.publish(msgs.string_msg(s))
    late_tl, late_vol = [], []
    b.create_subscription("/latched", "std_msgs/msg/String", lambda m: late_tl.append(m.data),
                          TRANSIENT_LOCAL.with_depth(2))
    b.create_subscription("/latched", "std_msgs/msg/String", lambda m: late_vol.append(m.data), DEFAULT)
    b.spin_once()
    assert late_tl == ["mid", "new"] and late_vol == []


def test_topic_type_conflict():
    t = InProcTransport()
    t.create_publisher("/x", "std_msgs/msg/String")
    with pytest.raises(TopicTypeError):
        t.create_subscription("/x", "std_msgs/msg/Header", lambda m: None)


def test_malformed_bytes_are_logged_and_counted(caplog):
    t = InProcTransport()
    got = []
    sub = t.create_subscription("/js", "sensor_msgs/msg/JointState", lambda m: got.append(m))
    pub = t.create_publisher("/js", "sensor_msgs/msg/JointState")
    good = msgs.encode(msgs.joint_state(["a"], [1.0]))
    with caplog.at_level(logging.WARNING, logger="latentstack.transport"):
        pub.publish_raw(good[:-9])
        pub.publish_raw(b"garbage")
        pub.publish_raw(good)
        assert t.spin_once() == 1
    assert len(got) == 1 and sub.decode_errors == 2 and sub.received == 3
    assert "dropped malformed message on /js" in caplog.text


def test_raw_subscription_and_close():
    t = InProcTransport(clock=lambda: 42)
    raws = []
    sub = t.create_subscription("/r", "std_msgs/msg/String", raws.append, raw=True)
    p = t.create_publisher("/r", "std_msgs/msg/String")
    p.publish(msgs.string_msg("hi"))
    t.spin_once()
    assert raws[0].data == msgs.encode(msgs.string_msg("hi")) and raws[0].topic == "/r"
    assert t.now_ns() == 42
    sub.close()
    p.publish(msgs.string_msg("again"))
    assert t.spin_once() == 0
    t.close()
    with pytest.raises(Exception, match="closed"):
        p.publish(msgs.string_msg("x"))
