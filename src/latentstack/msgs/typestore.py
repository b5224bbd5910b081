"""ROS 2 message types, CDR codec and RIHS01 hashes, all from rosbags' typestores (plus ``wstring``).

rosbags' ``ROS2_HUMBLE`` / ``ROS2_JAZZY`` stores are the single schema source: message
classes, CDR (de)serialization and RIHS01 type hashes all come from the same field
definitions, so the bytes we put on DDS, in MCAP files and in the in-process bus agree.
Types that ROS 2 does not ship in its core (the vision_msgs detections) are registered
from their ``.msg`` text into every store this module hands out.

Type names are ``pkg/msg/Type`` everywhere in the project; :func:`normalize_type` also
accepts ``pkg/Type`` and the DDS form ``pkg::msg::dds_::Type_``.
"""
from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from typing import Any

from .errors import MessageDecodeError, MessageEncodeError, UnknownMessageTypeError

__all__ = [
    "DEFAULT_DISTRO",
    "DISTROS",
    "EXTRA_MSG_DEFINITIONS",
    "dds_type_name",
    "decode",
    "default_distro",
    "encode",
    "message_definition",
    "msg_class",
    "new",
    "normalize_type",
    "register_msg",
    "rihs01",
    "ros_type_from_dds",
    "service_rihs01",
    "type_of",
    "typestore",
]

DISTROS = ("humble", "jazzy")
DEFAULT_DISTRO = "jazzy"

# vision_msgs 4.1 (the Humble/Jazzy release) detection types, field for field; comments dropped
# (they do not enter RIHS01). Registered under the real package name so a ROS 2 graph with
# vision_msgs installed decodes them.
EXTRA_MSG_DEFINITIONS: dict[str, str] = {
    "vision_msgs/msg/Point2D": "float64 x\nfloat64 y\n",
    "vision_msgs/msg/Pose2D": "vision_msgs/Point2D position\nfloat64 theta\n",
    "vision_msgs/msg/ObjectHypothesis": "string class_id\nfloat64 score\n",
    "vision_msgs/msg/ObjectHypothesisWithPose": (
        "vision_msgs/ObjectHypothesis hypothesis\ngeometry_msgs/PoseWithCovariance pose\n"
    ),
    "vision_msgs/msg/BoundingBox2D": "vision_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n",
    "vision_msgs/msg/BoundingBox3D": "geometry_msgs/Pose center\ngeometry_msgs/Vector3 size\n",
    "vision_msgs/msg/Detection2D": (
        "std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n"
        "vision_msgs/BoundingBox2D bbox\nstring id\n"
    ),
    "vision_msgs/msg/Detection2DArray": "std_msgs/Header header\nvision_msgs/Detection2D[] detections\n",
    "vision_msgs/msg/Detection3D": (
        "std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n"
        "vision_msgs/BoundingBox3D bbox\nstring id\n"
    ),
    "vision_msgs/msg/Detection3DArray": "std_msgs/Header header\nvision_msgs/Detection3D[] detections\n",
    # rcl_interfaces parameter services (identical in Humble and Jazzy), request and response halves, for the
    # ROS 2 parameter services every node core offers over DDS (latentstack.nodes.parameters)
    "rcl_interfaces/srv/GetParameters_Request": "string[] names\n",
    "rcl_interfaces/srv/GetParameters_Response": "rcl_interfaces/ParameterValue[] values\n",
    "rcl_interfaces/srv/SetParameters_Request": "rcl_interfaces/Parameter[] parameters\n",
    "rcl_interfaces/srv/SetParameters_Response": "rcl_interfaces/SetParametersResult[] results\n",
    "rcl_interfaces/srv/SetParametersAtomically_Request": "rcl_interfaces/Parameter[] parameters\n",
    "rcl_interfaces/srv/SetParametersAtomically_Response": "rcl_interfaces/SetParametersResult result\n",
    "rcl_interfaces/srv/ListParameters_Request": "uint64 DEPTH_RECURSIVE=0\nstring[] prefixes\nuint64 depth\n",
    "rcl_interfaces/srv/ListParameters_Response": "rcl_interfaces/ListParametersResult result\n",
    "rcl_interfaces/srv/DescribeParameters_Request": "string[] names\n",
    "rcl_interfaces/srv/DescribeParameters_Response": "rcl_interfaces/ParameterDescriptor[] descriptors\n",
    "rcl_interfaces/srv/GetParameterTypes_Request": "string[] names\n",
    "rcl_interfaces/srv/GetParameterTypes_Response": "uint8[] types\n",
    # The project's own interface package (ros/latentstack_msgs, built by colcon on a ROS machine); this text is
    # its .msg without comments (tests/msgs/test_action_command.py keeps the two equal).
    "latentstack_msgs/msg/ActionCommand": (
        "uint8 KIND_ACTION=0\nuint8 KIND_WATCHDOG_HOLD=1\nstd_msgs/Header header\nuint64 session\n"
        "uint64 sequence\nuint8 kind\nfloat32[] data\n"
    ),
}

