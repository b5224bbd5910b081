"""Issue 14: property-based fuzzing of the message layer (CDR codec and numpy converters).

Properties (hypothesis, derandomized so CI is repeatable, a bounded number of examples each):

- CDR decode of arbitrary bytes (and of mutated valid encodings) of every type a node consumes either
  returns a message or raises :class:`~latentstack.msgs.MessageDecodeError`; nothing else escapes.
- encode -> decode of generated valid messages gives back the input (images, camera info, joint states,
  point clouds, actions, episode events).
- the converters (``msg_to_image``, ``pointcloud2_to_numpy``, ``joint_state_positions``,
  ``float32_array_values``, ``decode_episode_event``) fed arbitrary field values raise only the project's
  message errors, or return arrays of the shape the message declares.
"""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from latentstack import msgs
from latentstack.nodes.interfaces import SEED_MAX, EpisodeEvent, decode_episode_event, episode_event_msg

# Bounded and repeatable: fixed example order, no example database written into the checkout.
FUZZ = settings(max_examples=250, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

U32 = st.integers(0, 2**32 - 1)
SMALL = st.integers(0, 24)
# ROS strings are NUL-terminated on the wire: a NUL cannot round-trip, so valid messages never hold one.
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20)

# one valid message of each type the nodes consume (the seeds of the mutation property)
SAMPLES = {
    "sensor_msgs/msg/Image": msgs.image_to_msg(np.arange(24, dtype=np.uint8).reshape(2, 4, 3), frame_id="cam"),
    "sensor_msgs/msg/CameraInfo": msgs.camera_info_from_fovy(8, 6, 45.0, frame_id="cam"),
    "sensor_msgs/msg/JointState": msgs.joint_state(["a", "bb"], [0.5, -2.0], [1.0, 2.0]),
    "sensor_msgs/msg/PointCloud2": msgs.pointcloud2_from_numpy(
        np.arange(8, dtype=np.float32).view([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4")])),
    "std_msgs/msg/String": msgs.string_msg("open the drawer"),
    "std_msgs/msg/Float32MultiArray": msgs.float32_array([0.1, 0.2, 0.3, 0.4], "action"),
    "diagnostic_msgs/msg/DiagnosticStatus": episode_event_msg(EpisodeEvent("start", "reach", 3, "reach it")),
}
TYPES = sorted(SAMPLES)


def _decode_or_error(data: bytes, typename: str) -> object | None:
    try:
        return msgs.decode(data, typename)
    except msgs.MessageDecodeError as exc:
        assert typename in str(exc)
        return None


# ----------------------------------------------------------------------------- CDR decode
@FUZZ
@given(typename=st.sampled_from(TYPES),
       data=st.one_of(st.binary(max_size=256), st.binary(max_size=256).map(lambda b: b"\x00\x01\x00\x00" + b)))
def test_decode_arbitrary_bytes_raises_only_message_decode_error(typename: str, data: bytes) -> None:
    _decode_or_error(data, typename)


@FUZZ
@given(typename=st.sampled_from(TYPES), edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)),
                                                       min_size=1, max_size=6),
       cut=st.integers(0, 10_000))
def test_decode_mutated_valid_encodings(typename: str, edits: list[tuple[int, int]], cut: int) -> None:
    b = bytearray(msgs.encode(SAMPLES[typename]))
    for pos, val in edits:  # corrupt lengths, counts and string bytes behind the 4-byte header
        b[4 + pos % (len(b) - 4)] = val
    _decode_or_error(bytes(b[: max(4, len(b) - cut % 8)]), typename)


# ----------------------------------------------------------------------------- round trips
def _roundtrip(m: object) -> object:
    return msgs.decode(msgs.encode(m), msgs.type_of(m))


ENC_DTYPES = sorted(msgs.IMAGE_ENCODINGS.items())


@st.composite
def images(draw: st.DrawFn) -> tuple[str, np.ndarray]:
    enc, (dtype, c) = draw(st.sampled_from(ENC_DTYPES))
    h, w = draw(st.integers(0, 6)), draw(st.integers(0, 6))
    shape = (h, w) if c == 1 else (h, w, c)
    return enc, draw(hnp.arrays(np.dtype(dtype), shape))


@FUZZ
@given(img=images(), stamp=st.integers(-(2**31) * 10**9, 2**31 * 10**9 - 1), frame=TEXT)
def test_image_roundtrip(img: tuple[str, np.ndarray], stamp: int, frame: str) -> None:
    enc, arr = img
    back = _roundtrip(msgs.image_to_msg(arr, enc, stamp=stamp, frame_id=frame))
    assert msgs.stamp_ns(back) == stamp and back.header.frame_id == frame and back.encoding == enc
    out = msgs.msg_to_image(back)
    assert out.dtype == arr.dtype and out.shape == arr.shape
    assert np.array_equal(out, arr, equal_nan=arr.dtype.kind == "f")


FINITE = st.floats(allow_nan=False, allow_infinity=False)


