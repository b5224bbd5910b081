"""ROS 2 node ``recorder``: rclpy wrapper of :class:`~latentstack.nodes.recorder.RecorderCore` (rosbag2/MCAP).

``ros2 run latentstack recorder_node --ros-args -p path:=outputs/bag``. Without ROS the same core
runs via ``lstack launch ... --record PATH``.
"""
from __future__ import annotations

import sys

from latentstack.ros._rclpy_node import run_core


def main(argv: list[str] | None = None) -> int:
    from latentstack.nodes.recorder import RecorderCore

    return run_core(RecorderCore, "recorder", sys.argv if argv is None else argv)


if __name__ == "__main__":
    raise SystemExit(main())
