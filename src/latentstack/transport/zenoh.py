"""zenoh backend speaking the rmw_zenoh wire contract (spec ros2.md section 2), so an rmw_zenoh graph sees our nodes.

- data key ``<domain>/<fq topic without leading slash>/<DDS type name>/<type hash>`` (Humble: the literal
  ``TypeHashNotSupported``); payload: the CDR bytes as they are (encapsulation header included, encoding
  ``application/cdr``);
- every put carries the 33-byte attachment ``<q sequence number><q source timestamp ns><B 16><16-byte GID>``;
  a subscription drops samples without a valid one (counted in ``bad_attachments``, rate-limited log), as
  rmw_zenoh does ("Unable to obtain attachment"); the 77-byte named-field layout of rmw_zenoh 0.2.0-0.2.3
  counts as invalid;
- graph: liveliness tokens ``@ros2_lv/<domain>/<zid>/<nid>/<nid>/NN/<enclave>/<ns>/<node>`` per node and
  ``.../<nid>/<eid>/MP|MS/<enclave>/<ns>/<node>/<topic>/<type>/<hash>/<qos>`` per endpoint (``/`` -> ``%``),
  entity GID = XXH3-128 of the token string (low 64 bits little-endian, then high 64), as rmw_zenoh computes it;
- QoS as rmw_zenoh: RELIABLE/BEST_EFFORT pick the zenoh reliability, RELIABLE + KEEP_ALL blocks on congestion
  (others drop), KEEP_LAST depth bounds each subscription's queue (oldest dropped), TRANSIENT_LOCAL =
  zenoh-ext AdvancedPublisher cache (``depth`` samples, publisher detection, sample-miss heartbeat when
  RELIABLE) + AdvancedSubscriber history query of late-joined publishers. No QoS is "incompatible" on zenoh;
- each received sample's :class:`~latentstack.transport.base.Sender` comes from the attachment's GID, its node
  from the liveliness token with that GID (so ``allowed_publishers`` allow-lists work as on DDS); a sample whose
  GID has no token yet waits briefly (bounded) and is then refused, like the DDS backend's ``unresolved``.
  A session made with ``liveliness=False`` announces nothing and tracks no graph (it knows only its own
  writers' nodes). Like DDS without DDS Security, none of this is authenticated (README threat model): the
  authenticated route is zenoh TLS/mTLS with access control, configured in a session file (below).

Sessions (:func:`session_config`): by default a **client of a zenoh router** at ``tcp/localhost:7447`` (start
``zenohd`` or ``ros2 run rmw_zenoh_cpp rmw_zenohd``) with multicast scouting off; ``config="loopback"`` is a
peer that talks to nothing but the endpoints it is given (tests: one peer listens on ``tcp/127.0.0.1:<port>``,
the other connects); ``config=<file.json5>`` is a full zenoh configuration, the place for TLS/mTLS and access
control (the authenticated route of the README threat model), e.g.::

    { mode: "client", connect: { endpoints: ["tls/router.example:7447"] },
      transport: { link: { tls: { root_ca_certificate: "ca.pem", enable_mtls: true,
                                  connect_private_key: "key.pem", connect_certificate: "cert.pem" } } } }

``$ZENOH_SESSION_CONFIG_URI`` (rmw_zenoh's variable) names such a file when ``config`` is not given. Timestamping
is switched on in every session (zenoh-ext's publication cache needs it for BEST_EFFORT + TRANSIENT_LOCAL).

Delivery: zenoh calls back on its own threads; samples go into per-subscription bounded queues and
:meth:`ZenohTransport.spin_once` delivers them on the caller's thread in arrival order. Services are not
implemented here (topics only).
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from latentstack import msgs

from .base import (
    Callback,
    NodeId,
    Publisher,
    Sender,
    Subscription,
    TopicTypeError,
    Transport,
    TransportError,
    log,
)
from .names import resolve_topic
from .qos import Durability, History, QoSProfile, Reliability
from .ratelimit import RateLimitedLog

__all__ = [
    "ADMIN_SPACE",
    "ATTACHMENT_SIZE",
    "DEFAULT_ROUTER",
    "TYPE_HASH_NOT_SUPPORTED",
    "LivelinessEntity",
    "ZenohTransport",
    "data_keyexpr",
    "decode_attachment",
    "demangle_name",
    "encode_attachment",
    "endpoint_token",
    "entity_gid",
    "free_loopback_endpoint",
    "mangle_name",
    "node_token",
    "open_loopback_router",
    "parse_qos_keyexpr",
    "parse_token",
    "qos_keyexpr",
    "session_config",
    "type_hash_string",
    "zenoh_available",
]

ADMIN_SPACE = "@ros2_lv"
TYPE_HASH_NOT_SUPPORTED = "TypeHashNotSupported"  # what Humble's rmw_zenoh writes in the hash slot
DEFAULT_ROUTER = "tcp/localhost:7447"
ENCODING = "application/cdr"
_ATTACHMENT = struct.Struct("<qqB16s")  # rmw_zenoh >= 0.2.4 (zenoh-ext serializer: i64, i64, len-prefixed [u8; 16])
ATTACHMENT_SIZE = _ATTACHMENT.size  # 33
GID_SIZE = 16

# rmw enums (rmw/types.h) as written in the token's QoS segment; rmw_zenoh leaves a field empty when it equals
# its default (RELIABLE, VOLATILE, KEEP_LAST, depth 42, infinite deadline/lifespan/lease, AUTOMATIC liveliness).
_REL = {Reliability.RELIABLE: 1, Reliability.BEST_EFFORT: 2}
_DUR = {Durability.TRANSIENT_LOCAL: 1, Durability.VOLATILE: 2}
_HIST = {History.KEEP_LAST: 1, History.KEEP_ALL: 2}
DEFAULT_DEPTH = 42  # rmw_zenoh's depth for depth 0 / the QoS-segment default


def zenoh_available() -> bool:
    """True when eclipse-zenoh (the ``ros`` extra) and xxhash (the GID hash) import."""
    try:
        import xxhash  # noqa: F401
        import zenoh  # noqa: F401
    except ImportError:
        return False
    return True


# ----------------------------------------------------------------------------- wire strings
def mangle_name(name: str) -> str:
    """rmw_zenoh ``mangle_name``: every ``/`` becomes ``%`` (so ``/`` alone is ``%``)."""
    return name.replace("/", "%")


def demangle_name(name: str) -> str:
    return name.replace("%", "/")


def type_hash_string(msgtype: str, distro: str) -> str:
    """The hash slot of keys and tokens: ``RIHS01_<hex>``; Humble's rmw_zenoh writes ``TypeHashNotSupported``."""
    return TYPE_HASH_NOT_SUPPORTED if distro == "humble" else msgs.rihs01(msgtype, distro)


