"""zenoh transport: rmw_zenoh wire strings (golden values from rmw_zenoh's docs/design.md), the 33-byte
attachment, and two peers on loopback (round trip, QoS depth, TRANSIENT_LOCAL, malformed attachments,
publisher allow-lists), plus the MetaWorld graph over zenoh == ``evaluate`` (one process and multi-process)."""
from __future__ import annotations

import dataclasses
import json
import os
import time

import pytest

from latentstack import msgs
from latentstack.transport import DEFAULT, SENSOR_DATA, TRANSIENT_LOCAL, NodeId, QoSProfile, TransportError
from latentstack.transport.qos import Durability, History, Reliability
from latentstack.transport.zenoh import (
    ATTACHMENT_SIZE,
    data_keyexpr,
    decode_attachment,
    encode_attachment,
    endpoint_token,
    entity_gid,
    free_loopback_endpoint,
    mangle_name,
    node_token,
    parse_qos_keyexpr,
    parse_token,
    qos_keyexpr,
    zenoh_available,
)

STRING_HASH = "RIHS01_df668c740482bbd48fb39d76a70dfd4bd59db1288021743503259e948f6b1a18"
# rmw_zenoh docs/design.md (graph cache section), byte for byte
LISTENER_NN = "@ros2_lv/2/aac3178e146ba6f1fc6e6a4085e77f21/0/0/NN/%/%/listener"
LISTENER_MS = ("@ros2_lv/2/aac3178e146ba6f1fc6e6a4085e77f21/0/10/MS/%/%/listener/%chatter/"
               f"std_msgs::msg::dds_::String_/{STRING_HASH}/::,10:,:,:,,")
TALKER_MP = ("@ros2_lv/2/8b20917502ee955ac4476e0266340d5c/0/10/MP/%/%/talker/%chatter/"
             f"std_msgs::msg::dds_::String_/{STRING_HASH}/::,7:,:,:,,")

needs_zenoh = pytest.mark.skipif(not zenoh_available(), reason="eclipse-zenoh / xxhash not installed")


# ----------------------------------------------------------------------------- wire strings (no session)
def test_data_keys_match_the_spec():
    assert data_keyexpr(0, "/chatter", "std_msgs/msg/String", "jazzy") == f"0/chatter/std_msgs::msg::dds_::String_/{STRING_HASH}"
    assert data_keyexpr(0, "/robot1/chatter", "std_msgs/msg/String", "jazzy") == \
        f"0/robot1/chatter/std_msgs::msg::dds_::String_/{STRING_HASH}"
    # Humble's rmw_zenoh writes a literal instead of the hash
    assert data_keyexpr(0, "/chatter", "std_msgs/msg/Int32", "humble") == \
        "0/chatter/std_msgs::msg::dds_::Int32_/TypeHashNotSupported"
    assert data_keyexpr(7, "chatter", "std_msgs/msg/String", "jazzy").startswith("7/chatter/")


def test_liveliness_tokens_match_the_design_doc():
    assert node_token(2, "aac3178e146ba6f1fc6e6a4085e77f21", 0, NodeId("listener")) == LISTENER_NN
    assert endpoint_token(2, "aac3178e146ba6f1fc6e6a4085e77f21", 0, 10, "MS", NodeId("listener"), "/chatter",
                          "std_msgs/msg/String", "jazzy", DEFAULT) == LISTENER_MS
    assert endpoint_token(2, "8b20917502ee955ac4476e0266340d5c", 0, 10, "MP", NodeId("talker"), "/chatter",
                          "std_msgs/msg/String", "jazzy", DEFAULT.with_depth(7)) == TALKER_MP
    # namespaces and topics: every "/" becomes "%"
    tok = endpoint_token(0, "ab", 3, 4, "MP", NodeId("cam", "/robot1/front"), "/robot1/camera/image_raw",
                         "sensor_msgs/msg/Image", "humble", SENSOR_DATA)
    assert tok == ("@ros2_lv/0/ab/3/4/MP/%/%robot1%front/cam/%robot1%camera%image_raw/"
                   "sensor_msgs::msg::dds_::Image_/TypeHashNotSupported/2::,5:,:,:,,")
    assert mangle_name("/") == "%"
    with pytest.raises(ValueError):
        endpoint_token(0, "ab", 0, 1, "XX", NodeId("n"), "/t", "std_msgs/msg/String", "jazzy", DEFAULT)


