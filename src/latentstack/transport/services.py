"""ROS 2 services on topics, framed as rmw_cyclonedds frames them.

A service ``/ns/srv`` of type ``pkg/srv/Name`` is two DDS topics: requests on ``rq/ns/srvRequest`` (type
``pkg::srv::dds_::Name_Request_``) and replies on ``rr/ns/srvReply`` (``Name_Response_``), both RELIABLE,
KEEP_ALL, VOLATILE. Every sample carries rmw_cyclonedds' ``cdds_request_header_t`` ahead of the message
fields: ``uint64 guid`` (the client's request-writer instance handle, echoed by the server so each client
keeps only its own replies) and ``int64 seq`` (the request's sequence number). The header is 16 bytes, a
multiple of every CDR alignment, so wrapping is a byte splice after the 4-byte encapsulation header: the
fields that follow keep their alignment. Other RMWs frame services differently (Fast DDS: RTPS sample
identity), which is why the nodes' data paths use topics only.
"""
from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from latentstack import msgs

from .names import resolve_topic

__all__ = ["SERVICE_REPLY_PREFIX", "SERVICE_REQUEST_PREFIX", "RequestHeader", "Service", "reply_topic",
           "request_topic", "unwrap", "wrap"]

SERVICE_REQUEST_PREFIX = "rq"
SERVICE_REPLY_PREFIX = "rr"
HEADER_SIZE = 16


@dataclass(frozen=True)
class RequestHeader:
    guid: int  # uint64: the client's request writer (rmw_cyclonedds: its instance handle)
    seq: int  # int64


def request_topic(service: str) -> str:
    """``/ns/srv`` -> ``rq/ns/srvRequest`` (rmw_cyclonedds ``make_fqtopic``)."""
    return SERVICE_REQUEST_PREFIX + resolve_topic(service) + "Request"


def reply_topic(service: str) -> str:
    return SERVICE_REPLY_PREFIX + resolve_topic(service) + "Reply"


def _endian(data: bytes) -> str:
    if len(data) < 4 or data[0] != 0 or data[1] not in (0, 1):
        raise msgs.MessageDecodeError("service sample", "no CDR encapsulation header", len(data))
    return "<" if data[1] == 1 else ">"


def wrap(header: RequestHeader, cdr: bytes) -> bytes:
    """CDR of a request/response message (encapsulation header included) -> the framed sample."""
    e = _endian(cdr)
    return bytes(cdr[:4]) + struct.pack(e + "Qq", header.guid, header.seq) + bytes(cdr[4:])


def unwrap(data: bytes) -> tuple[RequestHeader, bytes]:
    """The framed sample -> (header, the message's CDR with its encapsulation header)."""
    e = _endian(data)
    if len(data) < 4 + HEADER_SIZE:
        raise msgs.MessageDecodeError("service sample", "shorter than its request header", len(data))
    guid, seq = struct.unpack_from(e + "Qq", data, 4)
    return RequestHeader(guid, seq), bytes(data[:4]) + bytes(data[4 + HEADER_SIZE:])


Handler = Callable[[Any], Any]


class Service:
    """A service server: decodes each request, calls ``handler(request) -> response``, replies with the header
    echoed. A malformed request or a handler that raises is logged and counted, and gets no reply (the ROS
    client times out); the node keeps running. Backends feed :meth:`handle` and write what it returns."""

    def __init__(self, transport: Any, name: str, srvtype: str, handler: Handler) -> None:
        self.transport = transport
        self.name = resolve_topic(name)
        self.srvtype = msgs.normalize_type(srvtype, check=False)
        self.request_type = self.srvtype + "_Request"
        self.response_type = self.srvtype + "_Response"
        self.handler = handler
        self.handled = 0
        self.errors = 0
        self.closed = False

    def handle(self, data: bytes) -> bytes | None:
        from .base import log

        try:
            header, body = unwrap(data)
            request = msgs.decode(body, self.request_type, self.transport.distro)
        except msgs.MessageError as exc:
            self.errors += 1
            log.warning("service %s: dropped malformed request: %s", self.name, exc)
            return None
        try:
            response = self.handler(request)
            out = msgs.encode(response, self.response_type, self.transport.distro)
        except Exception:  # noqa: BLE001 - a failing handler must not take the node down
            self.errors += 1
            log.exception("service %s: handler failed", self.name)
            return None
        self.handled += 1
        return wrap(header, bytes(out))

    def close(self) -> None:
        self.closed = True
        for e in getattr(self, "endpoints", ()):  # the backend's reader/writer pair
            e.close()