def data_keyexpr(domain_id: int, topic: str, msgtype: str, distro: str) -> str:
    """``0/chatter/std_msgs::msg::dds_::String_/RIHS01_df66...`` for ``/chatter`` (rmw_zenoh ``TopicInfo``)."""
    fq = resolve_topic(topic)
    return f"{int(domain_id)}/{fq.strip('/')}/{msgs.dds_type_name(msgtype)}/{type_hash_string(msgtype, distro)}"


def qos_keyexpr(qos: QoSProfile) -> str:
    """The token's QoS segment ``<rel>:<dur>:<hist>,<depth>:<deadline s>,<ns>:<lifespan s>,<ns>:<liveliness>,<s>,<ns>``
    with rmw_zenoh's defaults left empty (DEFAULT = RELIABLE/VOLATILE/KEEP_LAST 10 -> ``::,10:,:,:,,``)."""
    depth = qos.depth or DEFAULT_DEPTH  # best_available_qos: depth 0 -> 42
    rel = "" if qos.reliability == Reliability.RELIABLE else str(_REL[qos.reliability])
    dur = "" if qos.durability == Durability.VOLATILE else str(_DUR[qos.durability])
    hist = "" if qos.history == History.KEEP_LAST else str(_HIST[qos.history])
    dep = "" if depth == DEFAULT_DEPTH else str(depth)
    return f"{rel}:{dur}:{hist},{dep}:,:,:,,"  # deadline, lifespan, liveliness: always the defaults here


