"""ROS 2 node ``lidar_detection``: rclpy wrapper of :class:`~latentstack.nodes.lidar_detection.LidarDetectionNodeCore`.

``ros2 run latentstack lidar_detection_node --ros-args --params-file config/lidar_detection.yaml -p device:=cuda``. Without ROS
the same core runs in a graph file (``kind: lidar_detection``) via ``lstack launch``.
"""
from __future__ import annotations

import sys

from latentstack.ros._rclpy_node import run_core


def main(argv: list[str] | None = None) -> int:
    from latentstack.nodes.lidar_detection import LidarDetectionNodeCore

    return run_core(LidarDetectionNodeCore, "lidar_detection", sys.argv if argv is None else argv)


if __name__ == "__main__":
    raise SystemExit(main())
