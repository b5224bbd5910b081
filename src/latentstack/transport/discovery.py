"""``ros_discovery_info``: how rmw_cyclonedds attributes DDS endpoints to named ROS 2 nodes.

Without it, ``ros2 topic list`` still shows our ``rt/...`` topics, but ``ros2 node list``
shows nothing (endpoints belong to ``_CREATED_BY_BARE_DDS_APP_``). The message is
``rmw_dds_common/msg/ParticipantEntitiesInfo``; GIDs are the 16-byte DDS GUIDs on Iron and
later (``Gid.data`` is ``char[16]``) and zero-padded to 24 bytes on Humble.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from latentstack import msgs

from .qos import Durability, History, QoSProfile, Reliability

__all__ = [
    "DISCOVERY_QOS",
    "DISCOVERY_TOPIC",
    "DISCOVERY_TYPE",
    "NodeEntities",
    "decode_participant_info",
    "encode_participant_info",
    "gid_size",
]

DISCOVERY_TOPIC = "ros_discovery_info"  # no rt/ prefix (avoid_ros_namespace_conventions)
DISCOVERY_TYPE = "rmw_dds_common/msg/ParticipantEntitiesInfo"
DISCOVERY_QOS = QoSProfile(Reliability.RELIABLE, Durability.TRANSIENT_LOCAL, History.KEEP_LAST, 1)


@dataclass
class NodeEntities:
    name: str
    namespace: str = "/"
    reader_gids: list[bytes] = field(default_factory=list)
    writer_gids: list[bytes] = field(default_factory=list)


def gid_size(distro: str) -> int:
    """Bytes in ``rmw_dds_common/msg/Gid.data`` for ``distro`` (24 on Humble, 16 on Iron+)."""
    _, fields = msgs.typestore(distro).fielddefs["rmw_dds_common/msg/Gid"]
    return int(fields[0][1][1][1])


def _gid(raw: bytes, distro: str) -> Any:
    import numpy as np

    n = gid_size(distro)
    if len(raw) > n:
        raise ValueError(f"GID of {len(raw)} bytes does not fit {n}")
    return msgs.new("rmw_dds_common/msg/Gid", distro, data=np.frombuffer(raw.ljust(n, b"\0"), dtype=np.uint8))


def encode_participant_info(participant_gid: bytes, nodes: Sequence[NodeEntities], distro: str) -> bytes:
    """CDR of ``ParticipantEntitiesInfo`` for one participant and its nodes."""
    infos = [
        msgs.new(
            "rmw_dds_common/msg/NodeEntitiesInfo", distro, node_namespace=n.namespace, node_name=n.name,
            reader_gid_seq=[_gid(g, distro) for g in n.reader_gids],
            writer_gid_seq=[_gid(g, distro) for g in n.writer_gids],
        )
        for n in nodes
    ]
    msg = msgs.new(DISCOVERY_TYPE, distro, gid=_gid(participant_gid, distro), node_entities_info_seq=infos)
    return msgs.encode(msg, DISCOVERY_TYPE, distro)


def decode_participant_info(data: bytes, distro: str) -> Mapping[str, Any]:
    """``{"gid": bytes, "nodes": [NodeEntities]}``; GIDs keep their padded length."""
    m = msgs.decode(data, DISCOVERY_TYPE, distro)
    return {
        "gid": bytes(m.gid.data),
        "nodes": [
            NodeEntities(
                n.node_name, n.node_namespace,
                [bytes(g.data) for g in n.reader_gid_seq], [bytes(g.data) for g in n.writer_gid_seq],
            )
            for n in m.node_entities_info_seq
        ],
    }
