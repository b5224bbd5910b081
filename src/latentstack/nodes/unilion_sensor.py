"""Simulated driving rig node core (graph kind ``unilion_scene``): a UniLION sequence as LiDAR + cameras + TF.

Streams :func:`latentstack.sim.unilion_scenes.generate_sequence` of sequence seed ``seed`` (default: the first
test-split sequence, never trained on) with ``frames`` frames, ``dt_s`` apart: the scene config is
:class:`~latentstack.sim.unilion_scenes.UniSceneConfig` with ``num_frames = frames`` and this node's geometry
parameters (``point_range``, ``place_x``, ``place_y``, image size, camera yaws and field of view), so the frames
are a pure function of the parameters and equal the generator's output for the same config (the road's length
depends on ``num_frames``). The sequence is generated once, on the first frame, and kept (a few MB for the
default 8 frames).

Outputs per frame ``k``, all with one header stamp ``k · dt_s`` (frame ``k``'s ``time_s`` in the sequence):

==================================  ==================================  ===========  ==================================
topic (relative unless absolute)    type                                QoS          content
==================================  ==================================  ===========  ==================================
``/clock``                          rosgraph_msgs/msg/Clock             clock        the frame's sim time, first
``/tf``                             tf2_msgs/msg/TFMessage              default      ``odom_frame ← base_frame``: the
                                                                                     ego pose (world ← ego)
``points``                          sensor_msgs/msg/PointCloud2         sensor_data  x, y, z, intensity float32, frame
                                                                                     ``lidar_frame``
``<cam>/camera_info``               sensor_msgs/msg/CameraInfo          sensor_data  pinhole, no distortion
``<cam>/image_raw``                 sensor_msgs/msg/Image (rgb8)        sensor_data  frame ``<cam>_optical_frame``
``ground_truth``                    vision_msgs/msg/Detection3DArray    default      every box in ``base_frame``
                                                                                     (score 1, class; ``id`` = track id)
==================================  ==================================  ===========  ==================================

``/tf_static`` (once): ``base_frame ← lidar_frame`` (identity: the data's ego frame is the LiDAR frame) and
``base_frame ← <cam>_optical_frame`` (the data's ``cam2ego``: OpenCV optical axes x right, y down, z forward, as
ROS optical frames). CameraInfo follows the ROS convention (pixel centres at integer coordinates): ``cx = W/2 − ½``,
``cy = H/2 − ½`` for the data's ``K`` whose pixel ``j`` covers ``[j, j+1)`` (``unilion_scenes`` docstring); the
detection node shifts it back. Camera infos go out before the images, TF before everything it locates.

Frame scheduling (lockstep on the detection node's ``detections`` / free-running at ``rate_hz``):
:class:`~.sensor_stream.SensorStreamCore`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from latentstack import msgs

from .base import NodeParams, ParameterError, check, check_finite
from .interfaces import CAMERA_INFO_TYPE, IMAGE_TYPE
from .lidar_detection import DETECTIONS_TYPE, POINTCLOUD_TYPE
from .lidar_sensor import scan_to_cloud
from .sensor_stream import SensorStreamCore, check_stream_params
from .tf import TF_QOS, TF_TYPE, tf_message, transform_stamped
from .tf_listener import matrix_to_quaternion
from .unilion_detection import PIXEL_CENTRE_SHIFT

__all__ = ["UniLIONSceneCore", "UniLIONSceneParams", "camera_info_msg", "pose_transform", "scene_config"]


@dataclass(frozen=True)
class UniLIONSceneParams(NodeParams):
    seed: int = 1_200_000  # sequence seed (unilion_scenes.SPLIT_SEEDS["test"]: never trained on)
    frames: int = 8
    dt_s: float = 0.2  # the sequence's time step; stamps are k * dt_s
    # scene geometry (UniSceneConfig; defaults = the unilion_tiny data)
    point_range: tuple[float, ...] = (0.0, -25.6, -3.0, 51.2, 25.6, 1.0)
    place_x: tuple[float, ...] = (4.0, 50.0)
    place_y: float = 24.0
    image_height: int = 64
    image_width: int = 96
    camera_hfov_deg: float = 64.0
    camera_yaws_deg: tuple[float, ...] = (30.0, -30.0)
    cameras: tuple[str, ...] = ("cam0", "cam1")  # topic prefixes, one per camera yaw
    lockstep: bool = True
    rate_hz: float = 5.0  # free-running publish rate (lockstep false)
    republish_s: float = 2.0
    drain_s: float = 2.0
    publish_clock: bool = True  # /clock = the frame's sim time (k * dt_s), before each frame
    points_topic: str = "points"
    image_topic: str = "image_raw"  # per camera: <cam>/<image_topic>
    info_topic: str = "camera_info"  # per camera: <cam>/<info_topic>
    ground_truth_topic: str = "ground_truth"
    answer_topic: str = "detections"  # lockstep: the detection node's output
    base_frame: str = "base_link"
    odom_frame: str = "odom"  # /tf: odom_frame <- base_frame per frame (world = the ego frame at t = 0)
    lidar_frame: str = "lidar"

    def __post_init__(self) -> None:
        check_stream_params(self)
        check(self.seed >= 0, f"seed must be >= 0, got {self.seed}")
        check(len(self.point_range) == 6 and all(np.isfinite(self.point_range)), "point_range must be 6 finite numbers")
        check(len(self.place_x) == 2 and all(np.isfinite(self.place_x)), "place_x must be 2 finite numbers")
        for name in ("place_y", "camera_hfov_deg"):
            check_finite(name, getattr(self, name))
        check(0 < self.camera_hfov_deg < 180, f"camera_hfov_deg must be in (0, 180), got {self.camera_hfov_deg}")
        check(8 <= self.image_height <= 1024 and 8 <= self.image_width <= 1024,
              "image_height and image_width must be in [8, 1024]")
        check(len(self.cameras) == len(self.camera_yaws_deg) >= 1,
              f"one camera name per camera yaw: {self.cameras} vs {self.camera_yaws_deg}")
        check(all(self.cameras) and len(set(self.cameras)) == len(self.cameras), "camera names must be distinct")
        frames = {self.base_frame, self.odom_frame, self.lidar_frame, *(f"{c}_optical_frame" for c in self.cameras)}
        check(all(frames) and len(frames) == 3 + len(self.cameras), "frame ids must be non-empty and distinct")


def scene_config(p: UniLIONSceneParams) -> Any:
    """The :class:`~latentstack.sim.unilion_scenes.UniSceneConfig` these parameters stream."""
    from latentstack.sim.unilion_scenes import UniSceneConfig

    x0, y0, _, x1, y1, _ = p.point_range
    return UniSceneConfig(num_frames=p.frames, dt_s=p.dt_s, point_range=tuple(p.point_range),
                          place_x=tuple(p.place_x), place_y=p.place_y, bev_range=(x0, y0, x1, y1),
                          image_size=(p.image_height, p.image_width), camera_hfov_deg=p.camera_hfov_deg,
                          camera_yaws_deg=tuple(p.camera_yaws_deg))


def pose_transform(parent: str, child: str, stamp_ns: int, mat: np.ndarray, distro: str | None = None) -> Any:
    """``TransformStamped`` of a 4×4 ``parent ← child`` matrix."""
    m = np.asarray(mat, dtype=np.float64)
    return transform_stamped(parent, child, stamp_ns, m[:3, 3].tolist(), matrix_to_quaternion(m[:3, :3]), distro)


def camera_info_msg(k_data: np.ndarray, width: int, height: int, stamp_ns: int, frame_id: str,
                    distro: str | None = None) -> Any:
    """ROS CameraInfo of a data intrinsics matrix (principal point shifted by −½ px: module docstring)."""
    k = np.asarray(k_data, dtype=np.float64)
    return msgs.camera_info(width, height, k[0, 0], k[1, 1], k[0, 2] - PIXEL_CENTRE_SHIFT,
                            k[1, 2] - PIXEL_CENTRE_SHIFT, stamp_ns, frame_id, distro)


class UniLIONSceneCore(SensorStreamCore):
    default_name: ClassVar[str] = "unilion_scene"
    Params: ClassVar[type] = UniLIONSceneParams
    answer_type: ClassVar[str] = DETECTIONS_TYPE

    def __init__(self, transport: Any, params: UniLIONSceneParams | None = None, *, name: str | None = None,
                 namespace: str = "/") -> None:
        super().__init__(transport, params, name=name, namespace=namespace)
        p: UniLIONSceneParams = self.params
        from latentstack.sim.unilion_scenes import camera_calibration

        try:
            self.config = scene_config(p)
        except ValueError as exc:
            self.close()
            raise ParameterError(f"scene parameters: {exc}") from None
        self.intrinsics, self.cam2ego = camera_calibration(self.config)
        self._frames: list[Any] | None = None
        self.points_pub = self.create_publisher(p.points_topic, POINTCLOUD_TYPE, "sensor_data")
        self.info_pubs = [self.create_publisher(f"{c}/{p.info_topic}", CAMERA_INFO_TYPE, "sensor_data")
                          for c in p.cameras]
        self.image_pubs = [self.create_publisher(f"{c}/{p.image_topic}", IMAGE_TYPE, "sensor_data")
                           for c in p.cameras]
        self.gt_pub = self.create_publisher(p.ground_truth_topic, DETECTIONS_TYPE, "default")
        self.tf_pub = self.create_publisher("/tf", TF_TYPE, TF_QOS)
        self.setup_stream()
        d = self.transport.distro
        static = [pose_transform(p.base_frame, p.lidar_frame, 0, np.eye(4), d)]
        static += [pose_transform(p.base_frame, f"{c}_optical_frame", 0, self.cam2ego[i], d)
                   for i, c in enumerate(p.cameras)]
        self.tf_static_pub.publish(tf_message(static, d))  # one message: /tf_static keeps the last one

    def frame(self, k: int) -> Any:
        """Frame ``k``'s :class:`~latentstack.sim.unilion_scenes.UniFrame` (the sequence is generated once)."""
        if self._frames is None:
            from latentstack.sim.unilion_scenes import generate_sequence

            self._frames = generate_sequence(self.params.seed, self.config)
        return self._frames[k]

    def publish_frame(self, k: int, stamp_ns: int) -> None:
        from latentstack.sim.lidar_scenes import CLASSES

        p: UniLIONSceneParams = self.params
        fr = self.frame(k)
        d = self.transport.distro
        self.tf_pub.publish(tf_message([pose_transform(p.odom_frame, p.base_frame, stamp_ns, fr.ego_pose, d)], d))
        gt = msgs.detection3d_array(fr.boxes, [1.0] * len(fr.boxes), [CLASSES[int(c)] for c in fr.box_class],
                                    stamp=stamp_ns, frame_id=p.base_frame, distro=d)
        for det, tid in zip(gt.detections, fr.box_track, strict=True):
            det.id = str(int(tid))
        self.gt_pub.publish(gt)  # before the sensor data: a consumer of both has the labels when the frame lands
        h, w = fr.images.shape[1:3]
        for i, c in enumerate(p.cameras):
            self.info_pubs[i].publish(camera_info_msg(self.intrinsics[i], w, h, stamp_ns, f"{c}_optical_frame", d))
            self.image_pubs[i].publish(msgs.image_to_msg(fr.images[i], "rgb8", stamp_ns, f"{c}_optical_frame", d))
        self.points_pub.publish(scan_to_cloud(fr, stamp_ns, p.lidar_frame, d))  # last: it completes the frame