_STORES: dict[str, Any] = {}
_USER_TYPES: dict[str, str] = {}
_LOCK = threading.Lock()
_DDS_RE = re.compile(r"^(?P<pkg>[A-Za-z0-9_]+)::(?P<kind>msg|srv|action)::dds_::(?P<name>[A-Za-z0-9_]+)_$")
_TYPE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*/(msg|srv|action)/[A-Za-z][A-Za-z0-9_]*$")


def default_distro() -> str:
    """``$LATENTSTACK_ROS_DISTRO`` (``humble`` | ``jazzy``), else Jazzy: the distro that uses type hashes."""
    d = os.environ.get("LATENTSTACK_ROS_DISTRO", DEFAULT_DISTRO).lower()
    return d if d in DISTROS else DEFAULT_DISTRO


def _check_distro(distro: str | None) -> str:
    d = default_distro() if distro is None else str(distro).lower()
    if d not in DISTROS:
        raise ValueError(f"unsupported ROS 2 distro {distro!r}; choose one of {DISTROS}")
    return d


def _register_text(store: Any, typename: str, text: str) -> None:
    from .wstring import types_from_msg  # rosbags' .msg parser + wstring

    store.register(types_from_msg(text, typename))


def typestore(distro: str | None = None) -> Any:
    """The (cached) rosbags ``Typestore`` of ``distro`` with the project's extra types registered."""
    d = _check_distro(distro)
    store = _STORES.get(d)
    if store is not None:
        return store
    with _LOCK:
        if d not in _STORES:
            from importlib import import_module

            from rosbags.typesys import Stores

            from .wstring import Ros2Typestore

            # rosbags' own store module, wrapped in the subclass that adds wstring CDR and ROS 2's RIHS01 rule
            which = Stores.ROS2_HUMBLE if d == "humble" else Stores.ROS2_JAZZY
            store = Ros2Typestore(import_module(f"rosbags.typesys.stores.{which.value}"))
            for name, text in {**EXTRA_MSG_DEFINITIONS, **_USER_TYPES}.items():
                _register_text(store, name, text)
            _STORES[d] = store
    return _STORES[d]


def register_msg(typename: str, text: str) -> None:
    """Adds a message type from ``.msg`` text to every distro's store (now and future ones)."""
    name = normalize_type(typename, check=False)
    with _LOCK:
        _USER_TYPES[name] = text
        for store in _STORES.values():
            _register_text(store, name, text)


def normalize_type(name: str, *, check: bool = True, distro: str | None = None) -> str:
    """``pkg/Type``, ``pkg/msg/Type`` or ``pkg::msg::dds_::Type_`` -> ``pkg/msg/Type``."""
    if not isinstance(name, str) or not name:
        raise UnknownMessageTypeError(f"message type must be a non-empty string, got {name!r}")
    m = _DDS_RE.match(name)
    if m:
        out = f"{m['pkg']}/{m['kind']}/{m['name']}"
    else:
        parts = name.strip("/").split("/")
        if len(parts) == 2:
            out = f"{parts[0]}/msg/{parts[1]}"
        elif len(parts) == 3:
            out = "/".join(parts)
        else:
            raise UnknownMessageTypeError(f"malformed message type name {name!r} (want pkg/msg/Type)")
    if not _TYPE_RE.match(out):
        raise UnknownMessageTypeError(f"malformed message type name {name!r} (want pkg/msg/Type)")
    if check and out not in typestore(distro).fielddefs:
        raise UnknownMessageTypeError(
            f"unknown message type {out!r} in the ROS 2 {_check_distro(distro)} typestore; "
            "register it with latentstack.msgs.register_msg(name, msg_text)"
        )
    return out


def dds_type_name(typename: str) -> str:
    """``sensor_msgs/msg/Image`` -> ``sensor_msgs::msg::dds_::Image_`` (rmw_cyclonedds naming)."""
    pkg, kind, name = normalize_type(typename, check=False).split("/")
    return f"{pkg}::{kind}::dds_::{name}_"


def ros_type_from_dds(dds_name: str) -> str:
    """Inverse of :func:`dds_type_name`."""
    m = _DDS_RE.match(dds_name)
    if not m:
        raise UnknownMessageTypeError(f"{dds_name!r} is not a ROS 2 DDS type name (pkg::msg::dds_::Type_)")
    return f"{m['pkg']}/{m['kind']}/{m['name']}"


def msg_class(typename: str, distro: str | None = None) -> type:
    """The rosbags dataclass for ``typename``."""
    return typestore(distro).types[normalize_type(typename, distro=distro)]


def new(typename: str, distro: str | None = None, **fields: Any) -> Any:
    """A message with every field defaulted (zeros, empty strings/sequences), then ``fields`` set.

    rosbags' classes have no defaults; this builds them recursively so callers only name what matters.
    """
    name = normalize_type(typename, distro=distro)
    store = typestore(distro)
    values = {k: _default_value(desc, store) for k, desc in store.fielddefs[name][1] if k not in fields}
    try:
        return store.types[name](**values, **fields)
    except TypeError as exc:
        raise MessageEncodeError(f"bad fields for {name}: {exc}") from None


