"""rclpy backend: the same Transport interface on top of a real ROS 2 node (when rclpy imports).

Bytes in, bytes out: publishers publish serialized CDR (``Publisher.publish(bytes)``) and
subscriptions are created with ``raw=True``, so the rosbags codec stays the only codec and the
node cores behave identically on every backend. Message classes are only looked up to
register the types with the RMW (``rosidl_runtime_py.utilities.get_message``).
Not exercisable without a ROS 2 install; its tests carry the ``rclpy`` marker.
"""
from __future__ import annotations

from typing import Any

from .base import Callback, NodeId, Publisher, Sender, Subscription, Transport, TransportError
from .qos import Durability, History, QoSProfile, Reliability

try:  # pragma: no cover - rclpy is not installable from PyPI
    import rclpy
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, ReliabilityPolicy
    from rclpy.qos import QoSProfile as RclpyQoS

    RCLPY_AVAILABLE = True
except ImportError:  # the normal case on the project's machines
    rclpy = None
    RCLPY_AVAILABLE = False

__all__ = ["RCLPY_AVAILABLE", "RclpyTransport", "to_rclpy_qos"]


def to_rclpy_qos(p: QoSProfile) -> Any:  # pragma: no cover - needs rclpy
    return RclpyQoS(
        reliability=ReliabilityPolicy.RELIABLE if p.reliability == Reliability.RELIABLE else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if p.durability == Durability.TRANSIENT_LOCAL
        else DurabilityPolicy.VOLATILE,
        history=HistoryPolicy.KEEP_LAST if p.history == History.KEEP_LAST else HistoryPolicy.KEEP_ALL,
        depth=p.depth,
    )


class _RclpyPublisher(Publisher):  # pragma: no cover - needs rclpy
    def __init__(self, transport: RclpyTransport, topic: str, msgtype: str, qos: QoSProfile, node: NodeId | None,
                 handle: Any) -> None:
        super().__init__(transport, topic, msgtype, qos, node)
        self.handle = handle

    def _write(self, data: bytes) -> None:
        self.handle.publish(data)

    def matched_count(self) -> int:
        return int(self.handle.get_subscription_count())

    def close(self) -> None:
        if not self.closed:
            self.transport.node.destroy_publisher(self.handle)
        super().close()


class _RclpySubscription(Subscription):  # pragma: no cover - needs rclpy
    handle: Any = None

    def close(self) -> None:
        if not self.closed and self.handle is not None:
            self.transport.node.destroy_subscription(self.handle)
        super().close()


class RclpyTransport(Transport):  # pragma: no cover - needs rclpy
    """Wraps an existing ``rclpy.node.Node`` (the thin wrappers in ``latentstack.ros`` create it)."""

    kind = "rclpy"

    def __init__(self, node: Any, distro: str | None = None) -> None:
        if not RCLPY_AVAILABLE:
            raise TransportError("rclpy is not importable: source a ROS 2 installation first")
        super().__init__(distro)
        self.node = node

    @staticmethod
    def _msg_class(msgtype: str) -> Any:
        from rosidl_runtime_py.utilities import get_message

        return get_message(msgtype)

    def _create_publisher(self, topic: str, msgtype: str, qos: QoSProfile, node: NodeId | None) -> Publisher:
        handle = self.node.create_publisher(self._msg_class(msgtype), topic, to_rclpy_qos(qos))
        return _RclpyPublisher(self, topic, msgtype, qos, node, handle)

    def _create_subscription(
        self, topic: str, msgtype: str, callback: Callback, qos: QoSProfile, raw: bool, node: NodeId | None
    ) -> Subscription:
        sub = _RclpySubscription(self, topic, msgtype, callback, qos, raw, node)
        sub.handle = self.node.create_subscription(
            self._msg_class(msgtype), topic, lambda data: self._on_data(sub, bytes(data)), to_rclpy_qos(qos), raw=True
        )
        return sub

    def _on_data(self, sub: Subscription, data: bytes) -> None:
        """rclpy hands a callback no per-message publisher, so a publisher allow-list is enforced per topic:
        while any publisher on the topic (graph API) is outside the list, every message on it is refused.
        Authenticated access control on this backend is SROS2 (publish permissions per topic)."""
        if sub.sender_filter is not None:
            for info in self.node.get_publishers_info_by_topic(sub.topic):
                sender = Sender(bytes(info.endpoint_gid)[:16], b"", NodeId(info.node_name, info.node_namespace))
                if not sub._sender_allowed(sender):
                    return
        sub._deliver(data, checked=True)

    def spin_once(self, timeout: float = 0.0) -> int:
        before = sum(s.received for s in self.subscriptions)
        rclpy.spin_once(self.node, timeout_sec=timeout)
        return sum(s.received for s in self.subscriptions) - before

    def now_ns(self) -> int:
        return int(self.node.get_clock().now().nanoseconds)
