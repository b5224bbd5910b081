"""The one ``Transport`` interface every backend implements (inproc, dds, rclpy).

A transport moves CDR bytes between named topics with ROS 2 QoS. Publishers take rosbags
message objects (or raw CDR via ``publish_raw``); subscriptions decode with the typestore and
call back with message objects (or raw bytes with ``raw=True``, e.g. for recording). Bytes
that do not decode are logged and counted on the subscription and never reach the callback:
a bad peer cannot crash a node. Callbacks run inside :meth:`Transport.spin_once`, on the
caller's thread, one at a time (the single-threaded-executor model of rclpy).
"""
from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from latentstack import msgs

from .names import resolve_topic
from .qos import QoSProfile, qos_profile
from .ratelimit import RateLimitedLog

if TYPE_CHECKING:  # typing.Self is Python >= 3.11: imported for type checkers only
    from typing import Self

__all__ = ["NodeId", "Publisher", "Sender", "SenderFilter", "Subscription", "TopicTypeError", "Transport",
           "TransportError"]

log = logging.getLogger("latentstack.transport")

Callback = Callable[[Any], None]


class TransportError(RuntimeError):
    """A transport cannot do what was asked (closed, backend missing, bad configuration)."""


class TopicTypeError(TransportError):
    """A topic is already in use with a different message type."""


@dataclass(frozen=True)
class NodeId:
    """Which node an endpoint belongs to (for ROS 2 graph introspection)."""

    name: str
    namespace: str = "/"


@dataclass(frozen=True)
class Sender:
    """Who published a received message, as far as the transport can tell.

    ``gid``: the writer's 16-byte GUID (DDS) or a random per-publisher id (in-process);
    ``participant``: the DDS participant's GUID (in-process: the transport's id); ``node``: the ROS node
    the writer belongs to, from ``ros_discovery_info`` (DDS) or the publisher itself (in-process), None
    when unknown. Without DDS Security none of this is authenticated: it tells apart the well-behaved
    participants of a graph, it does not stop a forger (see the threat model in the README).
    """

    gid: bytes
    participant: bytes = b""
    node: NodeId | None = None


# A subscription's sender filter: True accept, False refuse, None "not known yet" (a DDS writer whose
# ros_discovery_info has not arrived; the DDS transport holds such messages briefly and asks again).
SenderFilter = Callable[[Sender], "bool | None"]


class Publisher:
    """Publishes on one topic; backends override :meth:`_write`."""

    def __init__(self, transport: Transport, topic: str, msgtype: str, qos: QoSProfile, node: NodeId | None) -> None:
        self.transport = transport
        self.topic = topic
        self.msgtype = msgtype
        self.qos = qos
        self.node = node
        self.published = 0
        self.closed = False

    def publish(self, msg: Any) -> None:
        """Encode ``msg`` (a rosbags message of ``msgtype``) and send it."""
        t = getattr(msg, "__msgtype__", None)
        if t is not None and t != self.msgtype:
            raise msgs.MessageEncodeError(f"publisher on {self.topic} sends {self.msgtype}, got a {t}")
        self.publish_raw(msgs.encode(msg, self.msgtype, self.transport.distro))

    def publish_raw(self, data: bytes | bytearray | memoryview) -> None:
        """Send already-encoded CDR bytes (header included) as they are."""
        if self.closed or self.transport.closed:
            raise TransportError(f"publisher on {self.topic} is closed")
        self._write(bytes(data))
        self.published += 1

    def _write(self, data: bytes) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def matched_count(self) -> int:
        """Subscriptions currently matched (best effort per backend)."""
        return 0

    def close(self) -> None:
        self.closed = True


