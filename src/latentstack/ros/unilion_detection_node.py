"""ROS 2 node ``unilion_detection``: rclpy wrapper of :class:`~latentstack.nodes.unilion_detection.UniLIONDetectionNodeCore`.

``ros2 run latentstack unilion_detection_node --ros-args --params-file config/unilion_detection.yaml -p mode:=LC``.
Without ROS the same core runs in a graph file (``kind: unilion_detection``) via ``lstack launch``.
"""
from __future__ import annotations

import sys

from latentstack.ros._rclpy_node import run_core


def main(argv: list[str] | None = None) -> int:
    from latentstack.nodes.unilion_detection import UniLIONDetectionNodeCore

    return run_core(UniLIONDetectionNodeCore, "unilion_detection", sys.argv if argv is None else argv)


if __name__ == "__main__":
    raise SystemExit(main())
