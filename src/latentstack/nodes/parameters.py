"""ROS 2 parameter services, ``/parameter_events`` and ``/rosout`` for a node core, without rclpy.

What ``ros2 param list|get|set|describe`` and ``ros2 topic echo /rosout`` talk to on a node: the services
``~/list_parameters``, ``~/get_parameters``, ``~/get_parameter_types``, ``~/describe_parameters``,
``~/set_parameters`` and ``~/set_parameters_atomically`` (``rcl_interfaces/srv/*``), a
``rcl_interfaces/msg/ParameterEvent`` on ``/parameter_events`` for every accepted change, and the node's log
records as ``rcl_interfaces/msg/Log`` on ``/rosout``. Parameters are the fields of the core's parameter
dataclass; the ones in the core's ``RUNTIME_PARAMETERS`` are writable (through its ``on_set_parameters``, which
validates the whole change before applying it), the others are read-only after start-up, as described.
Offered on transports that implement services (DDS); the rclpy wrappers use rclpy's own.
"""
from __future__ import annotations

import dataclasses
import logging
import typing
from collections.abc import Sequence
from typing import Any

from latentstack import msgs
from latentstack.transport.qos import Durability, History, QoSProfile, Reliability

__all__ = ["PARAMETER_EVENTS_QOS", "ROSOUT_QOS", "ParameterServices", "RosoutHandler", "from_parameter_value",
           "to_parameter_value"]

# rmw qos_profile_parameter_events; rcl's rosout profile (Jazzy adds a 10 s lifespan)
PARAMETER_EVENTS_QOS = QoSProfile(Reliability.RELIABLE, Durability.VOLATILE, History.KEEP_LAST, 1000)
ROSOUT_QOS = QoSProfile(Reliability.RELIABLE, Durability.TRANSIENT_LOCAL, History.KEEP_LAST, 1000)

NOT_SET, BOOL, INTEGER, DOUBLE, STRING, BYTE_ARRAY, BOOL_ARRAY, INTEGER_ARRAY, DOUBLE_ARRAY, STRING_ARRAY = range(10)
_SCALAR_TYPES = {bool: BOOL, int: INTEGER, float: DOUBLE, str: STRING}
_ARRAY_TYPES = {bool: BOOL_ARRAY, int: INTEGER_ARRAY, float: DOUBLE_ARRAY, str: STRING_ARRAY}
_FIELD = {BOOL: "bool_value", INTEGER: "integer_value", DOUBLE: "double_value", STRING: "string_value",
          BYTE_ARRAY: "byte_array_value", BOOL_ARRAY: "bool_array_value", INTEGER_ARRAY: "integer_array_value",
          DOUBLE_ARRAY: "double_array_value", STRING_ARRAY: "string_array_value"}


def parameter_type(hint: Any) -> int:
    """ROS parameter type of a dataclass field's type hint (``tuple[float, ...]`` -> DOUBLE_ARRAY)."""
    if hint in _SCALAR_TYPES:
        return _SCALAR_TYPES[hint]
    if typing.get_origin(hint) in (tuple, list, Sequence):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        if args and args[0] in _ARRAY_TYPES:
            return _ARRAY_TYPES[args[0]]
    return STRING  # anything else travels as its string form


def to_parameter_value(value: Any, ptype: int, distro: str | None = None) -> Any:
    import numpy as np

    kw: dict[str, Any] = {"type": ptype}
    if ptype == BOOL_ARRAY:
        kw["bool_array_value"] = np.asarray([bool(v) for v in value], bool)
    elif ptype == INTEGER_ARRAY:
        kw["integer_array_value"] = np.asarray(list(value), np.int64)
    elif ptype == DOUBLE_ARRAY:
        kw["double_array_value"] = np.asarray(list(value), np.float64)
    elif ptype == STRING_ARRAY:
        kw["string_array_value"] = [str(v) for v in value]
    elif ptype != NOT_SET:
        kw[_FIELD[ptype]] = value if ptype != STRING else str(value)
    return msgs.new("rcl_interfaces/msg/ParameterValue", distro, **_defaults(kw, distro))


def _defaults(kw: dict[str, Any], distro: str | None) -> dict[str, Any]:
    import numpy as np

    out = {"type": NOT_SET, "bool_value": False, "integer_value": 0, "double_value": 0.0, "string_value": "",
           "byte_array_value": np.zeros(0, np.uint8), "bool_array_value": np.zeros(0, bool),
           "integer_array_value": np.zeros(0, np.int64), "double_array_value": np.zeros(0, np.float64),
           "string_array_value": []}
    out.update(kw)
    return out


def from_parameter_value(v: Any) -> Any:
    """Python value of a ``ParameterValue`` (arrays as tuples); ``ValueError`` for an unknown type."""
    t = int(v.type)
    if t == NOT_SET:
        return None
    if t not in _FIELD:
        raise ValueError(f"unknown parameter type {t}")
    x = getattr(v, _FIELD[t])
    if t in (BOOL_ARRAY, INTEGER_ARRAY, DOUBLE_ARRAY, STRING_ARRAY, BYTE_ARRAY):
        return tuple(x.tolist() if hasattr(x, "tolist") else x)
    return x