def parse_qos_keyexpr(text: str) -> QoSProfile | None:
    """Inverse of :func:`qos_keyexpr` for the four knobs a :class:`QoSProfile` has; None when malformed."""
    parts = text.split(":")
    if len(parts) < 6:
        return None
    hist = parts[2].split(",")
    if len(hist) < 2:
        return None
    try:
        rel = {"": Reliability.RELIABLE, "0": Reliability.RELIABLE, "1": Reliability.RELIABLE,
               "2": Reliability.BEST_EFFORT, "4": Reliability.RELIABLE}[parts[0]]
        dur = {"": Durability.VOLATILE, "0": Durability.VOLATILE, "1": Durability.TRANSIENT_LOCAL,
               "2": Durability.VOLATILE}[parts[1]]
        his = {"": History.KEEP_LAST, "0": History.KEEP_LAST, "1": History.KEEP_LAST, "2": History.KEEP_ALL}[hist[0]]
        depth = int(hist[1]) if hist[1] else DEFAULT_DEPTH
        return QoSProfile(rel, dur, his, depth if depth > 0 else DEFAULT_DEPTH)
    except (KeyError, ValueError):
        return None


def node_token(domain_id: int, zid: str, nid: int, node: NodeId, enclave: str = "/") -> str:
    """``@ros2_lv/<domain>/<zid>/<nid>/<nid>/NN/<enclave>/<ns>/<node>`` (a node's entity id is its node id)."""
    return "/".join([ADMIN_SPACE, str(int(domain_id)), zid, str(nid), str(nid), "NN", mangle_name(enclave),
                     mangle_name(node.namespace), mangle_name(node.name)])


def endpoint_token(domain_id: int, zid: str, nid: int, eid: int, kind: str, node: NodeId, topic: str,
                   msgtype: str, distro: str, qos: QoSProfile, enclave: str = "/") -> str:
    """``.../<nid>/<eid>/MP|MS/<enclave>/<ns>/<node>/<%topic>/<DDS type>/<hash>/<qos>`` (rmw_zenoh ``Entity``)."""
    if kind not in ("MP", "MS", "SS", "SC"):
        raise ValueError(f"endpoint kind must be MP, MS, SS or SC, got {kind!r}")
    fq = resolve_topic(topic)
    return "/".join([ADMIN_SPACE, str(int(domain_id)), zid, str(nid), str(eid), kind, mangle_name(enclave),
                     mangle_name(node.namespace), mangle_name(node.name), mangle_name(fq),
                     mangle_name(msgs.dds_type_name(msgtype)), mangle_name(type_hash_string(msgtype, distro)),
                     qos_keyexpr(qos)])


def entity_gid(token: str) -> bytes:
    """rmw_zenoh's entity GID: XXH3-128 of the liveliness token string, ``low64`` then ``high64``, little-endian."""
    try:
        import xxhash
    except ImportError as exc:  # pragma: no cover - installed with the project's environment
        raise TransportError("the zenoh transport needs xxhash (pip install xxhash) for rmw_zenoh GIDs") from exc
    return xxhash.xxh3_128_intdigest(token.encode()).to_bytes(16, "little")


def encode_attachment(sequence_number: int, source_timestamp_ns: int, gid: bytes) -> bytes:
    """The 33-byte rmw_zenoh attachment of every put."""
    if len(gid) != GID_SIZE:
        raise ValueError(f"GID must be {GID_SIZE} bytes, got {len(gid)}")
    return _ATTACHMENT.pack(int(sequence_number), int(source_timestamp_ns), GID_SIZE, gid)


def decode_attachment(data: bytes | None) -> tuple[int, int, bytes]:
    """``(sequence number, source timestamp ns, GID)``; ValueError unless exactly the 33-byte layout."""
    if data is None:
        raise ValueError("no attachment")
    if len(data) != ATTACHMENT_SIZE:
        raise ValueError(f"attachment of {len(data)} bytes, expected {ATTACHMENT_SIZE}")
    seq, stamp, n, gid = _ATTACHMENT.unpack(data)
    if n != GID_SIZE:
        raise ValueError(f"attachment GID length byte is {n}, expected {GID_SIZE}")
    return seq, stamp, gid


@dataclass(frozen=True)
class LivelinessEntity:
    """One parsed graph token (node or endpoint)."""

    kind: str  # NN | MP | MS | SS | SC
    domain_id: int
    zid: str
    nid: str
    eid: str
    node: NodeId
    enclave: str
    topic: str | None = None
    dds_type: str | None = None
    type_hash: str | None = None
    qos: QoSProfile | None = None

    @property
    def participant(self) -> bytes:
        """The zenoh session id as 16 bytes (what :class:`Sender` calls the participant)."""
        return zid_bytes(self.zid)


