"""ROS 2 node ``detection_markers``: rclpy wrapper of :class:`~latentstack.nodes.detection_markers.DetectionMarkersCore`.

``ros2 run latentstack detection_markers_node --ros-args --params-file config/detection_markers.yaml``. Without ROS the same core runs in a
graph file (``kind: detection_markers``) via ``lstack launch``.
"""
from __future__ import annotations

import sys

from latentstack.ros._rclpy_node import run_core


def main(argv: list[str] | None = None) -> int:
    from latentstack.nodes.detection_markers import DetectionMarkersCore

    return run_core(DetectionMarkersCore, "detection_markers", sys.argv if argv is None else argv)


if __name__ == "__main__":
    raise SystemExit(main())
