"""In-process transport: a deterministic FIFO bus with real CDR bytes and DDS-like QoS rules.

Messages are encoded on publish and decoded on delivery (the codec is always exercised),
queued in one global FIFO per transport and delivered by :meth:`InProcTransport.spin_once`
in publication order, so a single-process graph is reproducible. QoS follows DDS:
KEEP_LAST depth per subscription (oldest dropped), RELIABLE readers do not match
BEST_EFFORT writers, TRANSIENT_LOCAL writers replay their last ``depth`` samples to
TRANSIENT_LOCAL late joiners. Several transports may share one :class:`InProcBus` to stand
in for several processes.

Memory is bounded when nobody spins: a KEEP_LAST queue holds at most ``depth`` messages, a
KEEP_ALL queue at most ``keep_all_cap`` (default :attr:`InProcTransport.KEEP_ALL_CAP`; DDS bounds
KEEP_ALL by resource limits too), the oldest being dropped and counted in ``Subscription.dropped``;
the delivery FIFO is compacted to the messages still queued, so it never outgrows them.
"""
from __future__ import annotations

import itertools
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .base import Callback, NodeId, Publisher, Sender, Subscription, TopicTypeError, Transport, log
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
        self.sender = Sender(os.urandom(16), self.transport.gid, self.node)  # what subscribers see as the writer
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
                    sub.transport._enqueue(sub, data, stamp, self.sender)

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
        cap = self.transport.keep_all_cap if keep_all else self.qos.depth
        self.pending: deque[tuple[int, bytes, int, Sender]] = deque(maxlen=cap)
        self.dropped = 0  # messages pushed out of the full queue before anyone spun

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
    KEEP_ALL_CAP = 10_000  # messages a KEEP_ALL subscription queues before dropping the oldest

    def __init__(self, bus: InProcBus | None = None, distro: str | None = None,
                 clock: Callable[[], int] | None = None, keep_all_cap: int = KEEP_ALL_CAP) -> None:
        super().__init__(distro)
        if keep_all_cap < 1:
            raise ValueError(f"keep_all_cap must be >= 1, got {keep_all_cap}")
        self.keep_all_cap = keep_all_cap
        self.bus = bus or InProcBus()
        self.gid = os.urandom(16)  # stands in for a DDS participant GUID
        self._clock = clock
        self._fifo: deque[tuple[int, _InProcSubscription]] = deque()
        self._fifo_limit = self._FIFO_MIN
        self._cv = threading.Condition(self.bus.lock)

    _FIFO_MIN = 1024  # compact the delivery FIFO when it exceeds max(this, 2 x what it held after the last one)

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
                            self._enqueue(sub, data, time.time_ns(), pub.sender)
            return sub

    def _enqueue(self, sub: _InProcSubscription, data: bytes, stamp: int, sender: Sender) -> None:
        with self._cv:
            seq = self.bus.next_seq()
            if len(sub.pending) == sub.pending.maxlen:
                sub.dropped += 1
            sub.pending.append((seq, data, stamp, sender))  # KEEP_LAST / capped KEEP_ALL: deque drops the oldest
            self._fifo.append((seq, sub))
            if len(self._fifo) > self._fifo_limit:
                self._compact()
            self._cv.notify_all()

    def _compact(self) -> None:
        """Rebuilds the FIFO from the messages still queued (entries of dropped ones are dead weight).

        Amortized O(1) per message: after a compaction to n entries the next one waits for n more.
        """
        # every queued message has a FIFO entry, so the FIFO names every subscription to scan (including
        # one still being created, whose TRANSIENT_LOCAL replay is not in self.subscriptions yet)
        subs = {id(s): s for _, s in self._fifo}.values()
        live = sorted(((seq, s) for s in subs for seq, *_ in s.pending), key=lambda e: e[0])
        self._fifo = deque(live)
        self._fifo_limit = max(self._FIFO_MIN, 2 * len(live))

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
                _, data, stamp, sender = sub.pending.popleft()
            if sub._deliver(data, stamp, sender):
                n += 1
        return n

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        log.debug("inproc transport closed")