def zid_bytes(zid: str) -> bytes:
    """A zenoh id string (hex, leading zeros dropped) as 16 bytes, most significant first."""
    try:
        return bytes.fromhex(zid.rjust(32, "0"))[-16:]
    except ValueError:
        return zid.encode()[:16]


def parse_token(keyexpr: str) -> LivelinessEntity | None:
    """A graph token as rmw_zenoh's ``Entity::make(keyexpr)`` reads it; None when it is not a valid one."""
    parts = keyexpr.split("/")
    if len(parts) < 9 or parts[0] != ADMIN_SPACE or any(not p for p in parts):
        return None
    kind = parts[5]
    if kind not in ("NN", "MP", "MS", "SS", "SC"):
        return None
    try:
        domain = int(parts[1])
    except ValueError:
        return None
    node = NodeId(demangle_name(parts[8]), demangle_name(parts[7]))
    if kind == "NN":
        return LivelinessEntity(kind, domain, parts[2], parts[3], parts[4], node, demangle_name(parts[6]))
    if len(parts) < 13:
        return None
    qos = parse_qos_keyexpr(parts[12])
    if qos is None:
        return None
    return LivelinessEntity(kind, domain, parts[2], parts[3], parts[4], node, demangle_name(parts[6]),
                            demangle_name(parts[9]), demangle_name(parts[10]), demangle_name(parts[11]), qos)


# ----------------------------------------------------------------------------- session configuration
def session_config(config: str | None = None, *, mode: str | None = None, connect: Sequence[str] | None = None,
                   listen: Sequence[str] | None = None) -> Any:
    """A ``zenoh.Config``.

    ``config``: None -> ``$ZENOH_SESSION_CONFIG_URI`` if set, else ``"router"``; ``"router"`` (or ``"default"``):
    a client of the zenoh router at ``tcp/localhost:7447``, multicast scouting off; ``"loopback"``: a peer with
    no listeners or connections except those given (multicast and gossip off: it meets nobody by itself; two
    such peers meet when one listens and the other connects; to meet through a router, use ``mode="client"``);
    anything else: a zenoh JSON5 configuration file (TLS, access control, ...), used as it is.
    ``mode``/``connect``/``listen`` override the chosen configuration.
    """
    import zenoh

    if config is None:
        config = os.environ.get("ZENOH_SESSION_CONFIG_URI") or "router"
    if config in ("router", "default"):
        cfg = zenoh.Config()
        cfg.insert_json5("mode", json.dumps("client"))
        cfg.insert_json5("connect/endpoints", json.dumps([DEFAULT_ROUTER]))
        cfg.insert_json5("scouting/multicast/enabled", "false")
    elif config == "loopback":
        cfg = zenoh.Config()
        cfg.insert_json5("mode", json.dumps("peer"))
        cfg.insert_json5("listen/endpoints", "[]")  # not the default tcp/[::]:0 on every interface
        cfg.insert_json5("connect/endpoints", "[]")
        cfg.insert_json5("scouting/multicast/enabled", "false")
        cfg.insert_json5("scouting/gossip/enabled", "false")
    else:
        if not os.path.isfile(config):
            raise TransportError(f"no zenoh configuration file {config}")
        cfg = zenoh.Config.from_file(config)
    if mode is not None:
        cfg.insert_json5("mode", json.dumps(mode))
    if connect is not None:
        cfg.insert_json5("connect/endpoints", json.dumps(list(connect)))
    if listen is not None:
        cfg.insert_json5("listen/endpoints", json.dumps(list(listen)))
    # zenoh-ext's publication cache without sample-miss detection (BEST_EFFORT + TRANSIENT_LOCAL) needs timestamps
    cfg.insert_json5("timestamping/enabled", "{router: true, peer: true, client: true}")
    return cfg