@FUZZ
@given(w=SMALL, h=SMALL, f=st.tuples(FINITE, FINITE, FINITE, FINITE), frame=TEXT)
def test_camera_info_roundtrip(w: int, h: int, f: tuple[float, float, float, float], frame: str) -> None:
    m = msgs.camera_info(w, h, *f, frame_id=frame)
    back = _roundtrip(m)
    assert (back.width, back.height, back.header.frame_id) == (w, h, frame)
    for field in ("k", "p", "r", "d"):
        assert np.array_equal(np.asarray(getattr(back, field)), np.asarray(getattr(m, field)))


@FUZZ
@given(joints=st.lists(st.tuples(TEXT, st.floats()), max_size=8), frame=TEXT)
def test_joint_state_roundtrip(joints: list[tuple[str, float]], frame: str) -> None:
    names = [n for n, _ in joints]
    pos = np.array([p for _, p in joints], np.float64)
    back = _roundtrip(msgs.joint_state(names, pos, frame_id=frame))
    assert list(back.name) == names and back.header.frame_id == frame
    assert np.array_equal(np.asarray(back.position), pos, equal_nan=True)


@FUZZ
@given(values=hnp.arrays(np.float32, st.integers(0, 16)), label=TEXT)
def test_float32_array_roundtrip(values: np.ndarray, label: str) -> None:
    back = _roundtrip(msgs.float32_array(values, label))
    assert back.layout.dim[0].label == label
    assert np.array_equal(msgs.float32_array_values(back, values.size, finite=False), values, equal_nan=True)


PF_DTYPES = ["i1", "u1", "<i2", "<u2", "<i4", "<u4", "<f4", "<f8", ">i2", ">f4", ">f8"]


@st.composite
def structured_points(draw: st.DrawFn) -> np.ndarray:
    names = draw(st.lists(st.text("xyzabc_", min_size=1, max_size=4), min_size=1, max_size=5, unique=True))
    dt = np.dtype([(n, draw(st.sampled_from(PF_DTYPES))) for n in names])
    return draw(hnp.arrays(dt, st.integers(0, 20)))


@FUZZ
@given(points=structured_points(), frame=TEXT)
def test_pointcloud2_roundtrip(points: np.ndarray, frame: str) -> None:
    back = _roundtrip(msgs.pointcloud2_from_numpy(points, frame_id=frame))
    out = msgs.pointcloud2_to_numpy(back)
    assert out.shape == points.shape and out.dtype.names == points.dtype.names
    for n in points.dtype.names:
        a, b = out[n], points[n]
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), n


@FUZZ
@given(kind=st.sampled_from(["start", "end"]), task=TEXT, seed=st.none() | st.integers(0, SEED_MAX),
       instruction=TEXT, success=st.booleans(), length=st.integers(0, 10**9), index=st.integers(0, 10**6))
def test_episode_event_roundtrip(kind: str, task: str, seed: int | None, instruction: str, success: bool,
                                 length: int, index: int) -> None:
    ev = EpisodeEvent(kind, task, seed, instruction, success if kind == "end" else False,
                      length if kind == "end" else 0, index)
    assert decode_episode_event(_roundtrip(episode_event_msg(ev))) == ev


# ----------------------------------------------------------------------------- converters on hostile fields
@st.composite
def image_fields(draw: st.DrawFn) -> dict:
    """Mostly consistent Image fields (so decoding succeeds often), then some of them made hostile."""
    enc = draw(st.sampled_from([e for e, _ in ENC_DTYPES]))
    dtype, c = msgs.IMAGE_ENCODINGS[enc]
    h, w = draw(st.integers(0, 8)), draw(st.integers(0, 8))
    step = w * c * np.dtype(dtype).itemsize + draw(st.integers(0, 5))
    n = max(0, h * step + draw(st.sampled_from([0, 0, 0, 3, -1, -7])))
    f = {"encoding": enc, "height": h, "width": w, "step": step, "is_bigendian": draw(st.sampled_from([0, 1])),
         "data": np.frombuffer(draw(st.binary(min_size=n, max_size=n)), np.uint8)}
    hostile = {"encoding": TEXT, "height": U32, "width": U32, "step": st.one_of(st.integers(0, 64), U32),
               "is_bigendian": st.integers(0, 255),
               "data": st.binary(max_size=300).map(lambda b: np.frombuffer(b, np.uint8))}
    for k in draw(st.lists(st.sampled_from(sorted(hostile)), max_size=2, unique=True)):
        f[k] = draw(hostile[k])
    return f


@FUZZ
@given(fields=image_fields(), want=st.sampled_from([None, "rgb8", "mono8"]))
def test_msg_to_image_hostile_fields(fields: dict, want: str | None) -> None:
    m = msgs.new("sensor_msgs/msg/Image", **fields)
    try:
        img = msgs.msg_to_image(m, want=want)
    except msgs.MessageError:
        return
    _, c = msgs.IMAGE_ENCODINGS[m.encoding]
    c = 3 if want == "rgb8" else c
    assert img.shape == ((m.height, m.width) if c == 1 else (m.height, m.width, c))
    assert m.data.size >= m.height * m.step  # it only returns pixels the message carries


