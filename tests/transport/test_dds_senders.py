"""Issue 14 finding 2 over DDS: each sample is attributed to its writer's node (ros_discovery_info), and a
subscription's publisher allow-list refuses everyone else, including a bare DDS app that announces no node."""
from __future__ import annotations

import time

import pytest

from latentstack import msgs
from latentstack.nodes.base import publisher_filter
from latentstack.transport import DEFAULT, NodeId, make_transport
from latentstack.transport.dds import DdsTransport

pytestmark = pytest.mark.dds


def test_allow_list_by_node_name_and_guid_over_dds(dds_domain, monkeypatch):
    monkeypatch.setattr(DdsTransport, "UNRESOLVED_WAIT_S", 0.5)
    mk = lambda **k: make_transport("dds", domain_id=dds_domain, config="loopback", **k)
    sub_t, good_t, bad_t, bare_t = mk(), mk(), mk(), mk(discovery_info=False)
    try:
        got: list[tuple[str, object]] = []
        sub = sub_t.create_subscription("/cmd", "std_msgs/msg/String", lambda m: got.append(m.data), DEFAULT,
                                        node=NodeId("sim_bridge"))
        sub.sender_filter = publisher_filter(["policy_node"])
        pubs = {"good": good_t.create_publisher("/cmd", "std_msgs/msg/String", DEFAULT, node=NodeId("policy_node")),
                "bad": bad_t.create_publisher("/cmd", "std_msgs/msg/String", DEFAULT, node=NodeId("intruder")),
                "bare": bare_t.create_publisher("/cmd", "std_msgs/msg/String", DEFAULT)}
        for t, p in [(good_t, pubs["good"]), (bad_t, pubs["bad"]), (bare_t, pubs["bare"])]:
            assert t.wait_for_matches(p, 1, timeout=10, poll=lambda: sub_t.spin_once(0.01))
        for name, p in pubs.items():
            for i in range(3):
                p.publish(msgs.string_msg(f"{name}{i}"))
        end = time.monotonic() + 10
        while time.monotonic() < end and (len(got) < 3 or sub.refused_senders < 6):
            sub_t.spin_once(0.05)
        assert got == ["good0", "good1", "good2"]  # in order, none lost while the writer's node was looked up
        assert sub.refused_senders == 6 and not sub.unresolved  # 3 from "intruder", 3 bare (timed out)
        # a guid: entry admits a participant by its GUID (the bare app, here) without any node name
        sub.sender_filter = publisher_filter([f"guid:{bare_t.gid[:12].hex()}"])
        pubs["bare"].publish(msgs.string_msg("bare-ok"))
        pubs["good"].publish(msgs.string_msg("good-refused"))
        end = time.monotonic() + 10
        while time.monotonic() < end and (got[-1] != "bare-ok" or sub.refused_senders < 7):
            sub_t.spin_once(0.05)
        assert got[-1] == "bare-ok" and "good-refused" not in got and sub.refused_senders == 7
    finally:
        for t in (sub_t, good_t, bad_t, bare_t):
            t.close()


def test_dds_queues_and_discovery_tracking_are_bounded(dds_domain):
    from latentstack.transport.dds import KEEP_ALL_CAP, MAX_WRITERS_PER_PARTICIPANT, to_dds_qos
    from latentstack.transport.discovery import (
        DISCOVERY_QOS,
        DISCOVERY_TOPIC,
        DISCOVERY_TYPE,
        NodeEntities,
        encode_participant_info,
    )
    from latentstack.transport.qos import Durability, History, QoSProfile, Reliability

    keep_all = QoSProfile(Reliability.RELIABLE, Durability.VOLATILE, History.KEEP_ALL, 1)
    limits = [p for p in to_dds_qos(keep_all) if type(p).__name__ == "ResourceLimits"]
    assert limits and limits[0].max_samples == KEEP_ALL_CAP  # a KEEP_ALL reader cannot grow without bound
    assert not [p for p in to_dds_qos(keep_all, writer=True) if type(p).__name__ == "ResourceLimits"]

    t = make_transport("dds", domain_id=dds_domain, config="loopback")
    forger = make_transport("dds", domain_id=dds_domain, config="loopback", discovery_info=False)
    try:
        w = forger._make_writer(DISCOVERY_TOPIC, DISCOVERY_TYPE, DISCOVERY_QOS, raw_topic=True)
        from cyclonedds._clayer import ddspy_write

        flood = [NodeEntities("n", "/", [], [bytes([i % 256, i // 256]) * 8 for i in range(MAX_WRITERS_PER_PARTICIPANT + 1)])]
        data = encode_participant_info(b"\x01" * 16, flood, t.distro)
        ddspy_write(w._ref, data + b"\0" * ((-len(data)) % 4))
        ok = encode_participant_info(b"\x02" * 16, [NodeEntities("m", "/", [], [b"\x07" * 16])], t.distro)
        ddspy_write(w._ref, ok + b"\0" * ((-len(ok)) % 4))
        end = time.monotonic() + 10
        while time.monotonic() < end and b"\x02" * 16 not in t._participant_writers:
            t.spin_once(0.05)
        assert t._writer_nodes[b"\x07" * 16] == NodeId("m", "/")  # a normal announcement is tracked
        assert b"\x01" * 16 not in t._participant_writers  # the flood is refused (logged), memory stays bounded
    finally:
        forger.close()
        t.close()
