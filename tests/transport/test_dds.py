"""Cyclone DDS backend over loopback: ROS 2 wire names seen by a third participant, QoS, two processes."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from latentstack import msgs
from latentstack.transport import DEFAULT, SENSOR_DATA, TRANSIENT_LOCAL, NodeId, make_transport

pytestmark = pytest.mark.dds


def spin_until(transports, cond, timeout=5.0):
    end = time.monotonic() + timeout
    while not cond() and time.monotonic() < end:
        for t in transports:
            t.spin_once(0.02)
    return cond()


def test_wire_names_qos_and_typehash_seen_by_another_participant(dds_domain):
    from latentstack.transport.dds import discover_endpoints
    from latentstack.transport.discovery import DISCOVERY_TOPIC

    a = make_transport("dds", domain_id=dds_domain, config="loopback", distro="jazzy")
    h = make_transport("dds", domain_id=dds_domain, config="loopback", distro="humble")
    try:
        node = NodeId("camera_node", "/robot1")
        a.create_publisher("/robot1/camera/image_raw", "sensor_msgs/msg/Image", SENSOR_DATA, node=node)
        a.create_subscription("/robot1/joint_states", "sensor_msgs/msg/JointState", lambda m: None, DEFAULT, node=node)
        h.create_publisher("/chatter", "std_msgs/msg/String")

        def complete(eps):
            return {"rt/robot1/camera/image_raw", "rt/robot1/joint_states", "rt/chatter"} <= {e["topic"] for e in eps}

        eps = discover_endpoints(dds_domain, timeout=5.0, until=complete)
    finally:
        a.close()
        h.close()
    by_topic = {(e["topic"], e["kind"]): e for e in eps}
    img = by_topic[("rt/robot1/camera/image_raw", "writer")]
    assert img["type"] == "sensor_msgs::msg::dds_::Image_"
    assert img["user_data"] == b"typehash=RIHS01_d31d41a9a4c4bc8eae9be757b0beed306564f7526c88ea6a4588fb9582527d47;"
    js = by_topic[("rt/robot1/joint_states", "reader")]
    assert js["type"] == "sensor_msgs::msg::dds_::JointState_" and js["user_data"].startswith(b"typehash=RIHS01_a13e")
    chatter = by_topic[("rt/chatter", "writer")]
    assert chatter["type"] == "std_msgs::msg::dds_::String_" and chatter["user_data"] == b""  # Humble: no hash
    assert any(e["topic"] == DISCOVERY_TOPIC and e["type"] == "rmw_dds_common::msg::dds_::ParticipantEntitiesInfo_"
               for e in eps)


def test_ros_discovery_info_names_the_node_and_its_endpoints(dds_domain):
    from latentstack.transport.discovery import (
        DISCOVERY_QOS,
        DISCOVERY_TOPIC,
        DISCOVERY_TYPE,
        decode_participant_info,
    )

    a = make_transport("dds", domain_id=dds_domain, config="loopback")
    b = make_transport("dds", domain_id=dds_domain, config="loopback", discovery_info=False)
    try:
        node = NodeId("policy_node", "/")
        pub = a.create_publisher("/action", "std_msgs/msg/Float32MultiArray", DEFAULT, node=node)
        sub = a.create_subscription("/joint_states", "sensor_msgs/msg/JointState", lambda m: None, SENSOR_DATA,
                                    node=node)
        infos = []
        # a late-joining reader of the latched topic, as a ROS 2 daemon would be (no rt/ prefix)
        from cyclonedds.core import InstanceState, SampleState, ViewState
        from cyclonedds.sub import DataReader

        from latentstack.transport.dds import to_dds_qos

        reader = DataReader(b.participant, b._topic(DISCOVERY_TOPIC, DISCOVERY_TYPE), qos=to_dds_qos(DISCOVERY_QOS))
        from cyclonedds._clayer import ddspy_take

        end = time.monotonic() + 5
        while time.monotonic() < end and not any(i["gid"][:16] == a.gid and i["nodes"] for i in infos):
            for data, info in ddspy_take(reader._ref, SampleState.Any | ViewState.Any | InstanceState.Any, 16):
                if info.valid_data:
                    infos.append(decode_participant_info(data, "jazzy"))
            time.sleep(0.02)
    finally:
        a.close()
        b.close()
    mine = [i for i in infos if i["gid"] == a.gid][-1]
    (n,) = mine["nodes"]
    assert (n.name, n.namespace) == ("policy_node", "/")
    assert n.writer_gids == [pub.gid] and n.reader_gids == [sub.gid] and len(pub.gid) == 16


def test_reliable_reader_ignores_best_effort_writer_and_transient_local_late_join(dds_domain):
    a = make_transport("dds", domain_id=dds_domain, config="loopback")
    b = make_transport("dds", domain_id=dds_domain, config="loopback")
    try:
        rel, be, late = [], [], []
        b.create_subscription("/s", "std_msgs/msg/String", lambda m: rel.append(m.data), DEFAULT)
        b.create_subscription("/s", "std_msgs/msg/String", lambda m: be.append(m.data), SENSOR_DATA)
        pub = a.create_publisher("/s", "std_msgs/msg/String", SENSOR_DATA)
        latched = a.create_publisher("/latched", "std_msgs/msg/String", TRANSIENT_LOCAL)
        latched.publish(msgs.string_msg("before you came"))
        assert a.wait_for_matches(pub, 1, timeout=5)
        time.sleep(0.3)
        assert pub.matched_count() == 1  # only the best-effort reader matched
        for i in range(5):
            pub.publish(msgs.string_msg(str(i)))
        b.create_subscription("/latched", "std_msgs/msg/String", lambda m: late.append(m.data), TRANSIENT_LOCAL)
        assert spin_until([b], lambda: len(be) == 5 and late == ["before you came"])
        assert rel == []
    finally:
        a.close()
        b.close()


def test_typed_cyclonedds_reader_decodes_our_raw_payloads(dds_domain):
    """A reader using cyclonedds' own IdlStruct deserializer (like a typed DDS app) gets our bytes."""
    from cyclonedds.sub import DataReader

    from latentstack.msgs.idl import idl_class
    from latentstack.transport.dds import to_dds_qos

    a = make_transport("dds", domain_id=dds_domain, config="loopback")
    b = make_transport("dds", domain_id=dds_domain, config="loopback")
    try:
        pub = a.create_publisher("/joint_states", "sensor_msgs/msg/JointState", DEFAULT)
        reader = DataReader(b.participant, b._topic("rt/joint_states", "sensor_msgs/msg/JointState"),
                            qos=to_dds_qos(DEFAULT))
        assert a.wait_for_matches(pub)
        pub.publish(msgs.joint_state(["x", "y"], [1.0, 2.0], stamp=5))
        end, got = time.monotonic() + 5, []
        while not got and time.monotonic() < end:
            got = reader.take()
            time.sleep(0.01)
        assert isinstance(got[0], idl_class("sensor_msgs/msg/JointState"))
        assert got[0].name == ["x", "y"] and got[0].position == [1.0, 2.0] and got[0].header.stamp.nanosec == 5
        with pytest.raises(Exception, match="failed"):  # Cyclone itself refuses a malformed payload
            pub.publish_raw(b"\x00\x01\x00\x00\xff\xff\xff\xff")
    finally:
        a.close()
        b.close()


