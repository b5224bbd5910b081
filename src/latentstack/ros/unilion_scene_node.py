"""ROS 2 node ``unilion_scene``: rclpy wrapper of :class:`~latentstack.nodes.unilion_sensor.UniLIONSceneCore`.

``ros2 run latentstack unilion_scene_node --ros-args --params-file config/unilion_scene.yaml``.
Without ROS the same core runs in a graph file (``kind: unilion_scene``) via ``lstack launch``.
"""
from __future__ import annotations

import sys

from latentstack.ros._rclpy_node import run_core


def main(argv: list[str] | None = None) -> int:
    from latentstack.nodes.unilion_sensor import UniLIONSceneCore

    return run_core(UniLIONSceneCore, "unilion_scene", sys.argv if argv is None else argv)


if __name__ == "__main__":
    raise SystemExit(main())
