"""Simulated LiDAR node core (graph kind ``lidar_scene``): a moving MuJoCo LiDAR scene as PointCloud2 + labels.

Streams :func:`latentstack.sim.lidar_scenes.scan_sequence` (64-beam HDL-64E-like scans of a scene whose
objects and ego move; a pure function of ``seed``), or, with ``split_file``, the scans of a LiDAR split
written by ``lstack lion gen-data`` (e.g. ``data/lion/test.npz``: the scans ``lstack lion eval`` scores).

Outputs per frame, one header stamp (``k · dt_s``) and frame id ``frame_id`` (the sensor frame of the
training data: x forward, y left, z up, origin at the sensor):

=====================  ==================================  ===========  ==========================================
topic (relative)       type                                QoS          content
=====================  ==================================  ===========  ==========================================
``points``             sensor_msgs/msg/PointCloud2         sensor_data  unorganized, float32 x, y, z, intensity
``ground_truth``       vision_msgs/msg/Detection3DArray    default      every labelled box (score 1, class name;
                                                                        ``id`` = LiDAR points on the object)
=====================  ==================================  ===========  ==========================================

Frame scheduling (lockstep on the detector's ``detections`` / free-running at ``rate_hz``, ``frames``):
:class:`~.sensor_stream.SensorStreamCore`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from latentstack import msgs

from .base import NodeParams, check, check_finite
from .lidar_detection import DETECTIONS_TYPE, POINTCLOUD_TYPE
from .sensor_stream import SensorStreamCore, check_stream_params

__all__ = ["LidarSceneCore", "LidarSceneParams", "scan_to_cloud"]

CLOUD_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4")])


@dataclass(frozen=True)
class LidarSceneParams(NodeParams):
    seed: int = 200_000  # the scene (test-split seed range: never trained on)
    split_file: str = ""  # stream a gen-data split (.npz) instead of a generated sequence
    frames: int = 10
    dt_s: float = 0.1  # sim time between scans (10 Hz spin); stamps are k * dt_s
    ego_speed: float = -1.0  # m/s; < 0: drawn from the sequence seed
    lockstep: bool = True
    rate_hz: float = 10.0  # free-running publish rate (lockstep false)
    republish_s: float = 2.0
    drain_s: float = 2.0
    publish_clock: bool = True  # /clock = the frame's sim time (k * dt_s), before each frame
    points_topic: str = "points"
    ground_truth_topic: str = "ground_truth"
    answer_topic: str = "detections"  # lockstep: the detector's output
    frame_id: str = "lidar"
    base_frame: str = "base_link"  # /tf_static: base_frame -> frame_id (the sensor at the ego origin)

    def __post_init__(self) -> None:
        check_stream_params(self)
        check(self.seed >= 0, f"seed must be >= 0, got {self.seed}")
        check_finite("ego_speed", self.ego_speed)
        check(bool(self.frame_id), "frame_id must not be empty")


def scan_to_cloud(scan: Any, stamp: int, frame_id: str, distro: str | None = None) -> Any:
    """The PointCloud2 of a :class:`~latentstack.sim.lidar_scenes.LidarScan` (x, y, z, intensity float32)."""
    pts = np.asarray(scan.points, dtype=np.float32).reshape(-1, 4)
    arr = np.empty(len(pts), CLOUD_DTYPE)
    for i, f in enumerate(CLOUD_DTYPE.names or ()):
        arr[f] = pts[:, i]
    return msgs.pointcloud2_from_numpy(arr, stamp, frame_id, distro)


class LidarSceneCore(SensorStreamCore):
    default_name: ClassVar[str] = "lidar_scene"
    Params: ClassVar[type] = LidarSceneParams
    answer_type: ClassVar[str] = DETECTIONS_TYPE

    def __init__(self, transport: Any, params: LidarSceneParams | None = None, *, name: str | None = None,
                 namespace: str = "/") -> None:
        super().__init__(transport, params, name=name, namespace=namespace)
        p: LidarSceneParams = self.params
        self._split: list[Any] | None = None
        if p.split_file:
            from latentstack.core.paths import resolve_path
            from latentstack.sim.lidar_scenes import load_split

            try:
                self._split, _ = load_split(resolve_path(p.split_file))
                check(len(self._split) >= p.frames, f"{p.split_file} has {len(self._split)} scans < frames {p.frames}")
            except BaseException:
                self.close()
                raise
        self.points_pub = self.create_publisher(p.points_topic, POINTCLOUD_TYPE, "sensor_data")
        self.gt_pub = self.create_publisher(p.ground_truth_topic, DETECTIONS_TYPE, "default")
        self.setup_stream()
        self.publish_static_frames([(p.base_frame, p.frame_id, (0.0, 0.0, 0.0))])

    def scan(self, k: int) -> Any:
        """Frame ``k``'s :class:`~latentstack.sim.lidar_scenes.LidarScan`."""
        if self._split is not None:
            return self._split[k]
        import dataclasses

        from latentstack.sim.lidar_scenes import LidarSequenceConfig, scan_sequence

        p: LidarSceneParams = self.params
        motion = LidarSequenceConfig(dt_s=p.dt_s)
        if p.ego_speed >= 0:
            motion = dataclasses.replace(motion, ego_speed=(p.ego_speed, p.ego_speed))
        return scan_sequence(p.seed, 1, motion=motion, start=k)[0]

    def publish_frame(self, k: int, stamp_ns: int) -> None:
        from latentstack.sim.lidar_scenes import CLASSES

        p: LidarSceneParams = self.params
        scan = self.scan(k)
        d = self.transport.distro
        gt = msgs.detection3d_array(scan.boxes, [1.0] * len(scan.boxes), [CLASSES[int(c)] for c in scan.box_class],
                                    stamp=stamp_ns, frame_id=p.frame_id, distro=d)
        for det, n in zip(gt.detections, scan.box_num_points, strict=True):
            det.id = str(int(n))
        self.gt_pub.publish(gt)  # before the cloud: a consumer of both has the labels when the cloud lands
        self.points_pub.publish(scan_to_cloud(scan, stamp_ns, p.frame_id, d))
