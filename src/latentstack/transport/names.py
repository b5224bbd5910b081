"""ROS 2 name resolution and the rmw_cyclonedds wire mapping (``/chatter`` -> ``rt/chatter``)."""
from __future__ import annotations

import re

__all__ = [
    "dds_topic_name",
    "resolve_topic",
    "ros_topic_from_dds",
    "service_topic_names",
    "validate_namespace",
    "validate_node_name",
]

# prefixes of rmw_cyclonedds namespace_prefix.hpp
TOPIC_PREFIX = "rt"
REQUEST_PREFIX = "rq"
REPLY_PREFIX = "rr"

_TOKEN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NODE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_tokens(fq: str, what: str) -> None:
    if fq == "/":
        return
    for tok in fq[1:].split("/"):
        if not _TOKEN.match(tok):
            raise ValueError(f"invalid {what} {fq!r}: token {tok!r} must match [A-Za-z_][A-Za-z0-9_]*")


def validate_node_name(name: str) -> str:
    if not isinstance(name, str) or not _NODE.match(name):
        raise ValueError(f"invalid node name {name!r}: must match [A-Za-z_][A-Za-z0-9_]*")
    return name


def validate_namespace(namespace: str) -> str:
    """``""``/``"robot1"``/``"/robot1/"`` -> ``"/"``/``"/robot1"``/``"/robot1"``."""
    ns = "/" + (namespace or "").strip("/")
    if "//" in ns:
        raise ValueError(f"invalid namespace {namespace!r}")
    _check_tokens(ns, "namespace")
    return ns


def resolve_topic(name: str, namespace: str = "/", node_name: str | None = None) -> str:
    """Fully qualified topic name: absolute names stay, relative names join the namespace,
    ``~`` expands to ``<namespace>/<node>``."""
    if not isinstance(name, str) or not name:
        raise ValueError("topic name must be a non-empty string")
    ns = validate_namespace(namespace)
    if name.startswith("~"):
        if node_name is None:
            raise ValueError(f"private topic {name!r} needs a node name")
        base = ns.rstrip("/") + "/" + validate_node_name(node_name)
        rest = name[1:].lstrip("/")
        fq = base + ("/" + rest if rest else "")
    elif name.startswith("/"):
        fq = name
    else:
        fq = ns.rstrip("/") + "/" + name
    if fq.endswith("/") or "//" in fq:
        raise ValueError(f"invalid topic name {name!r} (resolved {fq!r})")
    _check_tokens(fq, "topic name")
    return fq


def dds_topic_name(fq_name: str) -> str:
    """ROS topic -> DDS topic: ``"rt" + fq_name`` keeping the leading slash (rmw_cyclonedds ``make_fqtopic``)."""
    return TOPIC_PREFIX + resolve_topic(fq_name)


def ros_topic_from_dds(dds_name: str) -> str | None:
    """``rt/chatter`` -> ``/chatter``; None for non-ROS topics (``DCPS*``, ``ros_discovery_info``)."""
    if dds_name.startswith(TOPIC_PREFIX + "/"):
        return dds_name[len(TOPIC_PREFIX):]
    return None


def service_topic_names(fq_service: str) -> tuple[str, str]:
    """Service request/reply DDS topics (``rq/<svc>Request``, ``rr/<svc>Reply``)."""
    fq = resolve_topic(fq_service)
    return f"{REQUEST_PREFIX}{fq}Request", f"{REPLY_PREFIX}{fq}Reply"
