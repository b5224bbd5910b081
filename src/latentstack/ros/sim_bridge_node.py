"""ROS 2 node ``sim_bridge``: rclpy wrapper of :class:`~latentstack.nodes.sim_bridge.SimBridgeCore`.

``ros2 run latentstack sim_bridge_node --ros-args -p tasks:="[drawer-close-v3]"``. Without ROS the
same core runs via ``lstack launch``.
"""
from __future__ import annotations

import sys

from latentstack.ros._rclpy_node import run_core


def main(argv: list[str] | None = None) -> int:
    from latentstack.nodes.sim_bridge import SimBridgeCore

    return run_core(SimBridgeCore, "sim_bridge", sys.argv if argv is None else argv)


if __name__ == "__main__":
    raise SystemExit(main())
