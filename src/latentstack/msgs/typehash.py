"""RIHS01 type hashes (REP-2011) computed the way ROS 2's ``rosidl`` computes them.

rosbags' ``Typestore.hash_rihs01`` follows the same JSON recipe but maps a ``.msg`` field of type
``char`` to the IDL type ``char`` (field type id 13). ROS 2 does not: ``rosidl_adapter`` turns a ``.msg``
``char`` into IDL ``uint8`` before ``rosidl_generator_type_description`` sees it, so the field's
type id is 3 (UINT8); ``byte`` becomes IDL ``octet`` = BYTE (16). The generated C of every ROS 2
package shows it (``char_value`` of ``test_msgs/msg/BasicTypes`` is ``FIELD_TYPE_UINT8``,
``byte_value`` is ``FIELD_TYPE_BYTE``). Every hash of a type with a ``char`` field (``std_msgs/Char``,
``rmw_dds_common/Gid`` and so ``ParticipantEntitiesInfo``, ``service_msgs/ServiceEventInfo``) therefore
differs from rosbags'; types without ``char`` hash identically (checked by the golden tests).

The recipe (rosidl_generator_type_description):

1. ``{"type_description": {type_name, fields}, "referenced_type_descriptions": [...]}``; each field is
   ``{name, type: {type_id, capacity, string_capacity, nested_type_name}}`` (``default_value`` is deleted
   before hashing; constants are not part of a type description at all); the referenced types are the
   transitive closure of nested types, sorted by name;
2. ``json.dumps`` with ``separators=(', ', ': ')``, ASCII-escaped, keys in that order;
3. ``"RIHS01_" + sha256(text).hexdigest()``.

Empty messages carry ``uint8 structure_needs_at_least_one_member`` (rosidl_adapter adds it; rosbags'
stores already do).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

__all__ = [
    "FIELD_TYPE_IDS",
    "field_type",
    "hash_type_description",
    "rihs01",
    "service_rihs01",
    "service_type_description",
    "type_description",
]

# type_description_interfaces/msg/FieldType constants.
FIELD_TYPE_IDS: dict[str, int] = {
    "nested": 1, "int8": 2, "uint8": 3, "int16": 4, "uint16": 5, "int32": 6, "uint32": 7, "int64": 8,
    "uint64": 9, "float32": 10, "float64": 11, "float128": 12, "char": 13, "wchar": 14, "bool": 15,
    "byte": 16, "string": 17, "wstring": 18, "fixed_string": 19, "fixed_wstring": 20,
    "bounded_string": 21, "bounded_wstring": 22,
}
ARRAY_OFFSET, BOUNDED_SEQUENCE_OFFSET, UNBOUNDED_SEQUENCE_OFFSET = 48, 96, 144

# The .msg -> IDL mapping of rosidl_adapter (msg/__init__.py MSG_TYPE_TO_IDL): char -> uint8 is the one that
# changes the hash; byte -> octet keeps BYTE. All types in the project's stores come from .msg text.
MSG_TO_IDL = {"char": "uint8"}

_EMPTY_FIELDS = [("structure_needs_at_least_one_member", (1, ("uint8", 0)))]


def _base_type_id(base: str, bound: int) -> tuple[int, int]:
    """(type id, string_capacity) of a scalar base type as rosidl_generator_type_description assigns it."""
    base = MSG_TO_IDL.get(base, base)
    if base in ("string", "wstring") and bound:
        return FIELD_TYPE_IDS["bounded_" + base], int(bound)
    if base not in FIELD_TYPE_IDS:
        raise ValueError(f"no RIHS01 field type for base type {base!r}")
    return FIELD_TYPE_IDS[base], 0


def field_type(desc: tuple) -> tuple[dict[str, Any], str | None]:
    """The ``FieldType`` dict of a rosbags field descriptor, and the nested type it references (if any)."""
    from rosbags.interfaces import Nodetype

    kind, arg = desc
    offset, capacity = 0, 0
    if kind in (Nodetype.ARRAY, Nodetype.SEQUENCE):
        (kind, arg), n = arg
        if desc[0] == Nodetype.ARRAY:
            offset, capacity = ARRAY_OFFSET, int(n)
        elif n:
            offset, capacity = BOUNDED_SEQUENCE_OFFSET, int(n)
        else:
            offset = UNBOUNDED_SEQUENCE_OFFSET
    if kind == Nodetype.NAME:
        return ({"type_id": offset + FIELD_TYPE_IDS["nested"], "capacity": capacity, "string_capacity": 0,
                 "nested_type_name": arg}, arg)
    if kind != Nodetype.BASE:
        raise ValueError(f"unsupported field descriptor {desc!r}")
    tid, string_capacity = _base_type_id(*arg)
    return ({"type_id": offset + tid, "capacity": capacity, "string_capacity": string_capacity,
             "nested_type_name": ""}, None)


def _individual(fielddefs: Mapping[str, Any], typename: str) -> tuple[dict[str, Any], list[str]]:
    if typename not in fielddefs:
        raise KeyError(f"type {typename!r} is not in the typestore")
    fields, nested = [], []
    for name, desc in fielddefs[typename][1] or _EMPTY_FIELDS:
        ftype, ref = field_type(desc)
        fields.append({"name": name, "type": ftype})
        if ref is not None:
            nested.append(ref)
    return {"type_name": typename, "fields": fields}, nested


def type_description(fielddefs: Mapping[str, Any], typename: str) -> dict[str, Any]:
    """The hashable ``TypeDescription`` dict (no default values) of ``typename`` from rosbags ``fielddefs``."""
    top, todo = _individual(fielddefs, typename)
    seen: dict[str, dict[str, Any]] = {}
    while todo:
        name = todo.pop()
        if name in seen or name == typename:
            continue
        seen[name], more = _individual(fielddefs, name)
        todo.extend(more)
    return {"type_description": top, "referenced_type_descriptions": [seen[k] for k in sorted(seen)]}


def hash_type_description(description: Mapping[str, Any]) -> str:
    """``RIHS01_<sha256>`` of a type description dict (rosidl's exact JSON formatting)."""
    text = json.dumps(description, ensure_ascii=True, indent=None, separators=(", ", ": "), sort_keys=False)
    return "RIHS01_" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def rihs01(fielddefs: Mapping[str, Any], typename: str) -> str:
    """ROS 2's RIHS01 hash of ``typename`` (a ``pkg/msg/Type`` key of rosbags ``Typestore.fielddefs``)."""
    return hash_type_description(type_description(fielddefs, typename))


def _nested(name: str, typename: str, capacity: int = 0) -> dict[str, Any]:
    tid = FIELD_TYPE_IDS["nested"] + (BOUNDED_SEQUENCE_OFFSET if capacity else 0)
    return {"name": name, "type": {"type_id": tid, "capacity": capacity, "string_capacity": 0,
                                   "nested_type_name": typename}}


def service_type_description(fielddefs: Mapping[str, Any], service: str) -> dict[str, Any]:
    """The hashable description of service ``pkg/srv/Name`` (Iron and later), as rosidl builds it.

    The service is a struct of ``request_message``, ``response_message`` and ``event_message``; the event
    (``Name_Event``) holds ``service_msgs/msg/ServiceEventInfo info`` and the request and response as
    ``[<=1]`` sequences. ``pkg/srv/Name_Request`` and ``pkg/srv/Name_Response`` must be in ``fielddefs``
    (register them from the ``.srv`` halves); ``ServiceEventInfo`` comes from the Jazzy store.
    """
    req, resp, event = f"{service}_Request", f"{service}_Response", f"{service}_Event"
    event_fields = [_nested("info", "service_msgs/msg/ServiceEventInfo"), _nested("request", req, 1),
                    _nested("response", resp, 1)]
    top = {"type_name": service, "fields": [_nested("request_message", req), _nested("response_message", resp),
                                             _nested("event_message", event)]}
    refs = {event: {"type_name": event, "fields": event_fields}}
    for name in (req, resp, "service_msgs/msg/ServiceEventInfo"):
        sub = type_description(fielddefs, name)
        for d in [sub["type_description"], *sub["referenced_type_descriptions"]]:
            refs[d["type_name"]] = d
    return {"type_description": top, "referenced_type_descriptions": [refs[k] for k in sorted(refs)]}


def service_rihs01(fielddefs: Mapping[str, Any], service: str) -> str:
    """ROS 2's RIHS01 hash of service ``pkg/srv/Name`` (what rmw advertises for its request/reply topics)."""
    return hash_type_description(service_type_description(fielddefs, service))
