"""``wstring`` support for the rosbags typestores: ``.msg`` parsing and a CDR codec for wide strings.

rosbags 0.11.9 knows ``wstring`` only in its IDL grammar; its ``.msg`` parser reads ``wstring x`` as a
nested type named ``wstring`` (and rejects ``wstring<=N``), and its generated CDR code has no wide-string
case. This module adds both, without touching rosbags:

* :func:`types_from_msg` is rosbags' ``get_types_from_msg`` with ``wstring`` and ``wstring<=N`` as base
  types (field descriptor ``(BASE, ("wstring", bound))``, Python value ``str``).
* :class:`Ros2Typestore` is a rosbags ``Typestore`` whose message definitions for types that contain a
  ``wstring`` (directly or in a nested type) use the interpreted codec below; every other type keeps
  rosbags' generated code. It also answers ``hash_rihs01`` with ROS 2's rule (:mod:`.typehash`), so rosbag2
  metadata that rosbags writes carries the same hashes as the DDS layer.

Wire form of a wide string (XCDR1 / "CDR legacy", the encapsulation ROS 2 uses), chosen after
reading the serializers:

* rmw_cyclonedds_cpp (``Serialization.cpp``, ``CDR_Legacy`` branch): ``uint32`` count of UTF-16 code units,
  then each code unit written as a ``wchar_t``, i.e. **4 bytes** on Linux; no terminating NUL.
* Fast CDR 1.x (Humble's rmw_fastrtps): the same (``serialize(wchar_t)`` -> ``uint32``).
* Fast CDR 2.x (Jazzy's rmw_fastrtps and rmw_zenoh, which serialize through Fast CDR): the same count,
  but 2-byte units (``serialize(wchar_t)`` -> ``uint16``). ROS 2's own interop tests skip WStrings between
  rmw_cyclonedds and rmw_fastrtps for this reason (ros2/system_tests#586).

The project's DDS transport is Cyclone DDS, so the default unit width is 4 (:data:`DEFAULT_WCHAR_SIZE`);
:func:`serialize` / :func:`deserialize` take ``wchar_size=2`` for a Fast-CDR-2 peer (e.g. rmw_zenoh on
Jazzy). Characters outside the BMP travel as UTF-16 surrogate pairs (two units), as the ROS 2 C/C++
types store ``wstring`` as UTF-16.
"""
from __future__ import annotations

import dataclasses
import re
import struct
from typing import Any

from rosbags.interfaces import Msgdef, Nodetype
from rosbags.serde import SerdeError
from rosbags.typesys.base import BASE_NAMES, BaseType, Cardinality, Type, make_typesdict
from rosbags.typesys.msg import MSGParser
from rosbags.typesys.peg import Failure, Success
from rosbags.typesys.store import Typestore

from .typehash import rihs01

__all__ = [
    "DEFAULT_WCHAR_SIZE",
    "Ros2Typestore",
    "deserialize",
    "has_wstring",
    "serialize",
    "types_from_msg",
]

DEFAULT_WCHAR_SIZE = 4  # rmw_cyclonedds on Linux (sizeof(wchar_t)) and Fast CDR 1.x

# struct format and size per rosbags base type; the formats are rosbags' own (serde/primitives.py), so a
# message decodes to the same Python values whichever codec handled it.
_PRIM: dict[str, tuple[str, int]] = {
    "bool": ("?", 1), "byte": ("b", 1), "char": ("B", 1), "int8": ("b", 1), "uint8": ("B", 1),
    "int16": ("h", 2), "uint16": ("H", 2), "int32": ("i", 4), "uint32": ("I", 4), "int64": ("q", 8),
    "uint64": ("Q", 8), "float32": ("f", 4), "float64": ("d", 8),
}
# numpy dtypes of primitive arrays/sequences, as rosbags' deserializer creates them (serde/utils.ndtype).
_NDTYPE = {"bool": "bool_", "char": "uint8", "byte": "byte"}


def _np_dtype(base: str) -> Any:
    import numpy as np

    return np.dtype(getattr(np, _NDTYPE.get(base, base)))


_EMPTY = [("structure_needs_at_least_one_member", (Nodetype.BASE, ("uint8", 0)))]