class ParameterServices:
    """The parameter services of one node core on its transport (see the module docstring)."""

    SERVICES = ("list_parameters", "get_parameters", "get_parameter_types", "describe_parameters",
                "set_parameters", "set_parameters_atomically")

    def __init__(self, node: Any) -> None:
        self.node = node
        t = node.transport
        self.distro = t.distro
        self.hints = typing.get_type_hints(type(node.params))
        self.names = [f.name for f in dataclasses.fields(node.params)]
        self.events = node.create_publisher("/parameter_events", "rcl_interfaces/msg/ParameterEvent",
                                            PARAMETER_EVENTS_QOS)
        self.services = []
        for srv in self.SERVICES:
            handler = getattr(self, "_" + srv)
            srvtype = "rcl_interfaces/srv/" + "".join(p.capitalize() for p in srv.split("_"))
            self.services.append(t.create_service(node.topic("~/" + srv), srvtype, handler, node=node.node_id))

    def _new(self, typename: str, **kw: Any) -> Any:
        return msgs.new(typename, self.distro, **kw)

    def value(self, name: str) -> Any:
        if name not in self.names:
            return to_parameter_value(None, NOT_SET, self.distro)
        return to_parameter_value(getattr(self.node.params, name), parameter_type(self.hints[name]), self.distro)

    # -- handlers (request -> response)
    def _list_parameters(self, req: Any) -> Any:
        prefixes = list(req.prefixes)
        names = [n for n in self.names if not prefixes or any(n == p or n.startswith(p + ".") for p in prefixes)]
        result = self._new("rcl_interfaces/msg/ListParametersResult", names=names, prefixes=[])
        return self._new("rcl_interfaces/srv/ListParameters_Response", result=result)

    def _get_parameters(self, req: Any) -> Any:
        return self._new("rcl_interfaces/srv/GetParameters_Response", values=[self.value(n) for n in req.names])

    def _get_parameter_types(self, req: Any) -> Any:
        import numpy as np

        types = [parameter_type(self.hints[n]) if n in self.names else NOT_SET for n in req.names]
        return self._new("rcl_interfaces/srv/GetParameterTypes_Response", types=np.asarray(types, np.uint8))

    def _describe_parameters(self, req: Any) -> Any:
        runtime = set(getattr(self.node, "RUNTIME_PARAMETERS", ()))
        out = []
        for n in req.names:
            known = n in self.names
            out.append(self._new(
                "rcl_interfaces/msg/ParameterDescriptor", name=n,
                type=parameter_type(self.hints[n]) if known else NOT_SET,
                description="" if known else "no such parameter",
                additional_constraints="validated with the node's parameter dataclass",
                read_only=not (known and n in runtime), dynamic_typing=False,
                floating_point_range=[], integer_range=[]))
        return self._new("rcl_interfaces/srv/DescribeParameters_Response", descriptors=out)

    def _apply(self, params: Sequence[Any]) -> tuple[bool, str]:
        try:
            changes = {str(p.name): from_parameter_value(p.value) for p in params}
        except ValueError as exc:
            return False, str(exc)
        unknown = sorted(set(changes) - set(self.names))
        if unknown:
            return False, f"unknown parameters {unknown}"
        setter = getattr(self.node, "on_set_parameters", None)
        if setter is None:
            return False, f"{self.node.fq_name}: parameters are fixed at start-up"
        ok, reason = setter(changes)
        if ok:
            self._event(list(changes))
        return bool(ok), str(reason)

    def _set_parameters(self, req: Any) -> Any:
        results = []
        for p in req.parameters:  # one by one, as rclpy's set_parameters
            ok, reason = self._apply([p])
            results.append(self._new("rcl_interfaces/msg/SetParametersResult", successful=ok, reason=reason))
        return self._new("rcl_interfaces/srv/SetParameters_Response", results=results)

    def _set_parameters_atomically(self, req: Any) -> Any:
        ok, reason = self._apply(list(req.parameters))
        return self._new("rcl_interfaces/srv/SetParametersAtomically_Response",
                         result=self._new("rcl_interfaces/msg/SetParametersResult", successful=ok, reason=reason))

    def _event(self, changed: list[str]) -> None:
        params = [self._new("rcl_interfaces/msg/Parameter", name=n, value=self.value(n)) for n in changed]
        self.events.publish(self._new(
            "rcl_interfaces/msg/ParameterEvent", stamp=msgs.ns_to_time(self.node.now_ns(), self.distro),
            node=self.node.fq_name, new_parameters=[], changed_parameters=params, deleted_parameters=[]))

    def close(self) -> None:
        for s in self.services:
            s.close()


_LEVELS = ((logging.CRITICAL, 50), (logging.ERROR, 40), (logging.WARNING, 30), (logging.INFO, 20))


class RosoutHandler(logging.Handler):
    """Publishes a node's log records on ``/rosout`` (``rcl_interfaces/msg/Log``); never raises."""

    def __init__(self, node: Any, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.node = node
        self.pub = node.create_publisher("/rosout", "rcl_interfaces/msg/Log", ROSOUT_QOS)

    def emit(self, record: logging.LogRecord) -> None:
        if self.pub.closed:
            return
        try:
            level = next((ros for py, ros in _LEVELS if record.levelno >= py), 10)
            d = self.node.transport.distro
            self.pub.publish(msgs.new(
                "rcl_interfaces/msg/Log", d, stamp=msgs.ns_to_time(int(record.created * 1e9), d), level=level,
                name=self.node.fq_name.lstrip("/").replace("/", "."), msg=record.getMessage()[:4096],
                file=record.pathname, function=record.funcName, line=int(record.lineno)))
        except Exception:  # noqa: BLE001 - logging must never take the node down
            self.handleError(record)