def free_loopback_endpoint() -> str:
    """``tcp/127.0.0.1:<a free port>`` (tests, the multi-process launcher's private router)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"tcp/127.0.0.1:{port}"


def open_loopback_router(endpoint: str | None = None) -> tuple[Any, str]:
    """A zenoh session in router mode listening on ``endpoint`` (default: a free loopback port), for a graph
    whose processes connect to it; returns ``(session, endpoint)`` (close the session to stop it)."""
    import zenoh

    ep = endpoint or free_loopback_endpoint()
    cfg = session_config("loopback", mode="router", listen=[ep])
    return zenoh.open(cfg), ep


# ----------------------------------------------------------------------------- endpoints
class _ZenohPublisher(Publisher):
    transport: ZenohTransport

    def __init__(self, transport: ZenohTransport, topic: str, msgtype: str, qos: QoSProfile, node: NodeId | None,
                 key: str, token_key: str, zpub: Any, token: Any) -> None:
        super().__init__(transport, topic, msgtype, qos, node)
        self.key = key
        self.token_key = token_key
        self.gid = entity_gid(token_key)
        self._zpub = zpub
        self._token = token
        self._seq = itertools.count(1)  # rmw_zenoh numbers from 1

    def _write(self, data: bytes) -> None:
        att = encode_attachment(next(self._seq), time.time_ns(), self.gid)
        try:
            self._zpub.put(data, attachment=att)
        except Exception as exc:  # zenoh.ZError: session closed, ...
            raise TransportError(f"zenoh put on {self.key} failed: {exc}") from exc

    def matched_count(self) -> int:
        """Subscriptions announced (liveliness ``MS`` tokens) on this key, this session's included."""
        return self.transport._count_endpoints("MS", self.topic, self.msgtype)

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        self.transport._drop_endpoint(self, [self._token, self._zpub])


class _ZenohSubscription(Subscription):
    transport: ZenohTransport

    def __init__(self, transport: ZenohTransport, topic: str, msgtype: str, callback: Callback, qos: QoSProfile,
                 raw: bool, node: NodeId | None, key: str, token_key: str) -> None:
        super().__init__(transport, topic, msgtype, callback, qos, raw, node)
        self.key = key
        self.token_key = token_key
        self.gid = entity_gid(token_key)
        cap = transport.keep_all_cap if qos.history == History.KEEP_ALL else (qos.depth or DEFAULT_DEPTH)
        # (arrival order, CDR, source stamp, writer GID, first seen monotonic s); KEEP_LAST: the oldest goes
        self.pending: deque[tuple[int, bytes, int, bytes, float]] = deque(maxlen=cap)
        self.unresolved: deque[tuple[int, bytes, int, bytes, float]] = deque(maxlen=ZenohTransport.UNRESOLVED_MAX)
        self.dropped = 0  # pushed out of the full queue before anyone spun
        self.bad_attachments = 0  # samples without a valid rmw_zenoh attachment (never delivered)
        self._zsub: Any = None
        self._token: Any = None

    def matched_count(self) -> int:
        return self.transport._count_endpoints("MP", self.topic, self.msgtype)

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        self.transport._drop_endpoint(self, [self._token, self._zsub])


