"""cyclonedds-python ``IdlStruct`` classes generated from the typestore, with ROS 2 DDS type names.

The DDS backend registers topics with these classes, so discovery announces
``pkg::msg::dds_::Type_`` for the topic *and for every nested struct* (rmw_cyclonedds naming);
payload bytes are produced by rosbags (XCDR1 == plain CDR for ROS 2's final structs), and a
contract test checks that ``IdlStruct.serialize(use_version_2=False)`` gives the same bytes.
Requires the optional ``cyclonedds`` package; imported lazily by the DDS backend only.
"""
from __future__ import annotations

import threading
from typing import Any

from .typestore import dds_type_name, normalize_type, typestore

__all__ = ["idl_class"]

_CACHE: dict[tuple[str, str], type] = {}
_LOCK = threading.RLock()


def _primitives() -> dict[str, Any]:
    from cyclonedds.idl import types as t

    # ROS 2 IDL mapping (rosidl_adapter): char -> uint8, byte -> octet.
    return {
        "bool": bool, "byte": t.byte, "char": t.uint8, "int8": t.int8, "uint8": t.uint8,
        "int16": t.int16, "uint16": t.uint16, "int32": t.int32, "uint32": t.uint32,
        "int64": t.int64, "uint64": t.uint64, "float32": t.float32, "float64": t.float64,
    }


def idl_class(typename: str, distro: str | None = None) -> type:
    """The ``IdlStruct`` subclass for ``typename`` (cached per distro)."""
    from rosbags.typesys.base import Nodetype

    name = normalize_type(typename, distro=distro)
    store = typestore(distro)
    key = (str(id(store)), name)
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
        from cyclonedds.idl import make_idl_struct
        from cyclonedds.idl import types as t

        prims = _primitives()

        def conv(desc: tuple) -> Any:
            kind, arg = desc
            if kind == Nodetype.NAME:
                return idl_class(arg, distro)
            if kind == Nodetype.BASE:
                base, bound = arg
                if base == "string":
                    return t.bounded_str[bound] if bound else str
                return prims[base]
            sub, n = arg
            if kind == Nodetype.ARRAY:
                return t.array[conv(sub), n]
            return t.sequence[conv(sub), n] if n else t.sequence[conv(sub)]

        fields = {fname: conv(desc) for fname, desc in store.fielddefs[name][1]}
        cls = make_idl_struct(name.split("/")[-1] + "_", dds_type_name(name), fields)
        _CACHE[key] = cls
        return cls