class _MsgParser(MSGParser):
    """rosbags' .msg grammar plus ``wstring`` and ``wstring<=N``."""

    def bounded_string(self, pos: int) -> Any:
        res = self.all(pos, (lambda p: self.regex(p, r"w?string<="), self.decimal_literal))
        if isinstance(res, Failure):
            return res
        base = res.value[0][:-2]
        return Success(res.pos, Type(BaseType(BASE_NAMES[base]), Cardinality.SCALAR, res.value[1], 0))

    def base_type(self, pos: int) -> Any:
        res = self.regex(pos, r"(bool|byte|char|float(32|64)|u?int(8|16|32|64)|w?string)\b")
        if isinstance(res, Failure):
            return res
        return Success(res.pos, Type(BaseType(BASE_NAMES[res.value]), Cardinality.SCALAR, 0, 0))


def types_from_msg(text: str, name: str) -> Any:
    """``rosbags.typesys.get_types_from_msg`` that also accepts ``wstring`` fields and ``pkg/srv/`` names.

    rosbags files a ``pkg/srv/Name_Request`` under ``pkg/srv/msg/Name_Request``; here the text is parsed as
    ``pkg/msg/...`` (so relative type references resolve to the package's messages, as in a ``.srv``) and the
    result is filed under the ``srv`` name.
    """
    parts = name.strip("/").split("/")
    if len(parts) == 3 and parts[1] == "srv":
        as_msg = f"{parts[0]}/msg/{parts[2]}"
        typs = make_typesdict(_MsgParser(f"MSG: {as_msg}\n{text}").specification())
        return {"/".join(parts) if k == as_msg else k: v for k, v in typs.items()}
    return make_typesdict(_MsgParser(f"MSG: {name}\n{text}").specification())


def has_wstring(fielddefs: Any, typename: str, _seen: set[str] | None = None) -> bool:
    """Whether ``typename`` has a ``wstring`` field, itself or in any nested type."""
    seen = set() if _seen is None else _seen
    if typename in seen:
        return False
    seen.add(typename)
    for _, desc in fielddefs[typename][1]:
        kind, arg = desc
        if kind in (Nodetype.ARRAY, Nodetype.SEQUENCE):
            kind, arg = arg[0]
        if kind == Nodetype.BASE and arg[0] == "wstring":
            return True
        if kind == Nodetype.NAME and has_wstring(fielddefs, arg, seen):
            return True
    return False


# --------------------------------------------------------------------------------------------- writer
class _Writer:
    def __init__(self, base: int, little: bool, wchar: int) -> None:
        self.buf = bytearray()
        self.base = base  # absolute offset of buf[0] after the encapsulation header (alignment origin)
        self.e = "<" if little else ">"
        if wchar not in (2, 4):
            raise ValueError(f"wchar_size must be 2 or 4, got {wchar}")
        self.wchar = wchar

    def align(self, n: int) -> None:
        self.buf += b"\0" * ((-(self.base + len(self.buf))) % n)

    def prim(self, base: str, value: Any) -> None:
        fmt, size = _PRIM[base]
        self.align(size)
        self.buf += struct.pack(self.e + fmt, value)

    def string(self, value: str) -> None:
        data = value.encode()
        self.align(4)
        self.buf += struct.pack(self.e + "I", len(data) + 1) + data + b"\0"

    def wstring(self, value: str) -> None:
        units = value.encode("utf-16-le", "surrogatepass")
        n = len(units) // 2
        codes = struct.unpack(f"<{n}H", units)
        self.align(4)
        self.buf += struct.pack(f"{self.e}I{n}{'I' if self.wchar == 4 else 'H'}", n, *codes)

    def prim_array(self, base: str, values: Any, count: int | None) -> None:
        import numpy as np

        size = _PRIM[base][1]
        arr = np.asarray(values)
        n = len(arr)
        if count is not None and n != count:
            raise SerdeError(f"Unexpected array length {n}, expected {count}")
        if n:
            self.align(size)
            # raw element bytes, like rosbags' ``val.view(numpy.uint8)`` (no range check on byte/uint8 views)
            self.buf += arr.astype(_np_dtype(base).newbyteorder(self.e), copy=False).tobytes()

    def field(self, store: Any, desc: tuple, value: Any) -> None:
        kind, arg = desc
        if kind == Nodetype.BASE:
            base = arg[0]
            if base == "string":
                self.string(value)
            elif base == "wstring":
                self.wstring(value)
            else:
                self.prim(base, value)
        elif kind == Nodetype.NAME:
            self.struct(store, arg, value)
        else:
            sub, n = arg
            count = n if kind == Nodetype.ARRAY else None
            if kind == Nodetype.SEQUENCE:
                self.align(4)
                self.buf += struct.pack(self.e + "I", len(value))
            if sub[0] == Nodetype.BASE and sub[1][0] in _PRIM:
                self.prim_array(sub[1][0], value, count)
                return
            if count is not None and len(value) != count:
                raise SerdeError(f"Unexpected array length {len(value)}, expected {count}")
            for item in value:
                self.field(store, sub, item)

    def struct(self, store: Any, typename: str, message: Any) -> None:
        fields = store.fielddefs[typename][1]
        for name, desc in fields or _EMPTY:
            self.field(store, desc, getattr(message, name) if fields else 0)