def test_qos_segment_leaves_rmw_zenoh_defaults_empty_and_parses_back():
    assert qos_keyexpr(DEFAULT) == "::,10:,:,:,,"
    assert qos_keyexpr(SENSOR_DATA) == "2::,5:,:,:,,"
    assert qos_keyexpr(TRANSIENT_LOCAL) == ":1:,1:,:,:,,"
    assert qos_keyexpr(QoSProfile(depth=42)) == "::,:,:,:,,"  # 42 is rmw_zenoh's default depth
    keep_all = QoSProfile(Reliability.RELIABLE, Durability.VOLATILE, History.KEEP_ALL, 10)
    assert qos_keyexpr(keep_all) == "::2,10:,:,:,,"
    for q in (DEFAULT, SENSOR_DATA, TRANSIENT_LOCAL, keep_all, QoSProfile(depth=42)):
        assert parse_qos_keyexpr(qos_keyexpr(q)) == q
    assert parse_qos_keyexpr("::,7:,:,:,,") == DEFAULT.with_depth(7)
    for bad in ("", "::,7", "9::,7:,:,:,,", "::,x:,:,:,,"):
        assert parse_qos_keyexpr(bad) is None


def test_tokens_parse_back_to_their_entities():
    nn = parse_token(LISTENER_NN)
    assert nn is not None and nn.kind == "NN" and nn.node == NodeId("listener", "/") and nn.domain_id == 2
    mp = parse_token(TALKER_MP)
    assert mp is not None and (mp.kind, mp.topic, mp.dds_type, mp.type_hash) == \
        ("MP", "/chatter", "std_msgs::msg::dds_::String_", STRING_HASH)
    assert mp.qos == DEFAULT.with_depth(7) and mp.zid == "8b20917502ee955ac4476e0266340d5c" and mp.eid == "10"
    assert mp.participant == bytes.fromhex("8b20917502ee955ac4476e0266340d5c")
    ns = parse_token(endpoint_token(0, "ab", 1, 2, "MS", NodeId("n", "/a/b"), "/a/b/t", "std_msgs/msg/String",
                                    "jazzy", DEFAULT))
    assert ns is not None and ns.node == NodeId("n", "/a/b") and ns.topic == "/a/b/t"
    for bad in ("@ros2_lv/2/z/0/0/XX/%/%/n", "@other/2/z/0/0/NN/%/%/n", "@ros2_lv/2/z/0/0/NN/%/%",
                "@ros2_lv/2/z/0/10/MP/%/%/talker/%chatter", TALKER_MP.replace("::,7:", "bad")):
        assert parse_token(bad) is None


@needs_zenoh
def test_entity_gid_is_xxh3_128_of_the_token_low_then_high_little_endian():
    # XXH3-128 test vector (xxHash): the empty input hashes to 0x99aa06d3014798d8_6001c324468d497f
    assert entity_gid("") == bytes.fromhex("7f498d4624c30160") + bytes.fromhex("d8984701d306aa99")
    assert len(entity_gid(TALKER_MP)) == 16 and entity_gid(TALKER_MP) != entity_gid(LISTENER_MS)


