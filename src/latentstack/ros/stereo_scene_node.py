"""ROS 2 node ``stereo_scene``: rclpy wrapper of :class:`~latentstack.nodes.stereo_sensor.StereoSceneCore`.

``ros2 run latentstack stereo_scene_node --ros-args --params-file config/stereo_scene.yaml``. Without ROS the same core runs in a
graph file (``kind: stereo_scene``) via ``lstack launch``.
"""
from __future__ import annotations

import sys

from latentstack.ros._rclpy_node import run_core


def main(argv: list[str] | None = None) -> int:
    from latentstack.nodes.stereo_sensor import StereoSceneCore

    return run_core(StereoSceneCore, "stereo_scene", sys.argv if argv is None else argv)


if __name__ == "__main__":
    raise SystemExit(main())