@st.composite
def cloud_fields(draw: st.DrawFn) -> dict:
    """Mostly consistent PointCloud2 layouts (so decoding succeeds often), then some fields made hostile."""
    fields, off = [], 0
    for _ in range(draw(st.integers(0, 5))):
        code, count = draw(st.integers(1, 8)), draw(st.integers(0, 3))
        name = draw(st.sampled_from(["x", "y", "z", "i", "a", "b", "c", ""]))
        fields.append(msgs.new("sensor_msgs/msg/PointField", name=name, offset=off, datatype=code, count=count))
        off += np.dtype(PF_CODES[code]).itemsize * max(count, 1) + draw(st.integers(0, 2))
    ps = off + draw(st.integers(0, 3))
    h, w = draw(st.integers(0, 3)), draw(st.integers(0, 8))
    rs = w * ps + draw(st.integers(0, 4))
    n = max(0, h * rs + draw(st.sampled_from([0, 0, 0, 5, -1])))
    f = {"fields": fields, "height": h, "width": w, "point_step": ps, "row_step": rs,
         "is_bigendian": draw(st.booleans()),
         "data": np.frombuffer(draw(st.binary(min_size=n, max_size=n)), np.uint8)}
    if fields and draw(st.booleans()):  # one hostile PointField
        i = draw(st.integers(0, len(fields) - 1))
        fields[i].offset = draw(st.one_of(st.integers(0, 40), U32))
        fields[i].datatype = draw(st.integers(0, 255))
        fields[i].count = draw(st.one_of(st.integers(0, 4), U32))
    hostile = {"height": U32, "width": U32, "point_step": st.one_of(st.integers(0, 40), U32),
               "row_step": st.one_of(st.integers(0, 300), U32),
               "data": st.binary(max_size=300).map(lambda b: np.frombuffer(b, np.uint8))}
    for k in draw(st.lists(st.sampled_from(sorted(hostile)), max_size=2, unique=True)):
        f[k] = draw(hostile[k])
    return f


PF_CODES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}


@FUZZ
@given(f=cloud_fields())
def test_pointcloud2_to_numpy_hostile_layouts(f: dict) -> None:
    m = msgs.new("sensor_msgs/msg/PointCloud2", is_dense=False, **f)
    try:
        out = msgs.pointcloud2_to_numpy(m)
    except msgs.MessageError:
        return
    h, w = m.height, m.width
    assert out.shape == (h * w,) and out.dtype.names == tuple(pf.name for pf in m.fields)
    assert h * w == 0 or out.dtype.itemsize == m.point_step
    assert m.data.size >= h * m.row_step


@FUZZ
@given(names=st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=5),
       pos=hnp.arrays(np.float64, st.integers(0, 5)),
       want=st.none() | st.lists(st.sampled_from(["a", "b", "c", "e"]), max_size=4))
def test_joint_state_positions_hostile(names: list[str], pos: np.ndarray, want: list[str] | None) -> None:
    m = msgs.new("sensor_msgs/msg/JointState", name=names, position=pos)
    try:
        out = msgs.joint_state_positions(m, want)
    except msgs.MessageError:
        return
    assert out.dtype == np.float64 and np.isfinite(out).all()
    assert out.shape == ((len(want),) if want is not None and want != names else (pos.size,))


@FUZZ
@given(values=hnp.arrays(np.float32, st.integers(0, 8)), offset=U32, expected=st.none() | st.integers(0, 8))
def test_float32_array_values_hostile(values: np.ndarray, offset: int, expected: int | None) -> None:
    m = msgs.float32_array(values, "action")
    m.layout.data_offset = offset
    try:
        out = msgs.float32_array_values(m, expected)
    except msgs.MessageError:
        return
    assert out.shape == (values.size - offset,) and np.isfinite(out).all()
    assert expected is None or out.size == expected


KV_KEYS = ["seed", "task", "instruction", "success", "length", "index", "other"]
KV_VALUES = st.one_of(TEXT, st.integers(-(2**70), 2**70).map(str),
                      st.sampled_from(["", "true", "1e3", " 7 ", "0x10"]))


@FUZZ
@given(name=st.sampled_from(["episode", "other", ""]),
       message=st.sampled_from(["start", "end", "", "START"]) | TEXT,
       kv=st.lists(st.tuples(st.sampled_from(KV_KEYS), KV_VALUES), max_size=6))
def test_decode_episode_event_hostile(name: str, message: str, kv: list[tuple[str, str]]) -> None:
    m = msgs.new("diagnostic_msgs/msg/DiagnosticStatus", name=name, message=message,
                 values=[msgs.new("diagnostic_msgs/msg/KeyValue", key=k, value=v) for k, v in kv])
    try:
        ev = decode_episode_event(_roundtrip(m))
    except msgs.MessageError:
        return
    if ev is None:
        assert name != "episode"
        return
    assert ev.event in ("start", "end") and (ev.seed is None or 0 <= ev.seed <= SEED_MAX)
