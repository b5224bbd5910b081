"""Detection markers node core (graph kind ``detection_markers``): Detection3DArray → visualization_msgs/MarkerArray.

RViz and Foxglove draw ``visualization_msgs/MarkerArray`` without a vision_msgs plugin, so this node turns
every subscribed ``vision_msgs/Detection3DArray`` into one MarkerArray: a ``DELETEALL`` marker (the previous
frame's boxes disappear) followed by one ``CUBE`` per box (the box's pose and size, coloured by class,
alpha = score) and one ``TEXT_VIEW_FACING`` label above it (class and score). Inputs ``detections`` (the
LiDAR detector) and, optionally, ``ground_truth`` (the simulated LiDAR) go to ``markers`` and
``ground_truth/markers``; stamps and frame ids are kept. A malformed input is logged and dropped.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from latentstack import msgs

from .base import NodeCore, NodeParams, check
from .lidar_detection import DETECTIONS_TYPE

__all__ = ["MARKER_ARRAY_TYPE", "DetectionMarkersCore", "DetectionMarkersParams", "markers_from_detections"]

MARKER_ARRAY_TYPE = "visualization_msgs/msg/MarkerArray"
# visualization_msgs/Marker constants
CUBE, TEXT_VIEW_FACING, ADD, DELETEALL = 1, 9, 0, 3
CLASS_COLORS = {"Car": (0.1, 0.6, 1.0), "Pedestrian": (1.0, 0.3, 0.3), "Cyclist": (0.2, 0.9, 0.3)}
DEFAULT_COLOR = (1.0, 0.8, 0.1)


def markers_from_detections(msg: Any, ns: str = "detections", distro: str | None = None, *,
                            labels: bool = True, lifetime_s: float = 0.0) -> Any:
    """MarkerArray of a Detection3DArray (see module docstring); ``lifetime_s`` 0 = until replaced."""
    hdr = msg.header
    life = msgs.new("builtin_interfaces/msg/Duration", distro, sec=int(lifetime_s),
                    nanosec=round((lifetime_s % 1) * 1e9))
    out = [msgs.new("visualization_msgs/msg/Marker", distro, header=hdr, ns=ns, id=0, action=DELETEALL)]
    for i, det in enumerate(msg.detections):
        best = max(det.results, key=lambda r: r.hypothesis.score, default=None)
        cls = str(best.hypothesis.class_id) if best is not None else ""
        score = float(best.hypothesis.score) if best is not None else 1.0
        r, g, b = CLASS_COLORS.get(cls, DEFAULT_COLOR)
        color = msgs.new("std_msgs/msg/ColorRGBA", distro, r=r, g=g, b=b, a=max(0.2, min(1.0, score)))
        size = det.bbox.size
        scale = msgs.new("geometry_msgs/msg/Vector3", distro, x=float(size.x), y=float(size.y), z=float(size.z))
        out.append(msgs.new("visualization_msgs/msg/Marker", distro, header=hdr, ns=ns, id=2 * i + 1, type=CUBE,
                            action=ADD, pose=det.bbox.center, scale=scale, color=color, lifetime=life))
        if labels:
            c = det.bbox.center.position
            pose = msgs.new("geometry_msgs/msg/Pose", distro,
                            position=msgs.new("geometry_msgs/msg/Point", distro, x=float(c.x), y=float(c.y),
                                              z=float(c.z) + float(size.z) / 2 + 0.4))
            pose.orientation.w = 1.0
            text_scale = msgs.new("geometry_msgs/msg/Vector3", distro, x=0.0, y=0.0, z=0.6)
            out.append(msgs.new("visualization_msgs/msg/Marker", distro, header=hdr, ns=ns + "_labels", id=2 * i + 2,
                                type=TEXT_VIEW_FACING, action=ADD, pose=pose, scale=text_scale, color=color,
                                lifetime=life, text=f"{cls} {score:.2f}"))
    return msgs.new(MARKER_ARRAY_TYPE, distro, markers=out)


@dataclass(frozen=True)
class DetectionMarkersParams(NodeParams):
    detections_topic: str = "detections"
    markers_topic: str = "markers"
    ground_truth_topic: str = "ground_truth"  # "" = no ground-truth markers
    ground_truth_markers_topic: str = "ground_truth/markers"
    labels: bool = True  # a text marker (class, score) above each box
    max_detections: int = 1000  # input cap: larger arrays are refused (one marker costs ~0.5 kB)

    def __post_init__(self) -> None:
        check(bool(self.detections_topic) and bool(self.markers_topic), "detections/markers topics must be set")
        check(self.max_detections >= 1, f"max_detections must be >= 1, got {self.max_detections}")


class DetectionMarkersCore(NodeCore):
    default_name: ClassVar[str] = "detection_markers"
    Params: ClassVar[type] = DetectionMarkersParams

    def __init__(self, transport: Any, params: DetectionMarkersParams | None = None, *, name: str | None = None,
                 namespace: str = "/") -> None:
        super().__init__(transport, params, name=name, namespace=namespace)
        p: DetectionMarkersParams = self.params
        self.pub = self.create_publisher(p.markers_topic, MARKER_ARRAY_TYPE, "default")
        self.create_subscription(p.detections_topic, DETECTIONS_TYPE, lambda m: self._convert(m, self.pub, "detections"),
                                 "sensor_data")
        if p.ground_truth_topic:
            self.gt_pub = self.create_publisher(p.ground_truth_markers_topic, MARKER_ARRAY_TYPE, "default")
            self.create_subscription(p.ground_truth_topic, DETECTIONS_TYPE,
                                     lambda m: self._convert(m, self.gt_pub, "ground_truth"), "sensor_data")

    def _convert(self, msg: Any, pub: Any, ns: str) -> None:
        n = len(msg.detections)
        if n > self.params.max_detections:
            raise msgs.MessageValueError(f"{n} detections > max_detections {self.params.max_detections}")
        pub.publish(markers_from_detections(msg, ns, self.transport.distro, labels=self.params.labels))
        self.counters[f"{ns}_arrays"] += 1