# --------------------------------------------------------------------------------------------- reader
class _Reader:
    def __init__(self, data: Any, pos: int, little: bool, wchar: int) -> None:
        self.data = memoryview(data)
        self.pos = pos
        self.e = "<" if little else ">"
        if wchar not in (2, 4):
            raise ValueError(f"wchar_size must be 2 or 4, got {wchar}")
        self.wchar = wchar

    def align(self, n: int) -> None:
        self.pos += (-self.pos) % n

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError(f"need {n} bytes at offset {self.pos}, have {len(self.data) - self.pos}")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def prim(self, base: str) -> Any:
        fmt, size = _PRIM[base]
        self.align(size)
        return struct.unpack(self.e + fmt, self.take(size))[0]

    def count(self, min_elem_size: int) -> int:
        self.align(4)
        n = struct.unpack(self.e + "I", self.take(4))[0]
        if n * min_elem_size > len(self.data) - self.pos:  # reject counts the buffer cannot hold
            raise ValueError(f"invalid length {n} at offset {self.pos - 4}")
        return n

    def string(self) -> str:
        n = self.count(1)
        if n < 1:
            raise ValueError(f"invalid string length 0 at offset {self.pos - 4}")
        raw = bytes(self.take(n))
        if raw[-1] != 0:
            raise ValueError(f"missing string terminator at offset {self.pos - 1}")
        return raw[:-1].decode()

    def wstring(self) -> str:
        n = self.count(self.wchar)
        codes = struct.unpack(f"{self.e}{n}{'I' if self.wchar == 4 else 'H'}", self.take(n * self.wchar))
        units: list[int] = []
        for c in codes:  # a UTF-32 peer may send code points above the BMP: re-encode them as a surrogate pair
            if c > 0xFFFF:
                if c > 0x10FFFF:
                    raise ValueError(f"invalid wide character {c:#x}")
                c -= 0x10000
                units += [0xD800 | (c >> 10), 0xDC00 | (c & 0x3FF)]
            else:
                units.append(c)
        return struct.pack(f"<{len(units)}H", *units).decode("utf-16-le")

    def prim_array(self, base: str, n: int) -> Any:
        import numpy as np

        size = _PRIM[base][1]
        if n:
            self.align(size)
        arr = np.frombuffer(self.take(n * size), dtype=_np_dtype(base).newbyteorder(self.e), count=n)
        return arr.astype(arr.dtype.newbyteorder("="), copy=False)  # native order, as rosbags returns

    def field(self, store: Any, desc: tuple) -> Any:
        kind, arg = desc
        if kind == Nodetype.BASE:
            base = arg[0]
            if base == "string":
                return self.string()
            if base == "wstring":
                return self.wstring()
            return self.prim(base)
        if kind == Nodetype.NAME:
            return self.struct(store, arg)
        sub, n = arg
        if kind == Nodetype.SEQUENCE:
            n = self.count(1 if sub[0] != Nodetype.BASE or sub[1][0] not in _PRIM else _PRIM[sub[1][0]][1])
        if sub[0] == Nodetype.BASE and sub[1][0] in _PRIM:
            return self.prim_array(sub[1][0], n)
        return [self.field(store, sub) for _ in range(n)]

    def struct(self, store: Any, typename: str) -> Any:
        fields = store.fielddefs[typename][1]
        values = {name: self.field(store, desc) for name, desc in fields or _EMPTY}
        return store.types[typename](**(values if fields else {}))


# ------------------------------------------------------------------------------------------ public API
def serialize(store: Any, message: Any, typename: str, *, little_endian: bool = True,
              wchar_size: int = DEFAULT_WCHAR_SIZE) -> bytes:
    """CDR bytes (4-byte encapsulation header included) of ``message``, any type of ``store``."""
    w = _Writer(0, little_endian, wchar_size)
    w.struct(store, typename, message)
    return bytes((0, 1 if little_endian else 0, 0, 0)) + bytes(w.buf)


