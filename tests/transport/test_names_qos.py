"""ROS 2 wire names (rmw_cyclonedds) and QoS profiles (rmw qos_profiles.h)."""
from __future__ import annotations

import pytest

from latentstack.transport import (
    DEFAULT,
    SENSOR_DATA,
    TRANSIENT_LOCAL,
    Durability,
    History,
    QoSProfile,
    Reliability,
    dds_topic_name,
    qos_compatible,
    qos_profile,
    resolve_topic,
    ros_topic_from_dds,
    service_topic_names,
)


def test_topic_wire_names():
    assert dds_topic_name("/chatter") == "rt/chatter"
    assert dds_topic_name("/robot1/camera/image_raw") == "rt/robot1/camera/image_raw"
    assert ros_topic_from_dds("rt/robot1/camera/image_raw") == "/robot1/camera/image_raw"
    assert ros_topic_from_dds("ros_discovery_info") is None and ros_topic_from_dds("DCPSPublication") is None
    assert service_topic_names("/add_two_ints") == ("rq/add_two_intsRequest", "rr/add_two_intsReply")


def test_name_resolution():
    assert resolve_topic("chatter") == "/chatter"
    assert resolve_topic("camera/image_raw", "robot1") == "/robot1/camera/image_raw"
    assert resolve_topic("/abs", "/robot1") == "/abs"
    assert resolve_topic("~/status", "/robot1", "policy") == "/robot1/policy/status"
    for bad in ("", "a//b", "trailing/", "1abc", "sp ace", "~x"):
        with pytest.raises(ValueError):
            resolve_topic(bad)


def test_profiles():
    assert (SENSOR_DATA.reliability, SENSOR_DATA.durability, SENSOR_DATA.history, SENSOR_DATA.depth) == (
        Reliability.BEST_EFFORT, Durability.VOLATILE, History.KEEP_LAST, 5)
    assert (DEFAULT.reliability, DEFAULT.durability, DEFAULT.depth) == (Reliability.RELIABLE, Durability.VOLATILE, 10)
    assert (TRANSIENT_LOCAL.reliability, TRANSIENT_LOCAL.durability, TRANSIENT_LOCAL.depth) == (
        Reliability.RELIABLE, Durability.TRANSIENT_LOCAL, 1)
    assert qos_profile("sensor_data") is SENSOR_DATA and qos_profile(None) is DEFAULT
    assert qos_profile({"profile": "transient_local", "depth": 10}).depth == 10
    with pytest.raises(ValueError):
        qos_profile("nope")
    with pytest.raises(ValueError):
        QoSProfile(depth=0)


def test_compatibility_rules():
    assert not qos_compatible(SENSOR_DATA, DEFAULT)[0]  # reliable reader vs best-effort writer
    assert qos_compatible(DEFAULT, SENSOR_DATA)[0]
    assert not qos_compatible(DEFAULT, TRANSIENT_LOCAL)[0]  # transient-local reader vs volatile writer
    assert qos_compatible(TRANSIENT_LOCAL, DEFAULT)[0]
