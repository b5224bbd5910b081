"""Cyclone DDS backend speaking the rmw_cyclonedds wire contract, so a ROS 2 graph sees our nodes.

- topics ``rt/<fq name>``; types ``pkg::msg::dds_::Type_`` (nested structs named the same way);
- payload: the rosbags CDR bytes as they are (XCDR1 / plain CDR, forced with the
  DataRepresentation QoS), written and taken with cyclonedds-python's raw C-layer calls
  (``ddspy_write`` / ``ddspy_take``): no second serializer on the data path;
- QoS as rmw_cyclonedds ``create_readwrite_qos``: reliability, durability (+ durability
  service for TRANSIENT_LOCAL), KEEP_LAST depth, no autodispose, endpoint USER_DATA
  ``typehash=RIHS01_<hex>;`` (Jazzy; Humble sends none), participant USER_DATA ``enclave=/;``;
- services with rmw_cyclonedds framing (``rq/<svc>Request`` / ``rr/<svc>Reply``, request header
  ``{uint64 guid; int64 seq}``; :mod:`.services`), so ROS 2 tools can call the nodes' parameter services;
- an optional ``ros_discovery_info`` writer so ``ros2 node list`` shows our node names, and a reader of
  everyone's ``ros_discovery_info``, so each received sample is attributed to its writer's node
  (:class:`~latentstack.transport.base.Sender`) for publisher allow-lists.

Network traffic follows the Cyclone configuration: ``config="loopback"`` pins it to
127.0.0.1 with multicast off (tests use that with a random domain id).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
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
from .discovery import (
    DISCOVERY_QOS,
    DISCOVERY_TOPIC,
    DISCOVERY_TYPE,
    NodeEntities,
    decode_participant_info,
    encode_participant_info,
)
from .names import dds_topic_name
from .qos import Durability, History, QoSProfile, Reliability
from .ratelimit import RateLimitedLog
from .services import Service, reply_topic, request_topic

__all__ = ["LOOPBACK_CONFIG", "DdsTransport", "ServiceClient", "dds_available", "discover_endpoints", "loopback_config", "to_dds_qos",
           "type_hash_user_data"]

LOOPBACK_CONFIG = """<CycloneDDS xmlns="https://cdds.io/config"><Domain Id="any">
  <General><Interfaces><NetworkInterface address="127.0.0.1" multicast="false"/></Interfaces>
           <AllowMulticast>false</AllowMulticast></General>
  <Discovery><ParticipantIndex>auto</ParticipantIndex><MaxAutoParticipantIndex>20</MaxAutoParticipantIndex>
             <Peers><Peer address="127.0.0.1"/></Peers></Discovery></Domain></CycloneDDS>"""

KEEP_ALL_CAP = 10_000  # samples a KEEP_ALL reader holds (the in-process transport's cap)
MAX_PARTICIPANTS = 1024  # participants whose ros_discovery_info is tracked (a flood is cut off, logged)
MAX_WRITERS_PER_PARTICIPANT = 4096
_DOMAINS: dict[int, Any] = {}
_DOMAIN_LOCK = threading.Lock()
_ANY = None  # sample mask, filled lazily


def dds_available() -> bool:
    """True when cyclonedds-python imports (the ``ros`` extra)."""
    try:
        import cyclonedds.domain  # noqa: F401
    except (ImportError, OSError):  # not installed, or libddsc failed to load
        return False
    return True


def loopback_config() -> str:
    """The measured loopback-only Cyclone configuration (environment.md section 8)."""
    return LOOPBACK_CONFIG


def _ensure_domain(domain_id: int, config: str | None) -> None:
    """Creates the process-wide Domain with ``config`` once; participants then join it."""
    if config is None:
        return
    from cyclonedds.domain import Domain

    xml = LOOPBACK_CONFIG if config == "loopback" else config
    with _DOMAIN_LOCK:
        if domain_id not in _DOMAINS:
            _DOMAINS[domain_id] = Domain(domain_id, xml)


def type_hash_user_data(msgtype: str, distro: str) -> bytes:
    """Endpoint USER_DATA of rmw_dds_common ``encode_type_hash_for_user_data_qos``."""
    return f"typehash={msgs.rihs01(msgtype, distro)};".encode()


def to_dds_qos(profile: QoSProfile, *, user_data: bytes | None = None, writer: bool = False) -> Any:
    """cyclonedds ``Qos`` for a ROS 2 profile, as rmw_cyclonedds builds it (XCDR1 forced)."""
    from cyclonedds.core import Policy, Qos
    from cyclonedds.util import duration

    pol = [
        Policy.Reliability.Reliable(duration(seconds=1)) if profile.reliability == Reliability.RELIABLE
        else Policy.Reliability.BestEffort,
        Policy.Durability.TransientLocal if profile.durability == Durability.TRANSIENT_LOCAL
        else Policy.Durability.Volatile,
        Policy.History.KeepLast(profile.depth) if profile.history == History.KEEP_LAST else Policy.History.KeepAll,
        Policy.DataRepresentation(use_cdrv0_representation=True),
        Policy.Liveliness.Automatic(duration(infinite=True)),
    ]
    if profile.durability == Durability.TRANSIENT_LOCAL:
        hist = Policy.History.KeepLast(profile.depth) if profile.history == History.KEEP_LAST else Policy.History.KeepAll
        pol.append(Policy.DurabilityService(cleanup_delay=0, history=hist, max_samples=-1, max_instances=-1,
                                            max_samples_per_instance=-1))
    if not writer and profile.history == History.KEEP_ALL:
        # a KEEP_ALL reader nobody takes from would grow without bound: cap it like the in-process
        # transport (a RELIABLE writer then waits, a BEST_EFFORT one drops)
        pol.append(Policy.ResourceLimits(max_samples=KEEP_ALL_CAP, max_instances=-1,
                                         max_samples_per_instance=KEEP_ALL_CAP))
    if writer:
        pol.append(Policy.WriterDataLifecycle(autodispose=False))
    if user_data:
        pol.append(Policy.Userdata(data=user_data))
    return Qos(*pol)


class _DdsPublisher(Publisher):
    transport: DdsTransport

    def __init__(self, transport: DdsTransport, topic: str, msgtype: str, qos: QoSProfile, node: NodeId | None,
                 writer: Any) -> None:
        super().__init__(transport, topic, msgtype, qos, node)
        self.writer = writer
        self.gid = writer.get_guid().bytes

    def _write(self, data: bytes) -> None:
        from cyclonedds._clayer import ddspy_write

        pad = (-len(data)) % 4
        ret = ddspy_write(self.writer._ref, data + b"\0" * pad if pad else data)
        if ret < 0:
            raise TransportError(f"DDS write on {self.topic} failed (code {ret})")

    def matched_count(self) -> int:
        return len(self.writer.get_matched_subscriptions())

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        self.transport._drop_endpoint(self, self.writer)


class _DdsSubscription(Subscription):
    transport: DdsTransport

    def __init__(self, transport: DdsTransport, topic: str, msgtype: str, callback: Callback, qos: QoSProfile,
                 raw: bool, node: NodeId | None, reader: Any, condition: Any) -> None:
        super().__init__(transport, topic, msgtype, callback, qos, raw, node)
        self.reader = reader
        self.condition = condition
        self.gid = reader.get_guid().bytes
        # samples whose writer's node is not known yet (its ros_discovery_info may trail the data): kept
        # briefly, bounded, then refused; (data, source stamp, handle, first seen monotonic s)
        self.unresolved: deque[tuple[bytes, int, int, float]] = deque(maxlen=DdsTransport.UNRESOLVED_MAX)

    def matched_count(self) -> int:
        return len(self.reader.get_matched_publications())

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        self.transport._drop_endpoint(self, self.reader)


class ServiceClient:
    """Calls one service: the request header's ``guid`` is the request writer's instance handle (as
    rmw_cyclonedds sets it), so replies to other clients are skipped."""

    def __init__(self, transport: DdsTransport, name: str, srvtype: str, writer: Any, reader: Any) -> None:
        from .names import resolve_topic

        self.transport, self.name, self.srvtype = transport, resolve_topic(name), srvtype
        self.writer, self.reader = writer, reader
        self.guid = int(writer.get_instance_handle()) & (2**64 - 1)  # a uint64 on the wire
        self.seq = 0

    def service_ready(self) -> bool:
        return bool(self.writer.get_matched_subscriptions()) and bool(self.reader.get_matched_publications())

    def wait_for_service(self, timeout: float = 5.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end and not self.service_ready():
            time.sleep(0.02)
        return self.service_ready()

    def call(self, request: Any, timeout: float = 5.0) -> Any:
        """Sends ``request`` (a ``<srv>_Request`` message) and waits for its response; TimeoutError if none."""
        from cyclonedds._clayer import ddspy_take, ddspy_write

        from .services import RequestHeader, unwrap, wrap

        self.seq += 1
        d = self.transport.distro
        data = wrap(RequestHeader(self.guid, self.seq), bytes(msgs.encode(request, self.srvtype + "_Request", d)))
        ddspy_write(self.writer._ref, data + b"\0" * ((-len(data)) % 4))
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            ret = ddspy_take(self.reader._ref, _ANY, 16)
            for raw, info in ret if not isinstance(ret, int) else ():
                if not info.valid_data:
                    continue
                header, body = unwrap(raw)
                if header.guid == self.guid and header.seq == self.seq:
                    return msgs.decode(body, self.srvtype + "_Response", d)
            time.sleep(0.005)
        raise TimeoutError(f"service {self.name}: no response within {timeout} s")


class DdsTransport(Transport):
    """One DDS participant; publishers/subscriptions are DataWriters/DataReaders on ``rt/`` topics.

    ``domain_id`` defaults to ``$ROS_DOMAIN_ID`` (else 0). ``config``: None (Cyclone's own
    defaults / ``$CYCLONEDDS_URI``), ``"loopback"``, or a Cyclone XML string / ``file://`` URI.
    """

    kind = "dds"
    UNRESOLVED_MAX = 64  # samples per subscription held while their writer's node is unknown
    UNRESOLVED_WAIT_S = 2.0  # how long such a sample waits for the writer's ros_discovery_info

    def __init__(
        self, domain_id: int | None = None, distro: str | None = None, *, config: str | None = None,
        enclave: str = "/", discovery_info: bool = True, type_hash: bool | None = None,
    ) -> None:
        super().__init__(distro)
        try:
            from cyclonedds.core import (
                GuardCondition,
                InstanceState,
                Policy,
                Qos,
                SampleState,
                ViewState,
                WaitSet,
            )
            from cyclonedds.domain import DomainParticipant
        except ImportError as exc:  # pragma: no cover - the ros extra is part of the project install
            raise TransportError("the dds transport needs cyclonedds (pip install 'latentstack[ros]')") from exc
        global _ANY
        _ANY = SampleState.Any | ViewState.Any | InstanceState.Any
        self.domain_id = int(os.environ.get("ROS_DOMAIN_ID", "0")) if domain_id is None else int(domain_id)
        if not 0 <= self.domain_id <= 232:
            raise ValueError(f"DDS domain id must be in 0..232, got {self.domain_id}")
        _ensure_domain(self.domain_id, config)
        self.type_hash = (self.distro != "humble") if type_hash is None else bool(type_hash)
        self.participant = DomainParticipant(self.domain_id, qos=Qos(Policy.Userdata(data=f"enclave={enclave};".encode())))
        self.gid = self.participant.get_guid().bytes
        self._topics: dict[str, tuple[str, Any]] = {}
        self._lock = threading.RLock()
        self._waitset = WaitSet(self.participant)
        self._wake = GuardCondition(self.participant)
        self._waitset.attach(self._wake)
        self._nodes: dict[NodeId, None] = {}
        self._closing = False
        self._order = 0
        self._discovery_writer = None
        # writer GUID -> node, from every participant's ros_discovery_info (ours included)
        self._writer_nodes: dict[bytes, NodeId] = {}
        self._participant_writers: dict[bytes, set[bytes]] = {}
        self.graph_nodes: dict[bytes, list[NodeId]] = {}  # participant GUID -> its announced nodes
        self._senders: dict[int, tuple[bytes, bytes]] = {}  # publication handle -> (writer GUID, participant GUID)
        self._discovery_reader = self._make_discovery_reader()
        self._discovery_log = RateLimitedLog(log)
        from cyclonedds.core import ReadCondition

        self._waitset.attach(ReadCondition(self._discovery_reader, _ANY))  # an announcement wakes a waiting spin
        if discovery_info:
            self._discovery_writer = self._make_writer(DISCOVERY_TOPIC, DISCOVERY_TYPE, DISCOVERY_QOS, raw_topic=True)
            self._publish_discovery()

    # -- entities
    def _topic(self, dds_name: str, msgtype: str) -> Any:
        from cyclonedds.topic import Topic

        from latentstack.msgs.idl import idl_class

        with self._lock:
            have = self._topics.get(dds_name)
            if have is not None:
                if have[0] != msgtype:
                    raise TopicTypeError(f"DDS topic {dds_name} is {have[0]} here, cannot use it as {msgtype}")
                return have[1]
            topic = Topic(self.participant, dds_name, idl_class(msgtype, self.distro))
            self._topics[dds_name] = (msgtype, topic)
            return topic

    def _user_data(self, msgtype: str) -> bytes | None:
        return type_hash_user_data(msgtype, self.distro) if self.type_hash else None

    def _make_writer(self, name: str, msgtype: str, qos: QoSProfile, raw_topic: bool = False) -> Any:
        from cyclonedds.pub import DataWriter

        dds_name = name if raw_topic else dds_topic_name(name)
        return DataWriter(self.participant, self._topic(dds_name, msgtype),
                          qos=to_dds_qos(qos, user_data=self._user_data(msgtype), writer=True))

    def _create_publisher(self, topic: str, msgtype: str, qos: QoSProfile, node: NodeId | None) -> Publisher:
        writer = self._make_writer(topic, msgtype, qos)
        if node is not None:
            self.register_node(node, publish=False)
        return _DdsPublisher(self, topic, msgtype, qos, node, writer)

    def _create_subscription(
        self, topic: str, msgtype: str, callback: Callback, qos: QoSProfile, raw: bool, node: NodeId | None
    ) -> Subscription:
        from cyclonedds.core import ReadCondition
        from cyclonedds.sub import DataReader

        reader = DataReader(self.participant, self._topic(dds_topic_name(topic), msgtype),
                            qos=to_dds_qos(qos, user_data=self._user_data(msgtype)))
        cond = ReadCondition(reader, _ANY)
        with self._lock:
            self._waitset.attach(cond)
        if node is not None:
            self.register_node(node, publish=False)
        return _DdsSubscription(self, topic, msgtype, callback, qos, raw, node, reader, cond)

    def _drop_endpoint(self, endpoint: Publisher | Subscription, entity: Any) -> None:
        from cyclonedds.core import DDSException

        with self._lock:
            if not self._closing:  # on close the participant takes its entities along
                try:
                    if isinstance(endpoint, _DdsSubscription):
                        self._waitset.detach(endpoint.condition)
                    entity.__del__()  # the reader/writer leaves the DDS graph now, not at GC time
                except DDSException as exc:  # pragma: no cover - already gone with the participant
                    log.debug("dropping %s: %s", endpoint.topic, exc)
            if endpoint in self.publishers:
                self.publishers.remove(endpoint)  # type: ignore[arg-type]
            if endpoint in self.subscriptions:
                self.subscriptions.remove(endpoint)  # type: ignore[arg-type]
        if endpoint.node is not None and not self._closing:
            self._publish_discovery()

    # -- ROS graph (ros_discovery_info)
    def register_node(self, node: NodeId, publish: bool = True) -> None:
        with self._lock:
            new = node not in self._nodes
            self._nodes[node] = None
        if new and publish:
            self._publish_discovery()

    def unregister_node(self, node: NodeId) -> None:
        with self._lock:
            self._nodes.pop(node, None)
        self._publish_discovery()

    def node_entities(self) -> list[NodeEntities]:
        with self._lock:
            out = []
            for n in self._nodes:
                out.append(NodeEntities(
                    n.name, n.namespace,
                    reader_gids=[s.gid for s in self.subscriptions if s.node == n and not s.closed],
                    writer_gids=[p.gid for p in self.publishers if p.node == n and not p.closed],
                ))
            return out

    def _publish_discovery(self) -> None:
        if self._discovery_writer is None or self.closed:
            return
        from cyclonedds._clayer import ddspy_write

        data = encode_participant_info(self.gid, self.node_entities(), self.distro)
        pad = (-len(data)) % 4
        ddspy_write(self._discovery_writer._ref, data + b"\0" * pad)

    def _make_discovery_reader(self) -> Any:
        from cyclonedds.sub import DataReader

        # KEEP_ALL as rmw_dds_common's reader: the topic is keyless, one participant's sample must not push
        # out another's before it is taken
        qos = QoSProfile(Reliability.RELIABLE, Durability.TRANSIENT_LOCAL, History.KEEP_ALL, 1)
        return DataReader(self.participant, self._topic(DISCOVERY_TOPIC, DISCOVERY_TYPE),
                          qos=to_dds_qos(qos, user_data=self._user_data(DISCOVERY_TYPE)))

    def _take_discovery(self) -> None:
        """Updates writer -> node from the participants' ``ros_discovery_info`` (each sample: one participant's
        full list). A malformed sample is logged and skipped."""
        from cyclonedds._clayer import ddspy_take

        while True:
            ret = ddspy_take(self._discovery_reader._ref, _ANY, 64)
            if isinstance(ret, int):
                log.warning("DDS take on %s failed (code %d)", DISCOVERY_TOPIC, ret)
                return
            for data, info in ret:
                if not info.valid_data:
                    continue
                try:
                    pinfo = decode_participant_info(data, self.distro)
                except (msgs.MessageError, ValueError) as exc:
                    self._discovery_log.log("malformed", logging.WARNING, "ignored malformed %s sample: %s",
                                            DISCOVERY_TOPIC, exc)
                    continue
                part = pinfo["gid"][:16]  # Humble pads GIDs to 24 bytes
                n_writers = sum(len(n.writer_gids) for n in pinfo["nodes"])
                if n_writers > MAX_WRITERS_PER_PARTICIPANT or (
                        part not in self._participant_writers and len(self._participant_writers) >= MAX_PARTICIPANTS):
                    self._discovery_log.log("flood", logging.WARNING, "ignored %s of participant %s: %d writers, "
                                            "%d participants tracked (bounded)", DISCOVERY_TOPIC, part.hex(),
                                            n_writers, len(self._participant_writers))
                    continue
                with self._lock:
                    for w in self._participant_writers.pop(part, set()):
                        self._writer_nodes.pop(w, None)
                    mine = set()
                    for n in pinfo["nodes"]:
                        for g in n.writer_gids:
                            self._writer_nodes[g[:16]] = NodeId(n.name, n.namespace)
                            mine.add(g[:16])
                    self._participant_writers[part] = mine
                    self.graph_nodes[part] = [NodeId(n.name, n.namespace) for n in pinfo["nodes"]]
            if len(ret) < 64:
                return

    def _sender(self, sub: _DdsSubscription, handle: int) -> Sender:
        ids = self._senders.get(handle)
        if ids is None:
            ep = sub.reader.get_matched_publication_data(handle)
            if ep is None:  # the writer is already gone
                return Sender(b"", b"", None)
            ids = (ep.key.bytes, ep.participant_key.bytes)
            if len(self._senders) >= 4096:  # bounded: writers come and go in a long-running graph
                self._senders.clear()
            self._senders[handle] = ids
        with self._lock:
            node = self._writer_nodes.get(ids[0])
        return Sender(ids[0], ids[1], node)

    def _admit(self, sub: _DdsSubscription, data: bytes, stamp: int, handle: int, first_seen: float) -> bool | None:
        """The sender filter's verdict; "not known yet" samples wait in ``sub.unresolved`` (bounded, timed)."""
        if sub.sender_filter is None:
            return True
        verdict = sub._sender_allowed(self._sender(sub, handle), final=False)
        if verdict is None:
            if time.monotonic() - first_seen < self.UNRESOLVED_WAIT_S:
                if len(sub.unresolved) == sub.unresolved.maxlen:
                    sub.refused_senders += 1  # the oldest waiting sample is pushed out: refused
                sub.unresolved.append((data, stamp, handle, first_seen))
                return None
            sub.refused_senders += 1
            sub.rate_log.log("sender", logging.WARNING, "refused message on %s: its writer announced no node within %.1f s",
                             sub.topic, self.UNRESOLVED_WAIT_S)
            return False
        return verdict

    # -- services (rmw_cyclonedds framing)
    SERVICE_QOS = QoSProfile(Reliability.RELIABLE, Durability.VOLATILE, History.KEEP_ALL, 1)

    def _service_idl(self, msgtype: str) -> Any:
        """The request/response struct with ``cdds_request_header_t``'s fields in front (what is on the wire)."""
        from cyclonedds.idl import make_idl_struct
        from cyclonedds.idl import types as t

        from latentstack.msgs.idl import idl_class

        with self._lock:
            cache = self.__dict__.setdefault("_service_idls", {})
            if msgtype not in cache:
                body = idl_class(msgtype, self.distro)
                cache[msgtype] = make_idl_struct(body.__name__, body.__idl_typename__,
                                                 {"guid": t.uint64, "seq": t.int64, **body.__annotations__})
            return cache[msgtype]

    def _service_user_data(self, srvtype: str) -> bytes | None:
        if not self.type_hash:
            return None
        from latentstack.msgs.typestore import service_rihs01

        return f"typehash={service_rihs01(srvtype, self.distro)};".encode()

    def create_service(self, name: str, srvtype: str, handler: Callable[[Any], Any], *,
                       node: NodeId | None = None) -> Service:
        """A service server on ``name`` (``pkg/srv/Type``): requests are handled in :meth:`spin_once`."""
        from cyclonedds._clayer import ddspy_write
        from cyclonedds.core import ReadCondition
        from cyclonedds.pub import DataWriter
        from cyclonedds.sub import DataReader
        from cyclonedds.topic import Topic

        self._check_open()
        svc = Service(self, name, srvtype, handler)
        ud = self._service_user_data(svc.srvtype)
        with self._lock:
            rq = Topic(self.participant, request_topic(svc.name), self._service_idl(svc.request_type))
            rr = Topic(self.participant, reply_topic(svc.name), self._service_idl(svc.response_type))
        reader = DataReader(self.participant, rq, qos=to_dds_qos(self.SERVICE_QOS, user_data=ud))
        writer = DataWriter(self.participant, rr, qos=to_dds_qos(self.SERVICE_QOS, user_data=ud, writer=True))

        def on_request(raw: Any) -> None:
            reply = svc.handle(raw.data)
            if reply is not None and not svc.closed:
                pad = (-len(reply)) % 4
                ddspy_write(writer._ref, reply + b"\0" * pad)

        cond = ReadCondition(reader, _ANY)
        with self._lock:
            self._waitset.attach(cond)
        sub = _DdsSubscription(self, svc.name, svc.request_type, on_request, self.SERVICE_QOS, True, node, reader,
                               cond)
        pub = _DdsPublisher(self, svc.name, svc.response_type, self.SERVICE_QOS, node, writer)
        self.subscriptions.append(sub)
        self.publishers.append(pub)
        svc.endpoints = (sub, pub)  # type: ignore[attr-defined]
        if node is not None:
            self.register_node(node, publish=False)
            self._publish_discovery()
        return svc

    def create_client(self, name: str, srvtype: str) -> ServiceClient:
        """A service client (``call(request, timeout) -> response``) with rmw_cyclonedds framing."""
        from cyclonedds.pub import DataWriter
        from cyclonedds.sub import DataReader
        from cyclonedds.topic import Topic

        self._check_open()
        srvtype = msgs.normalize_type(srvtype, check=False)
        ud = self._service_user_data(srvtype)
        with self._lock:
            rq = Topic(self.participant, request_topic(name), self._service_idl(srvtype + "_Request"))
            rr = Topic(self.participant, reply_topic(name), self._service_idl(srvtype + "_Response"))
        writer = DataWriter(self.participant, rq, qos=to_dds_qos(self.SERVICE_QOS, user_data=ud, writer=True))
        reader = DataReader(self.participant, rr, qos=to_dds_qos(self.SERVICE_QOS, user_data=ud))
        return ServiceClient(self, name, srvtype, writer, reader)

    def create_publisher(self, *a: Any, **k: Any) -> Publisher:
        pub = super().create_publisher(*a, **k)
        if pub.node is not None:  # the endpoint list changed: republish the node's entities
            self._publish_discovery()
        return pub

    def create_subscription(self, *a: Any, **k: Any) -> Subscription:
        sub = super().create_subscription(*a, **k)
        if sub.node is not None:
            self._publish_discovery()
        return sub

    # -- execution
    def _take_all(self) -> list[tuple[int, int, _DdsSubscription, bytes]]:
        from cyclonedds._clayer import ddspy_take

        self._take_discovery()  # first: a writer's node may have just been announced
        out = []
        now = time.monotonic()
        with self._lock:
            subs = [s for s in self.subscriptions if not s.closed]
        for sub in subs:
            waiting, sub.unresolved = list(sub.unresolved), deque(maxlen=sub.unresolved.maxlen)
            for data, stamp, handle, first in waiting:  # in arrival order, before anything newer
                if self._admit(sub, data, stamp, handle, first):
                    self._order += 1
                    out.append((stamp, self._order, sub, data))
            while True:
                ret = ddspy_take(sub.reader._ref, _ANY, 64)
                if isinstance(ret, int):
                    log.warning("DDS take on %s failed (code %d)", sub.topic, ret)
                    break
                for data, info in ret:
                    if info.valid_data and self._admit(sub, data, int(info.source_timestamp),
                                                       int(info.publication_handle), now):
                        self._order += 1
                        out.append((int(info.source_timestamp), self._order, sub, data))
                if len(ret) < 64:
                    break
        out.sort(key=lambda x: (x[0], x[1]))
        return out

    def spin_once(self, timeout: float = 0.0) -> int:
        """Takes everything available (waiting up to ``timeout`` s), delivers in source-timestamp order."""
        self._check_open()
        batch = self._take_all()
        if not batch and timeout > 0:
            self._waitset.wait(int(timeout * 1e9))
            if self.closed:
                return 0
            self._wake.set(False)
            batch = self._take_all()
        n = 0
        for stamp, _, sub, data in batch:
            if sub._deliver(data, stamp, checked=True):
                n += 1
        return n

    def wake(self) -> None:
        """Interrupts a blocking :meth:`spin_once` from another thread."""
        self._wake.set(True)

    def close(self) -> None:
        if self.closed:
            return
        self._closing = True
        with self._lock:
            self._nodes.clear()
        from cyclonedds.core import DDSException

        super().close()
        try:
            self._wake.set(True)
            # Deleting the participant deletes its readers/writers/topics in the C layer.
            self.participant.__del__()
        except DDSException as exc:  # pragma: no cover
            log.debug("participant delete: %s", exc)


