"""The ros_discovery_info writer advertises ROS 2's type hash (ros2.md 4.1), seen by another participant."""
from __future__ import annotations

import pytest

from latentstack.transport import make_transport

pytestmark = pytest.mark.dds

# rmw_dds_common/msg/ParticipantEntitiesInfo as Iron/Jazzy hash it (.msg char -> UINT8); rosbags' char = 13 rule
# gave RIHS01_e725f4a5...
JAZZY_HASH = b"typehash=RIHS01_91a0593bacdcc50ea9bdcf849a938b128412cc1ea821245c663bcd26f83c295e;"


def test_discovery_writer_user_data_carries_the_ros2_hash(dds_domain):
    from latentstack.transport.dds import discover_endpoints
    from latentstack.transport.discovery import DISCOVERY_TOPIC

    t = make_transport("dds", domain_id=dds_domain, config="loopback", distro="jazzy")
    try:
        def found(eps):
            return any(e["topic"] == DISCOVERY_TOPIC and e["kind"] == "writer" for e in eps)

        eps = discover_endpoints(dds_domain, timeout=5.0, until=found)
    finally:
        t.close()
    writers = [e for e in eps if e["topic"] == DISCOVERY_TOPIC and e["kind"] == "writer"]
    assert writers and all(e["user_data"] == JAZZY_HASH for e in writers)