def deserialize(store: Any, data: bytes | bytearray | memoryview, typename: str, *,
                wchar_size: int = DEFAULT_WCHAR_SIZE) -> Any:
    """Message from CDR bytes (header included); raises ``ValueError``/``struct.error`` on bad bytes."""
    raw = bytes(data)
    if len(raw) < 4 or raw[:2] not in (b"\x00\x00", b"\x00\x01"):
        raise ValueError("invalid or unsupported CDR encapsulation")
    r = _Reader(raw[4:], 0, bool(raw[1]), wchar_size)
    msg = r.struct(store, typename)
    if r.pos + 3 < len(raw) - 4:  # up to 3 padding bytes are allowed, as in rosbags
        raise ValueError(f"CDR message size mismatch for {typename!r}")
    return msg


def _no_ros1(*_: Any, **__: Any) -> Any:
    raise SerdeError("types with wstring fields have no ROS 1 serialization")


def _wide_msgdef(store: Ros2Typestore, typename: str) -> Msgdef[object]:
    """A rosbags ``Msgdef`` whose CDR callables run the interpreted codec (rosbags' calling convention)."""

    def getsize(pos: int, message: Any, typestore: Any) -> int:
        w = _Writer(pos, True, store.wchar_size)
        w.struct(typestore, typename, message)
        return pos + len(w.buf)

    def ser(little: bool) -> Any:
        def serialize_cdr(rawdata: memoryview, pos: int, message: Any, typestore: Any) -> int:
            w = _Writer(pos, little, store.wchar_size)
            w.struct(typestore, typename, message)
            rawdata[pos:pos + len(w.buf)] = w.buf
            return pos + len(w.buf)
        return serialize_cdr

    def deser(little: bool) -> Any:
        def deserialize_cdr(rawdata: Any, pos: int, cls: Any, typestore: Any) -> tuple[Any, int]:
            r = _Reader(rawdata, pos, little, store.wchar_size)
            return r.struct(typestore, typename), r.pos
        return deserialize_cdr

    cdr = {"name": typename, "fields": list(store.fielddefs[typename][1]), "cls": store.types[typename],
           "size_cdr": 0, "getsize_cdr": getsize, "serialize_cdr_le": ser(True), "serialize_cdr_be": ser(False),
           "deserialize_cdr_le": deser(True), "deserialize_cdr_be": deser(False)}
    # by field name, so a rosbags 0.11.x that reorders or adds (ROS 1) members still builds; no static sizes
    rest = {f.name: 0 if f.name.startswith("size_") else _no_ros1 for f in dataclasses.fields(Msgdef)
            if f.name not in cdr}
    return Msgdef(**cdr, **rest)


class Ros2Typestore(Typestore):
    """rosbags ``Typestore`` + ``wstring`` CDR + ROS 2's RIHS01 rule (``char`` -> UINT8)."""

    wchar_size = DEFAULT_WCHAR_SIZE

    def get_msgdef(self, typename: str) -> Msgdef[object]:
        if typename not in self.cache and has_wstring(self.fielddefs, typename):
            self.cache[typename] = _wide_msgdef(self, typename)
        return super().get_msgdef(typename)

    def hash_rihs01(self, typ: str) -> str:
        return rihs01(self.fielddefs, typ)

    def generate_msgdef(self, typename: str, ros_version: int = 1) -> tuple[str, str]:
        # rosbags prints a bounded wstring as plain ``wstring``; restore the bound in the text it stores
        text, md5 = super().generate_msgdef(typename, ros_version)
        return _restore_wstring_bounds(self, typename, text), md5


_WSTRING_LINE = re.compile(r"^wstring(\[[^\]]*\])? (\w+)$")
_SEPARATOR = "=" * 80 + "\nMSG: "


def _restore_wstring_bounds(store: Typestore, typename: str, text: str) -> str:
    """Puts ``<=N`` back on bounded ``wstring`` lines, section by section of the concatenated definition."""
    from rosbags.typesys.msg import normalize_msgtype

    sections = text.split(_SEPARATOR)
    out = []
    for i, section in enumerate(sections):
        name = typename
        if i:
            name, _, _ = section.partition("\n")
            name = normalize_msgtype(name)
        bounds = {}
        for fname, desc in store.fielddefs.get(name, ((), ()))[1]:
            kind, arg = desc
            if kind in (Nodetype.ARRAY, Nodetype.SEQUENCE):
                kind, arg = arg[0]
            if kind == Nodetype.BASE and arg[0] == "wstring" and arg[1]:
                bounds[fname] = arg[1]
        lines = []
        for line in section.split("\n"):
            m = _WSTRING_LINE.match(line)
            if m and m.group(2) in bounds:
                line = f"wstring<={bounds[m.group(2)]}{m.group(1) or ''} {m.group(2)}"
            lines.append(line)
        out.append("\n".join(lines))
    return _SEPARATOR.join(out)