def test_attachment_is_33_bytes_and_round_trips():
    gid = bytes(range(16))
    att = encode_attachment(1, 1_700_000_000_123_456_789, gid)
    assert ATTACHMENT_SIZE == 33 and len(att) == 33
    assert att == (1).to_bytes(8, "little") + (1_700_000_000_123_456_789).to_bytes(8, "little") + b"\x10" + gid
    assert decode_attachment(att) == (1, 1_700_000_000_123_456_789, gid)
    assert decode_attachment(encode_attachment(-5, 0, gid))[0] == -5  # int64, signed
    for bad in (None, b"", att[:-1], att + b"\0", att[:16] + b"\x18" + gid, b"\0" * 77):
        with pytest.raises(ValueError):
            decode_attachment(bad)
    with pytest.raises(ValueError):
        encode_attachment(1, 2, b"\0" * 24)


@needs_zenoh
def test_session_config_defaults_to_a_router_client_without_multicast(monkeypatch, tmp_path):
    from latentstack.transport.zenoh import session_config

    monkeypatch.delenv("ZENOH_SESSION_CONFIG_URI", raising=False)
    cfg = session_config()
    assert json.loads(cfg.get_json("mode")) == "client"
    assert json.loads(cfg.get_json("connect/endpoints")) == ["tcp/localhost:7447"]
    assert json.loads(cfg.get_json("scouting/multicast/enabled")) is False
    lo = session_config("loopback", listen=["tcp/127.0.0.1:7"])
    assert json.loads(lo.get_json("mode")) == "peer" and json.loads(lo.get_json("listen/endpoints")) == \
        ["tcp/127.0.0.1:7"] and json.loads(lo.get_json("connect/endpoints")) == []
    # a user file (TLS, access control) is used as it is; $ZENOH_SESSION_CONFIG_URI names one
    f = tmp_path / "z.json5"
    f.write_text('{ mode: "peer", connect: { endpoints: ["tls/127.0.0.1:7448"] }, '
                 'transport: { link: { tls: { root_ca_certificate: "ca.pem" } } } }')
    monkeypatch.setenv("ZENOH_SESSION_CONFIG_URI", str(f))
    user = session_config()
    assert json.loads(user.get_json("connect/endpoints")) == ["tls/127.0.0.1:7448"]
    assert json.loads(user.get_json("transport/link/tls/root_ca_certificate")) == "ca.pem"
    with pytest.raises(TransportError):
        session_config(str(tmp_path / "missing.json5"))


# ----------------------------------------------------------------------------- two peers on loopback
@pytest.fixture
def peers():
    """Two sessions: one listens on a free 127.0.0.1 port, the other connects (multicast scouting off)."""
    if not zenoh_available():
        pytest.skip("eclipse-zenoh / xxhash not installed")
    from latentstack.transport import make_transport

    ep = free_loopback_endpoint()
    made = []

    def mk(listen: bool = False, **kw):
        t = make_transport("zenoh", domain_id=5, config="loopback", **({"listen": [ep]} if listen else
                                                                        {"connect": [ep]}), **kw)
        made.append(t)
        return t

    a = mk(listen=True)
    yield a, mk
    for t in made:
        t.close()


