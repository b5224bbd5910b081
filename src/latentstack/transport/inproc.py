"""In-process transport: a deterministic FIFO bus with real CDR bytes and DDS-like QoS rules.

Messages are encoded on publish and decoded on delivery (the codec is always exercised),
queued in one global FIFO per transport and delivered by :meth:`InProcTransport.spin_once`
in publication order, so a single-process graph is reproducible. QoS follows DDS:
KEEP_LAST depth per subscription (oldest dropped), RELIABLE readers do not match
BEST_EFFORT writers, TRANSIENT_LOCAL writers replay their last ``depth`` samples to
TRANSIENT_LOCAL late joiners. Several transports may share one :class:`InProcBus` to stand
in for several processes.
"""
from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .base import Callback, NodeId, Publisher, Subscription, TopicTypeError, Transport, log
from .qos import Durability, History, QoSProfile, qos_compatible

__all__ = ["InProcBus", "InProcTransport"]


@dataclass
class _Topic:
    msgtype: str
    publishers: list[_InProcPublisher] = field(default_factory=list)
    subscriptions: list[_InProcSubscription] = field(default_factory=list)


class InProcBus:
    """Topic registry shared by the transports of one simulated ROS graph."""

    def __init__(self) -> None:
        self.topics: dict[str, _Topic] = {}
        self.lock = threading.RLock()
        self._seq = itertools.count()

    def next_seq(self) -> int:
        return next(self._seq)

    def topic(self, name: str, msgtype: str) -> _Topic:
        t = self.topics.get(name)
        if t is None:
            t = self.topics[name] = _Topic(msgtype)
        elif t.msgtype != msgtype and (t.publishers or t.subscriptions):
            raise TopicTypeError(f"topic {name} carries {t.msgtype}, cannot use it as {msgtype}")
        else:
            t.msgtype = msgtype
        return t


class _InProcPublisher(Publisher):
    transport: InProcTransport

    def __init__(self, *a: Any, **k: Any) -> None:
        super().__init__(*a, **k)
        self.history: deque[bytes] = deque(maxlen=self.qos.depth if self.qos.durability == Durability.TRANSIENT_LOCAL
                                           else 0)

    def _write(self, data: bytes) -> None:
        bus = self.transport.bus
        with bus.lock:
            if self.history.maxlen:
                self.history.append(data)
            stamp = time.time_ns()
            for sub in bus.topics[self.topic].subscriptions:
                if not sub.closed and qos_compatible(self.qos, sub.qos)[0]:
                    sub.transport._enqueue(sub, data, stamp)

    def matched_count(self) -> int:
        with self.transport.bus.lock:
            return sum(1 for s in self.transport.bus.topics[self.topic].subscriptions
                       if not s.closed and qos_compatible(self.qos, s.qos)[0])

    def close(self) -> None:
        super().close()
        with self.transport.bus.lock:
            t = self.transport.bus.topics.get(self.topic)
            if t is not None and self in t.publishers:
                t.publishers.remove(self)


class _InProcSubscription(Subscription):
    transport: InProcTransport

    def __init__(self, *a: Any, **k: Any) -> None:
        super().__init__(*a, **k)
        keep_all = self.qos.history == History.KEEP_ALL
        self.pending: deque[tuple[int, bytes, int]] = deque(maxlen=None if keep_all else self.qos.depth)

    def close(self) -> None:
        super().close()
        with self.transport.bus.lock:
            t = self.transport.bus.topics.get(self.topic)
            if t is not None and self in t.subscriptions:
                t.subscriptions.remove(self)
            self.pending.clear()


class InProcTransport(Transport):
    """Deterministic in-memory backend (same codec and QoS rules as the wire backends)."""

    kind = "inproc"

    def __init__(self, bus: InProcBus | None = None, distro: str | None = None,
                 clock: Callable[[], int] | None = None) -> None:
        super().__init__(distro)
        self.bus = bus or InProcBus()
        self._clock = clock
        self._fifo: deque[tuple[int, _InProcSubscription]] = deque()
        self._cv = threading.Condition(self.bus.lock)

    def now_ns(self) -> int:
        return self._clock() if self._clock is not None else time.time_ns()

    def _create_publisher(self, topic: str, msgtype: str, qos: QoSProfile, node: NodeId | None) -> Publisher:
        with self.bus.lock:
            t = self.bus.topic(topic, msgtype)
            pub = _InProcPublisher(self, topic, msgtype, qos, node)
            t.publishers.append(pub)
            return pub

    def _create_subscription(
        self, topic: str, msgtype: str, callback: Callback, qos: QoSProfile, raw: bool, node: NodeId | None
    ) -> Subscription:
        with self.bus.lock:
            t = self.bus.topic(topic, msgtype)
            sub = _InProcSubscription(self, topic, msgtype, callback, qos, raw, node)
            t.subscriptions.append(sub)
            if qos.durability == Durability.TRANSIENT_LOCAL:
                for pub in t.publishers:
                    if qos_compatible(pub.qos, qos)[0]:
                        for data in pub.history:
                            self._enqueue(sub, data, time.time_ns())
            return sub

    def _enqueue(self, sub: _InProcSubscription, data: bytes, stamp: int) -> None:
        with self._cv:
            seq = self.bus.next_seq()
            sub.pending.append((seq, data, stamp))  # KEEP_LAST: deque drops the oldest
            self._fifo.append((seq, sub))
            self._cv.notify_all()

    def pending(self) -> int:
        with self.bus.lock:
            return sum(len(s.pending) for s in self.subscriptions)

    def spin_once(self, timeout: float = 0.0) -> int:
        """Delivers the messages queued when called (not those their callbacks publish), in order."""
        with self._cv:
            if not self._fifo and timeout > 0:
                self._cv.wait(timeout)
            batch = list(self._fifo)
            self._fifo.clear()
        n = 0
        for seq, sub in batch:
            with self.bus.lock:
                if not sub.pending or sub.pending[0][0] != seq:
                    continue  # dropped by KEEP_LAST, or subscription closed
                _, data, stamp = sub.pending.popleft()
            if sub._deliver(data, stamp):
                n += 1
        return n

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        log.debug("inproc transport closed")
