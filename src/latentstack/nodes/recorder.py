"""Recorder core: writes topics, as raw CDR, to a rosbag2 directory with MCAP storage.

The bag is written with rosbags' rosbag2 writer (metadata.yaml + ``*.mcap`` with the
``ros2msg`` schemas and RIHS01 hashes of the typestore), so ``ros2 bag info/play``,
Foxglove and :func:`read_bag` (rosbags' reader) all open it. Messages are not decoded on the
way in (raw subscriptions): recording costs one copy, and bytes that another node would
reject are still kept for post-mortems.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from latentstack import msgs
from latentstack.transport import RawMessage, qos_profile

from .base import NodeCore, NodeParams, ParameterError, check

__all__ = ["RECORD_DEPTH", "RecorderCore", "RecorderParams", "parse_topic_spec", "read_bag"]

RECORD_DEPTH = 100


def parse_topic_spec(spec: str | Mapping[str, Any]) -> tuple[str, str, str]:
    """``"name:pkg/msg/Type"`` / ``"name:pkg/msg/Type:qos"`` or ``{name, type, qos}`` -> (name, type, qos)."""
    if isinstance(spec, Mapping):
        name, typ, qos = spec.get("name"), spec.get("type"), spec.get("qos", "sensor_data")
    else:
        parts = str(spec).split(":")
        if len(parts) not in (2, 3):
            raise ParameterError(f"topic spec {spec!r}: want 'name:pkg/msg/Type[:qos]'")
        name, typ = parts[0], parts[1]
        qos = parts[2] if len(parts) == 3 else "sensor_data"
    if not name or not typ:
        raise ParameterError(f"topic spec {spec!r} needs a name and a type")
    return str(name), msgs.normalize_type(str(typ)), str(qos)


@dataclass(frozen=True)
class RecorderParams(NodeParams):
    """``topics``: ``name:type[:qos]`` strings; best-effort QoS (the default) matches every publisher."""

    path: str = "outputs/recording"
    topics: tuple[str, ...] = (
        "camera/image_raw:sensor_msgs/msg/Image",
        "camera/camera_info:sensor_msgs/msg/CameraInfo",
        "joint_states:sensor_msgs/msg/JointState",
        "action:latentstack_msgs/msg/ActionCommand",
        "instruction:std_msgs/msg/String:transient_local",
        "episode:diagnostic_msgs/msg/DiagnosticStatus:transient_local",
    )
    bag_version: int = 9  # rosbag2 metadata version (8 or 9)
    overwrite: bool = False

    def __post_init__(self) -> None:
        check(bool(self.path), "recorder needs a 'path'")
        check(self.bag_version in (8, 9), f"bag_version must be 8 or 9, got {self.bag_version}")
        check(len(self.topics) > 0, "recorder needs at least one topic")
        for t in self.topics:
            parse_topic_spec(t)


class RecorderCore(NodeCore):
    default_name: ClassVar[str] = "recorder"
    Params: ClassVar[type] = RecorderParams

    def __init__(self, transport: Any, params: RecorderParams | None = None, *, name: str | None = None,
                 namespace: str = "/") -> None:
        super().__init__(transport, params, name=name, namespace=namespace)
        from rosbags.rosbag2 import StoragePlugin, Writer

        p: RecorderParams = self.params
        self.path = Path(p.path)
        if self.path.exists():
            if not p.overwrite:
                raise FileExistsError(f"recording {self.path} exists; set overwrite=true or choose another path")
            import shutil

            shutil.rmtree(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = Writer(self.path, version=p.bag_version, storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        self.messages = 0
        self._connections: dict[str, Any] = {}
        store = msgs.typestore(transport.distro)
        for spec in p.topics:
            name, typ, qos = parse_topic_spec(spec)
            fq = self.topic(name)
            if fq in self._connections:
                raise ParameterError(f"topic {fq} listed twice")
            self._connections[fq] = self.writer.add_connection(fq, typ, typestore=store)
            # deep reader queues: bursts (end + start events in one callback) must not overwrite each other
            q = qos_profile(qos)
            self.create_subscription(name, typ, self._on_message, q.with_depth(max(q.depth, RECORD_DEPTH)), raw=True)

    def _on_message(self, m: RawMessage) -> None:
        conn = self._connections.get(m.topic)
        if conn is None or self.writer is None:
            return
        self.writer.write(conn, int(m.timestamp_ns), m.data)
        self.messages += 1

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        if self.writer is not None:
            self.writer.close()
            self.writer = None
            self.log.info("[%s] wrote %d messages to %s", self.name, self.messages, self.path)


def read_bag(path: str | Path, topics: Sequence[str] | None = None, distro: str | None = None
             ) -> Iterator[tuple[str, int, Any]]:
    """(topic, timestamp_ns, decoded message) from a rosbag2 directory (MCAP or SQLite), via rosbags."""
    from rosbags.rosbag2 import Reader

    with Reader(Path(path)) as reader:
        conns = [c for c in reader.connections if topics is None or c.topic in topics]
        for conn, ts, raw in reader.messages(connections=conns):
            yield conn.topic, ts, msgs.decode(raw, conn.msgtype, distro)
