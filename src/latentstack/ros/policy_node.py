"""ROS 2 node ``policy_node``: rclpy wrapper of :class:`~latentstack.nodes.policy_node.PolicyNodeCore`.

``ros2 run latentstack policy_node --ros-args -p policy:=/path/to/checkpoint``. Without ROS the
same core runs via ``lstack launch``.
"""
from __future__ import annotations

import sys

from latentstack.ros._rclpy_node import run_core


def main(argv: list[str] | None = None) -> int:
    from latentstack.nodes.policy_node import PolicyNodeCore

    return run_core(PolicyNodeCore, "policy_node", sys.argv if argv is None else argv)


if __name__ == "__main__":
    raise SystemExit(main())
