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


def test_queues_are_bounded_when_nobody_spins():
    """Issue 14 finding 10: publishing with nobody spinning must not grow memory without bound.

    Before: each subscription's queue honoured KEEP_LAST but the transport's delivery FIFO kept one
    entry per message ever published (2 M messages -> +200 MB), and KEEP_ALL queues had no cap.
    """
    import tracemalloc

    t = InProcTransport(keep_all_cap=50)
    last, every = [], []
    t.create_subscription("/flood", "std_msgs/msg/String", lambda m: last.append(m.data), SENSOR_DATA.with_depth(3))
    keep_all = t.create_subscription("/flood", "std_msgs/msg/String", lambda m: every.append(m.data),
                                     DEFAULT.__class__(history="keep_all", depth=0))
    pub = t.create_publisher("/flood", "std_msgs/msg/String", DEFAULT)
    payloads = [msgs.encode(msgs.string_msg(str(i))) for i in range(1000)]
    for i in range(20_000):  # warm up: queues reach their caps
        pub.publish_raw(payloads[i % 1000])
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(20_000, 120_000):
            pub.publish_raw(payloads[i % 1000])
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 256 * 1024, f"{grown} bytes for 100k messages nobody received"
    assert t.pending() == 3 + 50  # KEEP_LAST depth and the KEEP_ALL cap
    assert keep_all.dropped == 120_000 - 50
    assert t.spin_once() == 53
    # KEEP_LAST semantics: the newest survive, the oldest were dropped, order is kept
    assert last == [str(i % 1000) for i in range(120_000 - 3, 120_000)]
    assert every == [str(i % 1000) for i in range(120_000 - 50, 120_000)]
    assert InProcTransport().keep_all_cap == InProcTransport.KEEP_ALL_CAP >= 1000


def test_compaction_keeps_global_fifo_order_across_subscriptions():
    t = InProcTransport()
    got = []
    for topic, depth in (("/a", 2), ("/b", 1000)):
        t.create_subscription(topic, "std_msgs/msg/String", lambda m, k=topic: got.append((k, m.data)),
                              SENSOR_DATA.with_depth(depth))
    pa = t.create_publisher("/a", "std_msgs/msg/String", SENSOR_DATA)
    pb = t.create_publisher("/b", "std_msgs/msg/String", SENSOR_DATA)
    for i in range(5000):  # far more than the FIFO keeps before compacting
        pa.publish(msgs.string_msg(str(i)))
        if i % 10 == 0:
            pb.publish(msgs.string_msg(str(i)))
    t.spin_once()
    b_kept = [("/b", str(i)) for i in range(0, 5000, 10)][-500:]  # all 500 fit in depth 1000
    assert got == b_kept + [("/a", "4998"), ("/a", "4999")]  # publication order across both topics


def test_callbacks_publishing_during_a_compaction_deliver_each_message_once():
    t = InProcTransport()
    got = []
    pub = t.create_publisher("/echo", "std_msgs/msg/String", DEFAULT)

    def echo(m):
        got.append(m.data)
        if int(m.data) < 3000:  # each delivery publishes the next message (and forces compactions)
            for k in range(2):
                pub.publish(msgs.string_msg(str(int(m.data) * 2 + 1 + k)))

    t.create_subscription("/echo", "std_msgs/msg/String", echo, DEFAULT.with_depth(5000))
    pub.publish(msgs.string_msg("0"))
    for _ in range(20):
        t.spin_once()
    assert len(got) == len(set(got)) and sorted(map(int, got)) == list(range(len(got)))


def test_a_flood_of_malformed_bytes_logs_a_bounded_number_of_lines(caplog):
    """Issue 14 finding 7: one WARNING per malformed message (10.5 MB of log for 5k) is now a burst + a count."""
    t = InProcTransport()
    sub = t.create_subscription("/js", "sensor_msgs/msg/JointState", lambda m: None, DEFAULT.with_depth(1000))
    pub = t.create_publisher("/js", "sensor_msgs/msg/JointState")
    with caplog.at_level(logging.WARNING, logger="latentstack.transport"):
        for _ in range(500):
            pub.publish_raw(b"garbage")
        t.spin_once()
    lines = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert sub.decode_errors == 500 and 1 <= len(lines) <= sub.rate_log.burst
    assert sub.rate_log.suppressed["decode"] == 500 - len(lines)