def discover_endpoints(domain_id: int, timeout: float = 3.0, *, config: str | None = "loopback",
                       until: Callable[[list[dict[str, Any]]], bool] | None = None) -> list[dict[str, Any]]:
    """What another DDS participant sees of the graph: every remote writer/reader with its DDS topic
    name, type name and USER_DATA (builtin discovery topics; how ``ros2 topic list`` starts)."""
    import time

    from cyclonedds.builtin import (
        BuiltinDataReader,
        BuiltinTopicDcpsPublication,
        BuiltinTopicDcpsSubscription,
    )
    from cyclonedds.domain import DomainParticipant

    _ensure_domain(domain_id, config)
    dp = DomainParticipant(domain_id)
    readers = {"writer": BuiltinDataReader(dp, BuiltinTopicDcpsPublication),
               "reader": BuiltinDataReader(dp, BuiltinTopicDcpsSubscription)}
    seen: dict[Any, dict[str, Any]] = {}
    end = time.monotonic() + timeout
    try:
        while time.monotonic() < end:
            for kind, r in readers.items():
                for s in r.take(N=256):
                    if getattr(s, "topic_name", None) is None or s.topic_name.startswith("DCPS"):
                        continue
                    user_data = b""
                    for p in s.qos:
                        if type(p).__name__ == "Userdata":
                            user_data = bytes(p.data)
                    seen[s.key] = {"kind": kind, "topic": s.topic_name, "type": s.type_name,
                                   "user_data": user_data, "participant": s.participant_key}
            if until is not None and until(list(seen.values())):
                break
            time.sleep(0.02)
    finally:
        dp.__del__()
    return list(seen.values())
