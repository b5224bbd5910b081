"""The project's one interface package: ros/latentstack_msgs equals what the typestore encodes."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from latentstack import msgs
from latentstack.nodes.commands import (
    ACTION_TYPE,
    KIND_ACTION,
    KIND_WATCHDOG_HOLD,
    CommandSequencer,
    action_command_msg,
)

PKG = Path(__file__).resolve().parents[2] / "ros" / "latentstack_msgs"


def _strip(text: str) -> list[str]:
    lines = [re.sub(r"\s*#.*$", "", line).strip() for line in text.splitlines()]
    return [re.sub(r"\s+", " ", line) for line in lines if line]


def test_msg_file_equals_the_typestore_definition():
    assert _strip((PKG / "msg" / "ActionCommand.msg").read_text()) == _strip(msgs.EXTRA_MSG_DEFINITIONS[ACTION_TYPE])
    cmake = (PKG / "CMakeLists.txt").read_text()
    assert '"msg/ActionCommand.msg"' in cmake and "DEPENDENCIES std_msgs" in cmake
    root = ET.parse(PKG / "package.xml").getroot()
    assert root.findtext("name") == "latentstack_msgs" and root.findtext("member_of_group") == "rosidl_interface_packages"
    consts = {c[0]: c[2] for c in msgs.typestore().fielddefs[ACTION_TYPE][0]}
    assert consts == {"KIND_ACTION": KIND_ACTION, "KIND_WATCHDOG_HOLD": KIND_WATCHDOG_HOLD}


def test_wire_layout_and_type_hash_are_stable():
    m = action_command_msg(np.float32([0.5, -1.0]), KIND_ACTION, 1_500_000_000, CommandSequencer(session=9), "/p")
    data = bytes(msgs.encode(m))
    # CDR: header (sec 1, nanosec 5e8, "/p" + NUL), pad to 8, session u64, sequence u64, kind u8, pad to 4,
    # float32[] (count 2, 0.5, -1.0)
    assert data.hex() == ("00010000" "01000000" "0065cd1d" "03000000" "2f7000" "00"
                          "0900000000000000" "0100000000000000" "00" "000000" "02000000" "0000003f" "000080bf")
    back = msgs.decode(data, ACTION_TYPE)
    assert (back.session, back.sequence, back.kind) == (9, 1, KIND_ACTION) and back.data.tolist() == [0.5, -1.0]
    # the hash the DDS/zenoh transports advertise (no char fields: the same under rosbags' and ROS 2's rule);
    # it changes only when the .msg fields do, which is a wire break for every consumer
    for distro in msgs.DISTROS:
        assert msgs.rihs01(ACTION_TYPE, distro) == "RIHS01_0a7c5a35e2bbd9b21164f00e3b136a8503857f3f6e3e178b4e256337a68c535b"
