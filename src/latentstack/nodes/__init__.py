"""ROS-agnostic node cores (sim bridge, policy, recorder, LiDAR detection, stereo depth, simulated LiDAR and stereo
sensors, detection markers) with typed parameters and watchdogs.

A node is a core + a transport: ``PolicyNodeCore(make_transport("inproc"), PolicyNodeParams(...))``.
The thin rclpy wrappers live in :mod:`latentstack.ros`; graphs of nodes are run by
:mod:`latentstack.ros.launcher` (``lstack launch``).

Every core that holds a model (``policy``, ``lidar_detection``, ``stereo_depth``, ``unilion_detection``) has a
``device`` parameter (default ``cpu``; syntax checked with the other parameters, availability when the model loads, which is where
it is placed). The sim bridge (MuJoCo steps on the CPU; images leave it as messages) and the recorder (writes
message bytes) hold no model and have none.
"""
from __future__ import annotations

from typing import Any

from .base import Executor, NodeCore, ParameterError, Timer, params_from_mapping, params_to_dict
from .interfaces import EpisodeEvent, decode_episode_event, episode_event_msg

__all__ = [
    "NODE_KINDS",
    "EpisodeEvent",
    "Executor",
    "NodeCore",
    "ParameterError",
    "Timer",
    "decode_episode_event",
    "episode_event_msg",
    "node_class",
    "params_from_mapping",
    "params_to_dict",
]

# kind -> "module:Class" (lazy: importing the policy node pulls in torch)
NODE_KINDS: dict[str, str] = {
    "sim_bridge": "latentstack.nodes.sim_bridge:SimBridgeCore",
    "policy": "latentstack.nodes.policy_node:PolicyNodeCore",
    "recorder": "latentstack.nodes.recorder:RecorderCore",
    "lidar_detection": "latentstack.nodes.lidar_detection:LidarDetectionNodeCore",
    "stereo_depth": "latentstack.nodes.stereo_depth:StereoDepthNodeCore",
    "lidar_scene": "latentstack.nodes.lidar_sensor:LidarSceneCore",
    "stereo_scene": "latentstack.nodes.stereo_sensor:StereoSceneCore",
    "detection_markers": "latentstack.nodes.detection_markers:DetectionMarkersCore",
    "unilion_detection": "latentstack.nodes.unilion_detection:UniLIONDetectionNodeCore",
    "unilion_scene": "latentstack.nodes.unilion_sensor:UniLIONSceneCore",
}


def node_class(kind: str) -> Any:
    """The core class for a graph-file ``kind``."""
    import importlib

    try:
        mod, cls = NODE_KINDS[kind].split(":")
    except KeyError:
        raise ValueError(f"unknown node kind {kind!r}; known: {sorted(NODE_KINDS)}") from None
    return getattr(importlib.import_module(mod), cls)