# ----------------------------------------------------------------------------- transport
class ZenohTransport(Transport):
    """One zenoh session; publishers/subscribers on rmw_zenoh keys with graph tokens and attachments.

    ``domain_id`` defaults to ``$ROS_DOMAIN_ID`` (else 0); ``config``/``mode``/``connect``/``listen``: see
    :func:`session_config`; ``liveliness=False`` declares no graph tokens (invisible to ``ros2 node list``).
    """

    kind = "zenoh"
    UNRESOLVED_MAX = 64  # samples per subscription held while their writer's token is unknown
    UNRESOLVED_WAIT_S = 2.0  # how long such a sample waits for the writer's liveliness token
    MAX_ENTITIES = 65_536  # graph tokens tracked (a flood is cut off, logged)
    KEEP_ALL_CAP = 10_000  # samples a KEEP_ALL subscription queues (the in-process transport's cap)

    def __init__(
        self, domain_id: int | None = None, distro: str | None = None, *, config: str | None = None,
        mode: str | None = None, connect: Sequence[str] | None = None, listen: Sequence[str] | None = None,
        enclave: str = "/", liveliness: bool = True, keep_all_cap: int = KEEP_ALL_CAP,
    ) -> None:
        super().__init__(distro)
        if keep_all_cap < 1:
            raise ValueError(f"keep_all_cap must be >= 1, got {keep_all_cap}")
        if not zenoh_available():
            raise TransportError("the zenoh transport needs eclipse-zenoh and xxhash (pip install 'latentstack[ros]' "
                                 "xxhash)")
        import zenoh

        self.domain_id = int(os.environ.get("ROS_DOMAIN_ID", "0")) if domain_id is None else int(domain_id)
        if self.domain_id < 0:
            raise ValueError(f"domain id must be >= 0, got {self.domain_id}")
        self.enclave = enclave
        self.keep_all_cap = int(keep_all_cap)
        self.liveliness = liveliness
        try:
            self.session = zenoh.open(session_config(config, mode=mode, connect=connect, listen=listen))
        except zenoh.ZError as exc:
            raise TransportError(f"cannot open a zenoh session ({config or 'router'}): {exc}") from exc
        self.zid = str(self.session.zid())
        self.gid = zid_bytes(self.zid)  # stands in for a DDS participant GUID
        self._cv = threading.Condition(threading.RLock())
        self._order = itertools.count()
        self._ids = itertools.count()  # rmw_zenoh: one counter for node and entity ids per context
        self._nodes: dict[NodeId, tuple[int, Any]] = {}
        self._topics: dict[str, str] = {}
        self._entities: dict[str, LivelinessEntity] = {}  # graph: token keyexpr -> entity (everyone's)
        self._gid_entities: dict[bytes, LivelinessEntity] = {}  # endpoint GID -> its token
        self._graph_log = RateLimitedLog(log)
        self._closing = False
        self._lv_sub = None
        if liveliness:  # the graph: every token of this domain, present and future
            self._lv_sub = self.session.liveliness().declare_subscriber(
                f"{ADMIN_SPACE}/{self.domain_id}/**", self._callback(self._on_token), history=True)

    @staticmethod
    def _callback(fn: Callable[[Any], None]) -> Any:
        """Runs ``fn`` on the zenoh thread that received the sample (no per-subscriber Python thread), so
        samples of one session are queued in the order they were put."""
        from zenoh.handlers import Callback as ZCallback

        return ZCallback(fn, indirect=False)

    # -- graph
    def _on_token(self, sample: Any) -> None:
        import zenoh

        key = str(sample.key_expr)
        ent = parse_token(key)
        if ent is None:
            self._graph_log.log("token", logging.WARNING, "ignored malformed liveliness token %s", key)
            return
        with self._cv:
            if sample.kind == zenoh.SampleKind.DELETE:
                self._entities.pop(key, None)
                if ent.kind != "NN":
                    self._gid_entities.pop(entity_gid(key), None)
            else:
                if key not in self._entities and len(self._entities) >= self.MAX_ENTITIES:
                    self._graph_log.log("flood", logging.WARNING, "ignored liveliness token %s: %d tracked (bounded)",
                                        key, len(self._entities))
                    return
                self._entities[key] = ent
                if ent.kind != "NN":
                    self._gid_entities[entity_gid(key)] = ent
            self._cv.notify_all()  # a waiting sample's writer may now be known

    def graph(self) -> list[LivelinessEntity]:
        """Every node/endpoint token seen in this domain (this session's included)."""
        with self._cv:
            return list(self._entities.values())

    def _count_endpoints(self, kind: str, topic: str, msgtype: str) -> int:
        dds_type, h = msgs.dds_type_name(msgtype), type_hash_string(msgtype, self.distro)
        with self._cv:
            return sum(1 for e in self._entities.values()
                       if e.kind == kind and e.topic == topic and e.dds_type == dds_type and e.type_hash == h)

    def register_node(self, node: NodeId) -> None:
        with self._cv:
            if node in self._nodes or self.closed:
                return
            nid = next(self._ids)
            self._nodes[node] = (nid, None)
        token = None
        if self.liveliness:
            token = self.session.liveliness().declare_token(node_token(self.domain_id, self.zid, nid, node,
                                                                       self.enclave))
        with self._cv:
            self._nodes[node] = (nid, token)

    def unregister_node(self, node: NodeId) -> None:
        with self._cv:
            entry = self._nodes.pop(node, None)
        if entry is not None and entry[1] is not None:
            self._undeclare(entry[1])

    def _node_id(self, node: NodeId | None) -> int:
        if node is None:
            return -1
        self.register_node(node)
        return self._nodes[node][0]

    # -- endpoints
    def _check_type(self, topic: str, msgtype: str) -> None:
        with self._cv:
            have = self._topics.setdefault(topic, msgtype)
        if have != msgtype:
            raise TopicTypeError(f"topic {topic} is {have} here, cannot use it as {msgtype}")

    def _endpoint_keys(self, kind: str, topic: str, msgtype: str, qos: QoSProfile, node: NodeId | None) -> tuple[str, str]:
        nid = self._node_id(node)
        eid = next(self._ids)
        # an endpoint without a node declares no token (a bare zenoh app); its GID still hashes a token string
        owner = node if node is not None else NodeId("_bare_zenoh_endpoint")
        token_key = endpoint_token(self.domain_id, self.zid, max(nid, 0), eid, kind, owner, topic, msgtype,
                                   self.distro, qos, self.enclave)
        return data_keyexpr(self.domain_id, topic, msgtype, self.distro), token_key

    def _declare_token(self, token_key: str, node: NodeId | None) -> Any:
        if node is None or not self.liveliness:
            return None
        return self.session.liveliness().declare_token(token_key)

    def _create_publisher(self, topic: str, msgtype: str, qos: QoSProfile, node: NodeId | None) -> Publisher:
        import zenoh

        self._check_type(topic, msgtype)
        key, token_key = self._endpoint_keys("MP", topic, msgtype, qos, node)
        reliable = qos.reliability == Reliability.RELIABLE
        opts: dict[str, Any] = {
            "encoding": zenoh.Encoding(ENCODING),
            "reliability": zenoh.Reliability.RELIABLE if reliable else zenoh.Reliability.BEST_EFFORT,
            "congestion_control": zenoh.CongestionControl.BLOCK if reliable and qos.history == History.KEEP_ALL
            else zenoh.CongestionControl.DROP,
        }
        if qos.durability == Durability.TRANSIENT_LOCAL:
            import zenoh.ext as zx

            zpub = zx.declare_advanced_publisher(
                self.session, key, cache=zx.CacheConfig(qos.depth or DEFAULT_DEPTH), publisher_detection=True,
                sample_miss_detection=zx.MissDetectionConfig(heartbeat=None, sporadic_heartbeat=0.5) if reliable
                else None, **opts)
        else:
            zpub = self.session.declare_publisher(key, **opts)
        token = self._declare_token(token_key, node)
        pub = _ZenohPublisher(self, topic, msgtype, qos, node, key, token_key, zpub, token)
        if node is not None:  # our own writers are known at once (no wait for our token to loop back)
            with self._cv:
                self._gid_entities[pub.gid] = parse_token(token_key)  # type: ignore[assignment]
        return pub

    def _create_subscription(
        self, topic: str, msgtype: str, callback: Callback, qos: QoSProfile, raw: bool, node: NodeId | None
    ) -> Subscription:
        self._check_type(topic, msgtype)
        key, token_key = self._endpoint_keys("MS", topic, msgtype, qos, node)
        sub = _ZenohSubscription(self, topic, msgtype, callback, qos, raw, node, key, token_key)
        handler = self._callback(lambda sample: self._on_sample(sub, sample))
        if qos.durability == Durability.TRANSIENT_LOCAL:
            import zenoh.ext as zx

            sub._zsub = zx.declare_advanced_subscriber(
                self.session, key, handler, subscriber_detection=True,
                history=zx.HistoryConfig(detect_late_publishers=True, max_samples=qos.depth or DEFAULT_DEPTH),
                recovery=zx.RecoveryConfig(periodic_queries=None, heartbeat=True)
                if qos.reliability == Reliability.RELIABLE else None)
        else:
            sub._zsub = self.session.declare_subscriber(key, handler)
        sub._token = self._declare_token(token_key, node)
        return sub

    def _on_sample(self, sub: _ZenohSubscription, sample: Any) -> None:
        """zenoh thread: check the attachment, queue the bytes (bounded); spin_once delivers."""
        import zenoh

        if sub.closed or sample.kind != zenoh.SampleKind.PUT:
            return
        att = sample.attachment
        try:
            _, stamp, gid = decode_attachment(None if att is None else att.to_bytes())
        except ValueError as exc:
            with self._cv:
                sub.bad_attachments += 1
                sub.last_error = f"attachment: {exc}"
                sub.rate_log.log("attachment", logging.WARNING, "dropped sample on %s without a valid rmw_zenoh "
                                 "attachment: %s", sub.topic, exc)
            return
        data = sample.payload.to_bytes()
        with self._cv:
            if len(sub.pending) == sub.pending.maxlen:
                sub.dropped += 1
            sub.pending.append((next(self._order), data, stamp, gid, time.monotonic()))
            self._cv.notify_all()

    def _drop_endpoint(self, endpoint: Publisher | Subscription, handles: list[Any]) -> None:
        for h in handles:
            if h is not None:
                self._undeclare(h)
        with self._cv:
            if endpoint in self.publishers:
                self.publishers.remove(endpoint)  # type: ignore[arg-type]
                self._gid_entities.pop(endpoint.gid, None)  # type: ignore[attr-defined]
            if endpoint in self.subscriptions:
                self.subscriptions.remove(endpoint)  # type: ignore[arg-type]
                endpoint.pending.clear()  # type: ignore[attr-defined]
                endpoint.unresolved.clear()  # type: ignore[attr-defined]

    @staticmethod
    def _undeclare(handle: Any) -> None:
        try:
            handle.undeclare()
        except Exception as exc:  # noqa: BLE001 - already gone with the session
            log.debug("zenoh undeclare: %s", exc)

    # -- senders
    def _sender(self, gid: bytes) -> Sender:
        with self._cv:
            ent = self._gid_entities.get(gid)
        if ent is None:
            return Sender(gid, b"", None)
        return Sender(gid, ent.participant, ent.node)

    def _admit(self, sub: _ZenohSubscription, item: tuple[int, bytes, int, bytes, float], now: float) -> bool | None:
        """The sender filter's verdict; "not known yet" samples wait in ``sub.unresolved`` (bounded, timed)."""
        if sub.sender_filter is None:
            return True
        verdict = sub._sender_allowed(self._sender(item[3]), final=False)
        if verdict is None:
            if now - item[4] < self.UNRESOLVED_WAIT_S:
                if len(sub.unresolved) == sub.unresolved.maxlen:
                    sub.refused_senders += 1  # the oldest waiting sample is pushed out: refused
                sub.unresolved.append(item)
                return None
            sub.refused_senders += 1
            sub.rate_log.log("sender", logging.WARNING, "refused message on %s: its writer announced no node "
                             "within %.1f s", sub.topic, self.UNRESOLVED_WAIT_S)
            return False
        return verdict

    # -- execution
    def _take(self) -> tuple[list[tuple[int, _ZenohSubscription, tuple[int, bytes, int, bytes, float]]],
                             list[tuple[int, _ZenohSubscription, tuple[int, bytes, int, bytes, float]]]]:
        """(samples held for an unknown writer, new samples), each in arrival order."""
        with self._cv:
            subs = [s for s in self.subscriptions if not s.closed]
            held, new = [], []
            for s in subs:
                held += [(it[0], s, it) for it in s.unresolved]  # before anything newer
                s.unresolved.clear()
                new += [(it[0], s, it) for it in s.pending]
                s.pending.clear()
        held.sort(key=lambda x: x[0])
        new.sort(key=lambda x: x[0])
        return held, new

    def _has_pending(self) -> bool:
        return any(s.pending for s in self.subscriptions)

    def spin_once(self, timeout: float = 0.0) -> int:
        """Delivers what arrived (waiting up to ``timeout`` s for the first), in arrival order."""
        self._check_open()
        held, new = self._take()
        if not new and timeout > 0:  # held samples alone do not end the wait: a sample or a token does
            with self._cv:
                if not self._has_pending() and not self.closed:
                    self._cv.wait(timeout)
            if self.closed:
                return 0
            more_held, new = self._take()
            held += more_held
        n = 0
        now = time.monotonic()
        for _, sub, item in held + new:
            if sub.closed or not self._admit(sub, item, now):
                continue
            if sub._deliver(item[1], item[2], self._sender(item[3]), checked=True):
                n += 1
        return n

    def wake(self) -> None:
        """Interrupts a blocking :meth:`spin_once` from another thread."""
        with self._cv:
            self._cv.notify_all()

    def close(self) -> None:
        if self.closed:
            return
        self._closing = True
        super().close()  # endpoints undeclare their tokens and zenoh entities
        for node in list(self._nodes):
            self.unregister_node(node)
        if self._lv_sub is not None:
            self._undeclare(self._lv_sub)
        try:
            self.session.close()
        except Exception as exc:  # noqa: BLE001
            log.debug("zenoh session close: %s", exc)
        self.wake()
