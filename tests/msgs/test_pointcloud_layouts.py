"""Issue 14 finding 7: hostile PointCloud2 layouts raise the project's message error, never a raw numpy error."""
from __future__ import annotations

import numpy as np
import pytest

from latentstack import msgs


def _pf(name: str, offset: int, datatype: int = 7, count: int = 1):
    return msgs.new("sensor_msgs/msg/PointField", name=name, offset=offset, datatype=datatype, count=count)


def _cloud(**fields):
    pts = np.arange(12, dtype=np.float32).view([("x", "<f4"), ("y", "<f4"), ("z", "<f4")])
    m = msgs.pointcloud2_from_numpy(pts)
    for k, v in fields.items():
        setattr(m, k, v)
    return m


BAD = {
    "duplicate field names": {"fields": [_pf("x", 0), _pf("x", 4), _pf("z", 8)]},
    "point_step 0 without fields": {"fields": [], "point_step": 0, "row_step": 0},
    "point_step 0 with fields": {"point_step": 0, "row_step": 0},
    "field past point_step": {"point_step": 8, "row_step": 32},
    "data shorter than height*row_step": {"data": np.zeros(47, np.uint8)},
    "row_step < width*point_step": {"row_step": 11},
    "unknown datatype": {"fields": [_pf("x", 0, datatype=9)]},
    "count past point_step": {"fields": [_pf("x", 0, count=4)]},
    "width*height overflow": {"width": 2**31, "height": 2**31, "row_step": 12 * 2**31},
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_layouts_raise_message_value_error(case):
    with pytest.raises(msgs.MessageValueError):
        msgs.pointcloud2_to_numpy(_cloud(**BAD[case]))


def test_vector_fields_and_empty_clouds_still_decode():
    m = _cloud(fields=[_pf("xyz", 0, count=3)])
    assert msgs.pointcloud2_to_numpy(m)["xyz"].shape == (4, 3)
    assert msgs.pointcloud2_to_numpy(_cloud(width=0, row_step=0)).shape == (0,)


# ----------------------------------------------------------------------------- real driver layouts (issue 16)
# (name, offset, numpy dtype) as the drivers publish them; point_step includes the drivers' padding.
_F4, _F8, _U1, _U2, _U4 = "f4", "f8", "u1", "u2", "u4"
DRIVER_LAYOUTS = {
    # ouster-ros (PointXYZIRT-like "original" layout): x y z, 4 B pad, intensity, t, reflectivity, ring, ambient,
    # range, padded to 48 bytes
    "ouster": (48, [("x", 0, _F4), ("y", 4, _F4), ("z", 8, _F4), ("intensity", 16, _F4), ("t", 20, _U4),
                    ("reflectivity", 24, _U2), ("ring", 26, _U2), ("ambient", 28, _U2), ("range", 32, _U4)]),
    # velodyne_pointcloud PointXYZIRT: packed 22 bytes, and the 16-byte-aligned (PCL) 32-byte variant
    "velodyne22": (22, [("x", 0, _F4), ("y", 4, _F4), ("z", 8, _F4), ("intensity", 12, _F4), ("ring", 16, _U2),
                        ("time", 18, _F4)]),
    "velodyne32": (32, [("x", 0, _F4), ("y", 4, _F4), ("z", 8, _F4), ("intensity", 16, _F4), ("ring", 20, _U2),
                        ("time", 24, _F4)]),
    # livox_ros_driver2 PointXyzrtlt (xfer_format 0): packed 26 bytes, FLOAT64 timestamp at an unaligned offset
    "livox": (26, [("x", 0, _F4), ("y", 4, _F4), ("z", 8, _F4), ("intensity", 12, _F4), ("tag", 16, _U1),
                   ("line", 17, _U1), ("timestamp", 18, _F8)]),
    # FLOAT64 coordinates (e.g. some simulators / PCL PointXYZ double exports)
    "float64_xyz": (32, [("x", 0, _F8), ("y", 8, _F8), ("z", 16, _F8), ("intensity", 24, _F4)]),
}
_PF_CODE = {"u1": 2, "u2": 4, "u4": 6, "f4": 7, "f8": 8}


def driver_cloud(layout: str, height: int, width: int, *, bigendian: bool = False, row_pad: int = 0,
                 seed: int = 0, is_dense: bool = True):
    """A PointCloud2 in a driver's layout, plus the values written (a structured array in native order)."""
    step, fields = DRIVER_LAYOUTS[layout]
    order = ">" if bigendian else "<"
    wire = np.dtype({"names": [f[0] for f in fields], "formats": [order + f[2] for f in fields],
                     "offsets": [f[1] for f in fields], "itemsize": step})
    rng = np.random.default_rng(seed)
    n = height * width
    vals = np.zeros(n, wire.newbyteorder("="))
    for name, _off, dt in fields:
        vals[name] = rng.uniform(-50, 50, n) if dt[0] == "f" else rng.integers(0, 200, n)
    rows = np.zeros((height, width * step + row_pad), np.uint8)  # row_pad: bytes after each row (row_step)
    rows[:, : width * step] = np.frombuffer(vals.astype(wire).tobytes(), np.uint8).reshape(height, width * step)
    m = msgs.new("sensor_msgs/msg/PointCloud2", header=msgs.header(7, "os_lidar"), height=height, width=width,
                 fields=[_pf(name, off, _PF_CODE[dt]) for name, off, dt in fields], is_bigendian=bigendian,
                 point_step=step, row_step=width * step + row_pad, data=rows.reshape(-1), is_dense=is_dense)
    return m, vals


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("shape", [(1, 37), (4, 9)], ids=["unorganised", "organised"])
@pytest.mark.parametrize("layout", list(DRIVER_LAYOUTS))
def test_driver_layouts_decode_every_field(layout, shape, bigendian):
    m, vals = driver_cloud(layout, *shape, bigendian=bigendian, row_pad=3 if shape[0] > 1 else 0)
    m = msgs.decode(msgs.encode(m), "sensor_msgs/msg/PointCloud2")  # as it comes off the wire
    out = msgs.pointcloud2_to_numpy(m)
    assert out.shape == (shape[0] * shape[1],) and out.dtype.names == vals.dtype.names
    for name in vals.dtype.names:
        assert out.dtype[name].byteorder in ("=", "|") and out.dtype[name].kind == vals.dtype[name].kind
        np.testing.assert_array_equal(out[name], vals[name])
