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