_NP_DTYPES = {
    "bool": "bool", "byte": "uint8", "char": "uint8", "int8": "int8", "uint8": "uint8", "int16": "int16",
    "uint16": "uint16", "int32": "int32", "uint32": "uint32", "int64": "int64", "uint64": "uint64",
    "float32": "float32", "float64": "float64",
}


def _default_value(desc: tuple, store: Any) -> Any:
    import numpy as np
    from rosbags.typesys.base import Nodetype

    kind, arg = desc
    if kind == Nodetype.NAME:
        sub = store.fielddefs[arg][1]
        return store.types[arg](**{k: _default_value(d, store) for k, d in sub})
    if kind == Nodetype.BASE:
        t = arg[0]
        if t in ("string", "wstring"):
            return ""
        if t == "bool":
            return False
        return 0.0 if t.startswith("float") else 0
    sub, n = arg
    if kind == Nodetype.ARRAY:
        if sub[0] == Nodetype.BASE and sub[1][0] in _NP_DTYPES:
            return np.zeros(n, dtype=_NP_DTYPES[sub[1][0]])
        return [_default_value(sub, store) for _ in range(n)]
    # sequence
    if sub[0] == Nodetype.BASE and sub[1][0] in _NP_DTYPES:
        return np.zeros(0, dtype=_NP_DTYPES[sub[1][0]])
    return []


def type_of(msg: Any) -> str:
    """The ``pkg/msg/Type`` name of a rosbags message object."""
    t = getattr(msg, "__msgtype__", None)
    if not isinstance(t, str):
        raise MessageEncodeError(f"{type(msg).__name__} is not a ROS 2 message object (no __msgtype__)")
    return t


def encode(msg: Any, typename: str | None = None, distro: str | None = None) -> bytes:
    """CDR (little endian, 4-byte encapsulation header included) bytes of ``msg``."""
    name = normalize_type(typename or type_of(msg), distro=distro)
    try:
        return bytes(typestore(distro).serialize_cdr(msg, name, little_endian=True))
    except Exception as exc:  # rosbags raises struct.error / AttributeError / TypeError on bad fields
        raise MessageEncodeError(f"cannot encode {type(msg).__name__} as {name}: {exc}") from exc


def decode(data: bytes | bytearray | memoryview, typename: str, distro: str | None = None) -> Any:
    """Message from CDR bytes; anything malformed raises :class:`MessageDecodeError` (never crashes)."""
    name = normalize_type(typename, distro=distro)
    try:
        size = len(data)
    except TypeError:
        raise MessageDecodeError(name, f"expected bytes, got {type(data).__name__}") from None
    try:
        raw = bytes(data)
    except Exception as exc:  # noqa: BLE001 - any buffer failure is "bad bytes", never a crash
        raise MessageDecodeError(name, f"unreadable buffer: {exc}", size) from None
    try:
        return typestore(distro).deserialize_cdr(raw, name)
    except RecursionError:
        raise MessageDecodeError(name, "nesting too deep", size) from None
    except Exception as exc:  # noqa: BLE001 - rosbags: SerdeError, IndexError, ...: all mean "bad bytes"
        raise MessageDecodeError(name, f"{type(exc).__name__}: {exc}", size) from None


def rihs01(typename: str, distro: str | None = None) -> str:
    """REP-2011 type hash ``RIHS01_<64 hex>`` with ROS 2's rules (``.msg`` ``char`` -> UINT8), see ``typehash.py``.

    Identical in the Humble and Jazzy stores for types whose definition did not change between them
    (``rmw_dds_common/msg/Gid`` did: ``char[24]`` in Humble, ``char[16]`` from Iron on).
    """
    from .typehash import rihs01 as _rihs01

    return _rihs01(typestore(distro).fielddefs, normalize_type(typename, distro=distro))


def service_rihs01(service: str, distro: str | None = None) -> str:
    """RIHS01 of service ``pkg/srv/Name`` (Jazzy; its ``Name_Request``/``Name_Response`` must be registered).

    Humble has no service type hashes (and no ``service_msgs``), so this raises for the Humble store.
    """
    from .typehash import service_rihs01 as _service_rihs01

    name = normalize_type(service, check=False)
    return _service_rihs01(typestore(distro).fielddefs, name)


def message_definition(typename: str, distro: str | None = None) -> str:
    """Concatenated ``.msg`` definition (the form MCAP and rosbag2 store)."""
    text, _ = typestore(distro).generate_msgdef(normalize_type(typename, distro=distro), ros_version=2)
    return text


def field_names(typename: str, distro: str | None = None) -> tuple[str, ...]:
    """Field names of ``typename`` in wire order."""
    return tuple(k for k, _ in typestore(distro).fielddefs[normalize_type(typename, distro=distro)][1])


def as_mapping(msg: Any) -> Mapping[str, Any]:
    """Shallow field -> value view (for logs and tests)."""
    return {k: getattr(msg, k) for k in getattr(msg, "__dataclass_fields__", {}) if k != "__msgtype__"}