def _spin_until(transports, cond, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end and not cond():
        for t in transports:
            t.spin_once(0.02)
    return cond()


def test_round_trip_between_two_peers(peers):
    a, mk = peers
    b = mk()
    talker, listener = NodeId("talker"), NodeId("listener", "/robot1")
    got, raw = [], []
    sub = b.create_subscription("/chatter", "std_msgs/msg/String", lambda m: got.append(m.data), node=listener)
    b.create_subscription("/chatter", "std_msgs/msg/String", raw.append, raw=True)
    pub = a.create_publisher("/chatter", "std_msgs/msg/String", node=talker)
    assert pub.key == f"5/chatter/std_msgs::msg::dds_::String_/{STRING_HASH}"
    assert a.wait_for_matches(pub, 1, timeout=10)  # the subscription's MS token reached the publisher's side
    t0 = time.time_ns()
    for i in range(10):
        pub.publish(msgs.string_msg(f"hello {i}"))
    assert _spin_until([b], lambda: len(got) == 10 and len(raw) == 10)
    assert got == [f"hello {i}" for i in range(10)]  # 10/10, in order
    assert raw[0].data == msgs.encode(msgs.string_msg("hello 0")) and raw[0].timestamp_ns >= t0
    assert sub.bad_attachments == 0 and sub.matched_count() == 1
    # the graph as each side sees it: node and endpoint tokens of both sessions
    assert _spin_until([a], lambda: {(e.kind, e.node) for e in a.graph()} >=
                       {("NN", talker), ("NN", listener), ("MP", talker), ("MS", listener)})
    a.unregister_node(talker)
    assert _spin_until([b], lambda: ("NN", talker) not in {(e.kind, e.node) for e in b.graph()})


def test_humble_keys_carry_no_hash(peers):
    _, mk = peers
    b = mk(distro="humble")
    pub = b.create_publisher("/chatter", "std_msgs/msg/String")
    assert pub.key == "5/chatter/std_msgs::msg::dds_::String_/TypeHashNotSupported"
    assert pub.token_key.split("/")[11] == "TypeHashNotSupported"


def test_keep_last_depth_bounds_the_queue(peers):
    a, mk = peers
    b = mk()
    got = []
    sub = b.create_subscription("/q", "std_msgs/msg/String", lambda m: got.append(m.data), DEFAULT.with_depth(3),
                                node=NodeId("n"))
    pub = a.create_publisher("/q", "std_msgs/msg/String", node=NodeId("p"))
    assert a.wait_for_matches(pub, 1, timeout=10)
    for i in range(10):
        pub.publish(msgs.string_msg(str(i)))
    assert _spin_until([], lambda: sub.dropped + len(sub.pending) == 10)  # all arrived, nobody spun yet
    assert len(sub.pending) == 3 and sub.dropped == 7
    b.spin_once()
    assert got == ["7", "8", "9"]  # the newest depth samples, oldest dropped


def test_transient_local_replays_the_last_depth_samples_to_late_joiners(peers):
    a, mk = peers
    tl2 = TRANSIENT_LOCAL.with_depth(2)
    pub = a.create_publisher("/latched", "std_msgs/msg/String", tl2, node=NodeId("p"))
    for i in range(3):
        pub.publish(msgs.string_msg(f"m{i}"))
    b = mk()
    late, volatile = [], []
    b.create_subscription("/latched", "std_msgs/msg/String", lambda m: late.append(m.data), tl2, node=NodeId("s"))
    b.create_subscription("/latched", "std_msgs/msg/String", lambda m: volatile.append(m.data), DEFAULT,
                          node=NodeId("v"))
    assert _spin_until([b], lambda: len(late) >= 2)
    time.sleep(0.3)
    b.spin_once()
    assert late == ["m1", "m2"] and volatile == []  # history for the TRANSIENT_LOCAL one only
    pub.publish(msgs.string_msg("m3"))
    assert _spin_until([b], lambda: late[-1:] == ["m3"] and volatile == ["m3"])


def test_best_effort_transient_local_and_congestion_control(peers):
    import zenoh

    a, mk = peers
    be_tl = QoSProfile(Reliability.BEST_EFFORT, Durability.TRANSIENT_LOCAL, History.KEEP_LAST, 1)
    pub = a.create_publisher("/be_latched", "std_msgs/msg/String", be_tl, node=NodeId("p"))
    for i in range(3):
        pub.publish(msgs.string_msg(f"m{i}"))
    b = mk()
    late = []
    b.create_subscription("/be_latched", "std_msgs/msg/String", lambda m: late.append(m.data), be_tl, node=NodeId("s"))
    assert _spin_until([b], lambda: late == ["m2"])  # zenoh-ext cache without miss detection (timestamped)
    # rmw_zenoh: RELIABLE + KEEP_ALL blocks on congestion, everything else drops
    keep_all = QoSProfile(Reliability.RELIABLE, Durability.VOLATILE, History.KEEP_ALL, 10)
    blocking = a.create_publisher("/all", "std_msgs/msg/String", keep_all)
    assert blocking._zpub.congestion_control == zenoh.CongestionControl.BLOCK
    assert a.create_publisher("/some", "std_msgs/msg/String")._zpub.congestion_control == zenoh.CongestionControl.DROP
    assert a.create_publisher("/be", "std_msgs/msg/String", SENSOR_DATA)._zpub.reliability == \
        zenoh.Reliability.BEST_EFFORT


def test_unknown_writers_and_graph_tracking_are_bounded(peers, monkeypatch, caplog):
    from latentstack.nodes.base import publisher_filter
    from latentstack.transport.zenoh import ZenohTransport

    monkeypatch.setattr(ZenohTransport, "UNRESOLVED_MAX", 2)
    monkeypatch.setattr(ZenohTransport, "UNRESOLVED_WAIT_S", 60.0)
    monkeypatch.setattr(ZenohTransport, "MAX_ENTITIES", 4)
    a, mk = peers
    bare = mk(liveliness=False)
    got = []
    sub = a.create_subscription("/cmd", "std_msgs/msg/String", lambda m: got.append(m.data), node=NodeId("sim"))
    sub.sender_filter = publisher_filter(["policy_node"])
    pub = bare.create_publisher("/cmd", "std_msgs/msg/String")
    time.sleep(0.3)
    for i in range(5):
        pub.publish(msgs.string_msg(str(i)))
    assert _spin_until([a], lambda: sub.refused_senders == 3)  # 2 wait (bounded), the 3 oldest pushed out
    assert [it[1] for it in sub.unresolved] == [msgs.encode(msgs.string_msg(s)) for s in ("3", "4")] and not got
    # more tokens than MAX_ENTITIES: the graph table stops growing (logged, rate-limited)
    for i in range(6):
        a.register_node(NodeId(f"n{i}"))
    time.sleep(0.3)
    a.spin_once()
    assert len(a.graph()) == 4
    assert any("tracked (bounded)" in r.getMessage() for r in caplog.records)


def test_samples_without_a_valid_attachment_are_dropped_and_counted(peers):
    a, mk = peers
    b = mk()
    got = []
    sub = b.create_subscription("/chatter", "std_msgs/msg/String", lambda m: got.append(m.data), node=NodeId("s"))
    raw_pub = a.session.declare_publisher(sub.key)  # a bare zenoh writer on the rmw_zenoh key
    assert _spin_until([], lambda: raw_pub.matching_status.matching)
    data = msgs.encode(msgs.string_msg("x"))
    raw_pub.put(data)  # no attachment
    raw_pub.put(data, attachment=b"\0" * 32)  # truncated
    raw_pub.put(data, attachment=b"\0" * 16 + b"\x18" + b"\0" * 16)  # wrong GID length byte
    raw_pub.put(data, attachment=encode_attachment(1, time.time_ns(), b"\1" * 16))  # valid (unknown GID)
    assert _spin_until([b], lambda: got == ["x"])
    assert sub.bad_attachments == 3 and sub.received == 1
    assert sub.rate_log.suppressed["attachment"] == 0  # 3 lines: within the burst
    for _ in range(10):
        raw_pub.put(data)
    assert _spin_until([b], lambda: sub.bad_attachments == 13)
    assert sub.rate_log.suppressed["attachment"] == 8  # rate-limited: 5 lines per window


def test_allow_list_by_node_name_from_liveliness_tokens(peers, monkeypatch):
    from latentstack.nodes.base import publisher_filter
    from latentstack.transport.zenoh import ZenohTransport

    monkeypatch.setattr(ZenohTransport, "UNRESOLVED_WAIT_S", 0.5)
    a, mk = peers
    good_t, bad_t, bare_t = mk(), mk(), mk(liveliness=False)
    got = []
    sub = a.create_subscription("/cmd", "std_msgs/msg/String", lambda m: got.append(m.data), node=NodeId("sim"))
    sub.sender_filter = publisher_filter(["policy_node"])
    senders = []
    inner = sub.sender_filter
    sub.sender_filter = lambda s: (senders.append(s), inner(s))[1]
    pubs = {"good": good_t.create_publisher("/cmd", "std_msgs/msg/String", node=NodeId("policy_node")),
            "bad": bad_t.create_publisher("/cmd", "std_msgs/msg/String", node=NodeId("intruder")),
            "bare": bare_t.create_publisher("/cmd", "std_msgs/msg/String", node=NodeId("policy_node"))}
    for t, p in [(good_t, pubs["good"]), (bad_t, pubs["bad"])]:
        assert t.wait_for_matches(p, 1, timeout=10)
    time.sleep(0.3)  # the bare session announces nothing: give its route time to settle
    for name, p in pubs.items():
        for i in range(3):
            p.publish(msgs.string_msg(f"{name}{i}"))
    assert _spin_until([a], lambda: len(got) == 3 and sub.refused_senders == 6)
    assert got == ["good0", "good1", "good2"]
    assert not sub.unresolved  # the bare writer's samples waited 0.5 s for a token, then were refused
    good = next(s for s in senders if s.node is not None and s.node.name == "policy_node")
    assert good.gid == pubs["good"].gid and good.participant == good_t.gid
    # a guid: entry admits a writer by its GID (the token-less one, here) without any node name
    sub.sender_filter = publisher_filter([f"guid:{pubs['bare'].gid[:12].hex()}"])
    pubs["bare"].publish(msgs.string_msg("bare-ok"))
    assert _spin_until([a], lambda: got[-1] == "bare-ok")


def test_a_missing_router_is_a_clear_error():
    if not zenoh_available():
        pytest.skip("eclipse-zenoh / xxhash not installed")
    from latentstack.transport import make_transport

    t0 = time.monotonic()
    with pytest.raises(TransportError, match="cannot open a zenoh session"):
        make_transport("zenoh", config="router", connect=[free_loopback_endpoint()])
    assert time.monotonic() - t0 < 10


# ----------------------------------------------------------------------------- graphs over zenoh == evaluate
def _metaworld_spec():
    from latentstack.ros.graph import load_graph

    spec = load_graph("ros/graphs/metaworld.yaml")
    spec.node("sim_bridge").params.update(tasks=["coffee-button-v3"], episodes_per_task=2, max_episode_steps=10)
    spec.node("policy_node").params["policy"] = "vla_tiny"  # deterministic init: the same weights in every process
    spec.validate()
    return spec


def _evaluate_reference():
    import torch

    from latentstack.policies.factory import make_policy
    from latentstack.sim.evaluation import evaluate
    from latentstack.sim.suites import TaskSpec, load_suite

    suite = load_suite("metaworld_mt6")
    sub = dataclasses.replace(suite, tasks=(TaskSpec("coffee-button-v3", suite.task("coffee-button").instruction, 10),))
    n = torch.get_num_threads()
    try:
        return evaluate(sub, {"p": make_policy("vla_tiny")}, episodes_per_task=2, progress=False)["p"]
    finally:
        torch.set_num_threads(n)


@needs_zenoh
def test_metaworld_graph_over_zenoh_matches_evaluate_in_one_process_and_multiprocess():
    pytest.importorskip("metaworld")
    os.environ.setdefault("MUJOCO_GL", "egl")
    from latentstack.ros.launcher import run_inprocess, run_multiprocess

    ref = _evaluate_reference()
    one = run_inprocess(_metaworld_spec(), transport="zenoh", timeout=120)
    assert one.finished and one.results == ref.episodes
    multi = run_multiprocess(_metaworld_spec(), transport="zenoh", timeout=120)
    assert multi.finished and multi.results == ref.episodes
    for run in (one, multi):
        assert run.stats["sim_bridge"]["counters"].get("unexpected_action", 0) == 0
