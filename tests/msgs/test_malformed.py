"""Malformed bytes never crash the decoder: every failure is a MessageDecodeError (>= 1e5 payloads)."""
from __future__ import annotations

import numpy as np
import pytest

from latentstack import msgs

TYPES = {
    "std_msgs/msg/String": msgs.string_msg("hello 0"),
    "sensor_msgs/msg/JointState": msgs.joint_state(["a", "bb", "ccc"], [0.5, -2.0, 3.0], [1.0, 2.0, 3.0]),
    "sensor_msgs/msg/Image": msgs.image_to_msg(np.arange(27, dtype=np.uint8).reshape(3, 3, 3), frame_id="cam"),
    "sensor_msgs/msg/CameraInfo": msgs.camera_info_from_fovy(8, 8, 45.0),
    "std_msgs/msg/Float32MultiArray": msgs.float32_array([1, 2, 3, 4], "action"),
    "diagnostic_msgs/msg/DiagnosticStatus": msgs.new(
        "diagnostic_msgs/msg/DiagnosticStatus", name="episode", message="start", values=msgs.kv_pairs({"seed": 1})),
}


def _check(data: bytes, typename: str) -> bool:
    try:
        msgs.decode(data, typename)
    except msgs.MessageDecodeError as exc:
        assert typename in str(exc)
        return False
    return True


def test_truncations_and_header_errors():
    for typename, m in TYPES.items():
        good = msgs.encode(m)
        for n in range(len(good) - 3):  # every prefix that cuts real content
            assert not _check(good[:n], typename), (typename, n)
        assert not _check(b"\x02\x00" + good[2:], typename)  # unknown encapsulation
    with pytest.raises(msgs.MessageDecodeError, match="expected bytes"):
        msgs.decode(12345, "std_msgs/msg/String")  # type: ignore[arg-type]


def test_hundred_thousand_malformed_payloads():
    rng = np.random.default_rng(1234)
    names = list(TYPES)
    goods = [msgs.encode(TYPES[t]) for t in names]
    failures = total = 0
    for i in range(100_000):
        k = i % len(names)
        if i % 3 == 0:  # random junk behind a valid CDR header
            data = b"\x00\x01\x00\x00" + rng.bytes(int(rng.integers(0, 80)))
        else:  # 1-4 corrupted bytes of a valid payload (lengths, counts, strings)
            b = bytearray(goods[k])
            for _ in range(int(rng.integers(1, 5))):
                b[int(rng.integers(4, len(b)))] = int(rng.integers(0, 256))
            data = bytes(b)
        total += 1
        failures += not _check(data, names[k])
    assert total == 100_000 and failures > 10_000  # plenty of real rejections, zero crashes
