"""One Transport interface, several backends: ``inproc`` | ``dds`` (Cyclone, ROS 2 wire names) | ``zenoh``
(rmw_zenoh wire contract) | ``rclpy``.

``make_transport("inproc")`` for tests and single-process graphs, ``make_transport("dds",
domain_id=..., config="loopback")`` to appear in a ROS 2 graph without ROS, ``"rclpy"`` is
used by the thin wrappers in :mod:`latentstack.ros` when ROS 2 is installed; ``make_transport("zenoh",
config="loopback"|"router"|<file.json5>, ...)`` talks to rmw_zenoh graphs. ``"auto"`` picks rclpy when it
imports, else dds.
"""
from __future__ import annotations

from typing import Any

from .base import NodeId, Publisher, RawMessage, Subscription, TopicTypeError, Transport, TransportError
from .inproc import InProcBus, InProcTransport
from .names import dds_topic_name, resolve_topic, ros_topic_from_dds, service_topic_names
from .qos import (
    DEFAULT,
    PARAMETERS,
    PROFILES,
    SENSOR_DATA,
    TRANSIENT_LOCAL,
    Durability,
    History,
    QoSProfile,
    Reliability,
    qos_compatible,
    qos_profile,
)

__all__ = [
    "DEFAULT",
    "PARAMETERS",
    "PROFILES",
    "SENSOR_DATA",
    "TRANSIENT_LOCAL",
    "TRANSPORT_KINDS",
    "Durability",
    "History",
    "InProcBus",
    "InProcTransport",
    "NodeId",
    "Publisher",
    "QoSProfile",
    "RawMessage",
    "Reliability",
    "Subscription",
    "TopicTypeError",
    "Transport",
    "TransportError",
    "dds_topic_name",
    "make_transport",
    "qos_compatible",
    "qos_profile",
    "resolve_topic",
    "ros_topic_from_dds",
    "service_topic_names",
]

TRANSPORT_KINDS = ("inproc", "dds", "zenoh", "rclpy", "auto")


def make_transport(kind: str = "inproc", **kwargs: Any) -> Transport:
    """Backend by name; ``kwargs`` go to its constructor (e.g. ``domain_id``, ``config``, ``distro``)."""
    if kind == "auto":
        from .rclpy_backend import RCLPY_AVAILABLE

        kind = "rclpy" if RCLPY_AVAILABLE and "node" in kwargs else "dds"
    if kind == "inproc":
        return InProcTransport(**kwargs)
    if kind == "dds":
        from .dds import DdsTransport

        return DdsTransport(**kwargs)
    if kind == "zenoh":
        from .zenoh import ZenohTransport

        return ZenohTransport(**kwargs)
    if kind == "rclpy":
        from .rclpy_backend import RclpyTransport

        return RclpyTransport(**kwargs)
    raise ValueError(f"unknown transport {kind!r}; choose one of {TRANSPORT_KINDS}")