class Subscription:
    """Receives one topic; the transport hands it bytes via :meth:`_deliver`."""

    def __init__(
        self, transport: Transport, topic: str, msgtype: str, callback: Callback, qos: QoSProfile,
        raw: bool, node: NodeId | None,
    ) -> None:
        self.transport = transport
        self.topic = topic
        self.msgtype = msgtype
        self.callback = callback
        self.qos = qos
        self.raw = raw
        self.node = node
        self.received = 0
        self.decode_errors = 0
        self.last_error: str | None = None
        self.closed = False
        # a peer sending garbage at full rate gets a few lines per window, the rest counted (rate_log.suppressed)
        self.rate_log = RateLimitedLog(log)
        # publisher allow-list (NodeCore.create_subscription(allowed_publishers=...)); None = anyone
        self.sender_filter: SenderFilter | None = None
        self.refused_senders = 0

    def _sender_allowed(self, sender: Sender | None, *, final: bool = True) -> bool | None:
        """The sender filter's verdict (True without a filter); a refusal is counted and logged (rate-limited).

        ``final=False`` lets "not known yet" (None) through uncounted, for a backend that can ask again later."""
        if self.sender_filter is None:
            return True
        verdict = self.sender_filter(sender) if sender is not None else False
        if verdict is None and final:
            verdict = False
        if verdict is False:
            self.refused_senders += 1
            who = "an unknown writer" if sender is None else (
                f"node {sender.node.namespace.rstrip('/')}/{sender.node.name}" if sender.node else
                f"writer {sender.gid.hex()} (no node announced)")
            self.rate_log.log("sender", logging.WARNING, "refused message on %s from %s: not an allowed publisher",
                              self.topic, who)
        return verdict

    def _deliver(self, data: bytes, timestamp_ns: int | None = None, sender: Sender | None = None,
                 checked: bool = False) -> bool:
        """Decode and call back; False (logged, counted) when the bytes are malformed or the sender is refused.

        ``checked``: the backend already ran the sender filter (the DDS transport, which may hold a message
        until its writer's node is known)."""
        if self.closed:
            return False
        if not checked and not self._sender_allowed(sender):
            return False
        self.received += 1
        if self.raw:
            self.callback(RawMessage(data, self.msgtype, self.topic, timestamp_ns or time.time_ns()))
            return True
        try:
            msg = msgs.decode(data, self.msgtype, self.transport.distro)
        except msgs.MessageDecodeError as exc:
            self.decode_errors += 1
            self.last_error = str(exc)
            self.rate_log.log("decode", logging.WARNING, "dropped malformed message on %s: %s", self.topic, exc)
            return False
        self.callback(msg)
        return True

    def close(self) -> None:
        self.closed = True


@dataclass(frozen=True)
class RawMessage:
    """Undecoded CDR as delivered to ``raw=True`` subscriptions (recorders, bridges)."""

    data: bytes
    msgtype: str
    topic: str
    timestamp_ns: int


class Transport(ABC):
    """Publish/subscribe with ROS 2 names, types and QoS. One per process is typical."""

    kind: str = "abstract"

    def __init__(self, distro: str | None = None) -> None:
        self.distro = msgs.default_distro() if distro is None else distro
        if self.distro not in msgs.DISTROS:
            raise ValueError(f"unsupported distro {distro!r}; choose one of {msgs.DISTROS}")
        self.closed = False
        self.publishers: list[Publisher] = []
        self.subscriptions: list[Subscription] = []

    # -- endpoints
    def create_publisher(
        self, topic: str, msgtype: str, qos: QoSProfile | str | None = None, *, node: NodeId | None = None
    ) -> Publisher:
        """``topic``: fully qualified (or relative to ``/``); ``msgtype``: ``pkg/msg/Type``."""
        self._check_open()
        fq = resolve_topic(topic)
        t = msgs.normalize_type(msgtype, distro=self.distro)
        pub = self._create_publisher(fq, t, qos_profile(qos), node)
        self.publishers.append(pub)
        return pub

    def create_subscription(
        self, topic: str, msgtype: str, callback: Callback, qos: QoSProfile | str | None = None, *,
        raw: bool = False, node: NodeId | None = None,
    ) -> Subscription:
        self._check_open()
        fq = resolve_topic(topic)
        t = msgs.normalize_type(msgtype, distro=self.distro)
        sub = self._create_subscription(fq, t, callback, qos_profile(qos), raw, node)
        self.subscriptions.append(sub)
        return sub

    @abstractmethod
    def _create_publisher(self, topic: str, msgtype: str, qos: QoSProfile, node: NodeId | None) -> Publisher: ...

    @abstractmethod
    def _create_subscription(
        self, topic: str, msgtype: str, callback: Callback, qos: QoSProfile, raw: bool, node: NodeId | None
    ) -> Subscription: ...

    def register_node(self, node: NodeId) -> None:
        """Announces a node (graph introspection); endpoints are attributed to it via ``node=``."""

    def unregister_node(self, node: NodeId) -> None:
        """Removes a node announced with :meth:`register_node`."""

    # -- execution
    @abstractmethod
    def spin_once(self, timeout: float = 0.0) -> int:
        """Deliver pending messages (waiting up to ``timeout`` s for the first); returns how many."""

    def now_ns(self) -> int:
        """Wall-clock time (ROS time without sim time), nanoseconds."""
        return time.time_ns()

    def wait_for_matches(self, publisher: Publisher, count: int = 1, timeout: float = 5.0,
                         poll: Callable[[], None] | None = None) -> bool:
        """Blocks until ``publisher`` has ``count`` matched subscriptions (DDS discovery takes ~0.1-1.5 s; zenoh:
        subscription tokens on its key); ``poll`` runs between checks (e.g. spinning another transport)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if publisher.matched_count() >= count:
                return True
            if poll is not None:
                poll()
            time.sleep(0.01)
        return publisher.matched_count() >= count

    def _check_open(self) -> None:
        if self.closed:
            raise TransportError(f"{self.kind} transport is closed")

    def close(self) -> None:
        for e in [*self.publishers, *self.subscriptions]:
            e.close()
        self.closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
