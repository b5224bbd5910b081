"""ROS 2 node ``stereo_depth``: rclpy wrapper of :class:`~latentstack.nodes.stereo_depth.StereoDepthNodeCore`.

``ros2 run latentstack stereo_depth_node --ros-args --params-file config/stereo_depth.yaml -p device:=cuda``. Without ROS
the same core runs in a graph file (``kind: stereo_depth``) via ``lstack launch``.
"""
from __future__ import annotations

import sys

from latentstack.ros._rclpy_node import run_core


def main(argv: list[str] | None = None) -> int:
    from latentstack.nodes.stereo_depth import StereoDepthNodeCore

    return run_core(StereoDepthNodeCore, "stereo_depth", sys.argv if argv is None else argv)


if __name__ == "__main__":
    raise SystemExit(main())
