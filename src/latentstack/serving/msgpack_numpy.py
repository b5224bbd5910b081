"""NumPy arrays over msgpack, wire-compatible with openpi's ``openpi_client.msgpack_numpy``.

An array travels as ``{b"__ndarray__": True, b"data": raw bytes, b"dtype": dtype.str, b"shape": [..]}`` and a
NumPy scalar as ``{b"__npgeneric__": True, b"data": item, b"dtype": dtype.str}`` (bytes keys, as openpi packs
them; str keys are accepted on decode too). Object, void (structured) and complex dtypes are refused on both
sides: decoding never builds Python objects from the payload, and there is no pickle anywhere.

Imports numpy and msgpack only (the robot-side client must not need the model stack).
"""
from __future__ import annotations

import functools
from typing import Any

import msgpack
import numpy as np

__all__ = ["MAX_ARRAY_BYTES", "Packer", "UnsupportedDtype", "pack_array", "packb", "unpack_array", "unpackb"]

REFUSED_KINDS = ("V", "O", "c")  # structured/void, object, complex (openpi refuses the same three)
MAX_ARRAY_BYTES = 1 << 30  # one decoded array may not claim more than 1 GiB (input cap)


class UnsupportedDtype(ValueError):
    """An array whose dtype may not travel (object, void/structured, complex) or a malformed array dict."""


def pack_array(obj: Any) -> Any:
    """msgpack ``default`` hook: arrays and NumPy scalars -> tagged dicts; refuses object dtypes."""
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind in REFUSED_KINDS:
        raise UnsupportedDtype(f"unsupported dtype {obj.dtype} (object, structured and complex arrays are refused)")
    if isinstance(obj, np.ndarray):
        return {b"__ndarray__": True, b"data": np.ascontiguousarray(obj).tobytes(), b"dtype": obj.dtype.str,
                b"shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"cannot serialize {type(obj).__name__} (msgpack-numpy carries arrays, numbers, str, dicts)")


def _get(obj: dict, key: str) -> Any:
    return obj[key.encode()] if key.encode() in obj else obj[key]


def _dtype(value: Any) -> np.dtype:
    if isinstance(value, bytes):
        value = value.decode("ascii")
    if not isinstance(value, str):
        raise UnsupportedDtype(f"dtype must be a string, got {type(value).__name__}")
    dt = np.dtype(value)
    if dt.kind in REFUSED_KINDS or dt.hasobject:
        raise UnsupportedDtype(f"unsupported dtype {dt} (object, structured and complex arrays are refused)")
    return dt


def unpack_array(obj: dict) -> Any:
    """msgpack ``object_hook``: tagged dicts -> arrays (a writable copy) / NumPy scalars; other dicts unchanged."""
    if b"__ndarray__" in obj or "__ndarray__" in obj:
        dt = _dtype(_get(obj, "dtype"))
        shape = _get(obj, "shape")
        if not isinstance(shape, (list, tuple)) or not all(isinstance(s, int) and s >= 0 for s in shape):
            raise UnsupportedDtype(f"array shape must be a list of non-negative ints, got {shape!r}")
        data = _get(obj, "data")
        if not isinstance(data, (bytes, bytearray)):
            raise UnsupportedDtype("array data must be bytes")
        n = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        if n != len(data) or n > MAX_ARRAY_BYTES:
            raise UnsupportedDtype(f"array of shape {list(shape)} {dt} needs {n} bytes, got {len(data)}")
        return np.frombuffer(data, dtype=dt).reshape(shape).copy()
    if b"__npgeneric__" in obj or "__npgeneric__" in obj:
        dt = _dtype(_get(obj, "dtype"))
        return dt.type(_get(obj, "data"))
    return obj


Packer = functools.partial(msgpack.Packer, default=pack_array)
packb = functools.partial(msgpack.packb, default=pack_array)
# strict_map_key=False: openpi's array dicts have bytes keys; raw=False: msgpack str -> Python str
unpackb = functools.partial(msgpack.unpackb, object_hook=unpack_array, raw=False, strict_map_key=False)