def test_two_processes_exchange_image_and_joint_state(dds_domain):
    """Parent publishes 10 JointStates; a separate process answers each with an Image and a JointState."""
    n = 10
    child = subprocess.Popen([sys.executable, str(Path(__file__).with_name("_dds_echo.py")), str(dds_domain), str(n)])
    t = make_transport("dds", domain_id=dds_domain, config="loopback")
    images, pongs = {}, {}
    try:
        ping = t.create_publisher("/ping", "sensor_msgs/msg/JointState", DEFAULT)
        t.create_subscription("/camera/image_raw", "sensor_msgs/msg/Image",
                              lambda m: images.__setitem__(msgs.stamp_ns(m), msgs.msg_to_image(m)), DEFAULT)
        t.create_subscription("/pong", "sensor_msgs/msg/JointState",
                              lambda m: pongs.__setitem__(msgs.stamp_ns(m), msgs.joint_state_positions(m)), DEFAULT)
        assert t.wait_for_matches(ping, 1, timeout=15), "echo process never matched"
        for i in range(n):
            ping.publish(msgs.joint_state(["i"], [float(i)], stamp=1000 + i))
        assert spin_until([t], lambda: len(images) == n and len(pongs) == n, timeout=15)
        assert child.wait(timeout=15) == 0
    finally:
        if child.poll() is None:
            child.kill()
        t.close()
    for i in range(n):
        assert images[1000 + i].shape == (8, 6, 3) and (images[1000 + i] == i).all()
        assert pongs[1000 + i].tolist() == [2.0 * i]
