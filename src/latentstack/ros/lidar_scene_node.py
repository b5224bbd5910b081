"""ROS 2 node ``lidar_scene``: rclpy wrapper of :class:`~latentstack.nodes.lidar_sensor.LidarSceneCore`.

``ros2 run latentstack lidar_scene_node --ros-args --params-file config/lidar_scene.yaml``. Without ROS the same core runs in a
graph file (``kind: lidar_scene``) via ``lstack launch``.
"""
from __future__ import annotations

import sys

from latentstack.ros._rclpy_node import run_core


def main(argv: list[str] | None = None) -> int:
    from latentstack.nodes.lidar_sensor import LidarSceneCore

    return run_core(LidarSceneCore, "lidar_scene", sys.argv if argv is None else argv)


if __name__ == "__main__":
    raise SystemExit(main())
