"""ROS 2 side: thin rclpy wrappers (one file per node, import-guarded) and the graph launcher.

- ``policy_node``, ``sim_bridge_node``, ``recorder_node``, ``lidar_detection_node``, ``stereo_depth_node``,
  ``unilion_detection_node`` (and the simulated sensors' ``*_scene_node``): ``main()`` entry points for
  ``ros2 run``; they declare every field of their core's parameters (``device`` included) and need rclpy
  (a ROS 2 install), printing a clear message otherwise.
- :mod:`latentstack.ros.graph` / :mod:`latentstack.ros.launcher`: run ``ros/graphs/*.yaml`` without
  ROS, in one process (in-process bus) or one process per group over Cyclone DDS.
"""
from __future__ import annotations

from ._rclpy_node import RCLPY_AVAILABLE

__all__ = ["RCLPY_AVAILABLE"]
