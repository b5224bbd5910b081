"""LiDAR detection node core: ``sensor_msgs/PointCloud2`` in → ``vision_msgs/Detection3DArray`` out.

Input ``points`` (SensorDataQoS): an unorganized cloud with float fields ``x, y, z`` and
optionally ``intensity`` (0 when absent), in the LiDAR frame of the training data (x forward,
z up, origin at the sensor). Every cloud is run through a LION detector checkpoint (or any
object with ``detect(clouds) -> [{"boxes", "scores", "labels"}]``); the output keeps the
input's stamp and frame id, boxes ``(x, y, z, l, w, h, yaw)`` with class names as ids.
Malformed clouds (missing fields, non-finite values) are logged, counted and dropped; the node
keeps running.

Real driver layouts are accepted unchanged: any extra fields (ring, time/t, reflectivity, ambient, range,
tag/line/timestamp), padding and ``point_step`` (Ouster 48, Velodyne 22/32, Livox 26), big-endian data,
FLOAT64 or integer coordinates, organised (height > 1) and unorganised clouds. An organised cloud with
``is_dense: false`` marks missing returns with NaN (Velodyne, Hesai) or with x = y = z = 0 (Ouster): those
points are removed before detection; a non-finite point in a cloud that claims ``is_dense: true`` is a
malformed cloud. Intensity is passed as the driver scales it (0-255 for Velodyne/Livox, raw counts for
Ouster): the detector sees what the sensor publishes.

Input caps (parameters, checked on the message fields before the cloud is decoded): ``max_points``
(height × width, default 300k — a 64-beam scan has ~130k), ``max_fields`` PointFields (default 32)
and ``max_string_length`` (default 256) for the frame id and field names. A refused cloud is a counted
``invalid_message``; the detector is not called.

Threading (``async_inference``, default true): the callback on the executor checks the caps and decodes the
cloud; the detector runs and the detections are published on the node's worker thread
(:class:`~latentstack.nodes.worker.LatestFrameWorker`), so a slow cloud never blocks the other nodes of the
executor. A cloud that arrives while the previous one is still being detected replaces any cloud waiting
behind it (``frames_dropped_busy``). ``async_inference: false`` runs the detector in the callback
(deterministic tests, offline runs); the outputs for the same clouds are the same.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from latentstack import msgs

from .base import NodeParams, available_device, check, check_device_param, check_finite, check_string_length
from .worker import PerceptionNodeCore

__all__ = ["DETECTIONS_TYPE", "POINTCLOUD_TYPE", "LidarDetectionNodeCore", "LidarDetectionParams"]

POINTCLOUD_TYPE = "sensor_msgs/msg/PointCloud2"
DETECTIONS_TYPE = "vision_msgs/msg/Detection3DArray"


@dataclass(frozen=True)
class LidarDetectionParams(NodeParams):
    model: str = "policies/lion_tiny"
    points_topic: str = "points"
    detections_topic: str = "detections"
    score_threshold: float = 0.3
    max_points: int = 300_000  # input caps, checked before decoding (larger clouds are refused)
    max_fields: int = 32
    max_string_length: int = 256  # frame_id and PointField names
    torch_threads: int = 1
    device: str = "cpu"  # where the detector runs: cpu | cuda | cuda:N | mps (checked when the node starts)
    async_inference: bool = True  # detect on the node's worker thread (false: in the callback, on the executor)

    def __post_init__(self) -> None:
        check(bool(self.model), "parameter 'model' must name a LION checkpoint directory")
        check_finite("score_threshold", self.score_threshold)
        check(0.0 <= self.score_threshold <= 1.0, f"score_threshold must be in [0, 1], got {self.score_threshold}")
        check(self.max_points >= 1, f"max_points must be >= 1, got {self.max_points}")
        check(self.max_fields >= 3, f"max_fields must be >= 3 (x, y, z), got {self.max_fields}")
        check(self.max_string_length >= 1, f"max_string_length must be >= 1, got {self.max_string_length}")
        check(self.torch_threads >= 1, f"torch_threads must be >= 1, got {self.torch_threads}")
        check_device_param(self.device)


class LidarDetectionNodeCore(PerceptionNodeCore):
    default_name: ClassVar[str] = "lidar_detection"
    Params: ClassVar[type] = LidarDetectionParams

    def __init__(self, transport: Any, params: LidarDetectionParams | None = None, *, model: Any = None,
                 name: str | None = None, namespace: str = "/") -> None:
        super().__init__(transport, params, name=name, namespace=namespace)
        p: LidarDetectionParams = self.params
        try:
            import torch

            torch.set_num_threads(p.torch_threads)
            if model is None:
                from latentstack.nodes.policy_node import resolve_policy_path
                from latentstack.perception.lion import load_detector

                model = load_detector(resolve_policy_path(p.model), device=available_device(p.device))
            self.model = model
        except BaseException:
            self.close()
            raise
        classes = getattr(getattr(model, "config", None), "classes", None)
        self.class_names: tuple[str, ...] = tuple(classes) if classes else ("Car", "Pedestrian", "Cyclist")
        self.frames = 0  # clouds detected and published (written by the worker thread only)
        self.start_worker(self._detect_and_publish, threaded=p.async_inference)
        self.pub = self.create_publisher(p.detections_topic, DETECTIONS_TYPE, "default")
        self.create_subscription(p.points_topic, POINTCLOUD_TYPE, self._on_points, "sensor_data")

    @staticmethod
    def cloud_array(msg: Any, max_points: int, *, max_fields: int = 32, max_string_length: int = 256) -> np.ndarray:
        """(P, 4) float32 x, y, z, intensity from a PointCloud2; raises MessageValueError on bad clouds.

        The caps are checked on the message fields first, so an oversized cloud costs no decoding.
        """
        n = int(msg.height) * int(msg.width)
        if n > max_points:
            raise msgs.MessageValueError(f"PointCloud2 has {n} points > max_points {max_points}")
        if len(msg.fields) > max_fields:
            raise msgs.MessageValueError(f"PointCloud2 has {len(msg.fields)} fields > max_fields {max_fields}")
        check_string_length("frame_id", msg.header.frame_id, max_string_length)
        for f in msg.fields:
            check_string_length("PointField name", f.name, max_string_length)
        arr = msgs.pointcloud2_to_numpy(msg)
        names = arr.dtype.names or ()
        missing = [f for f in ("x", "y", "z") if f not in names]
        if missing:
            raise msgs.MessageValueError(f"PointCloud2 lacks field(s) {missing}; has {list(names)}")
        vector = [f for f in ("x", "y", "z", "intensity") if f in names and arr.dtype[f].shape != ()]
        if vector:  # e.g. count = 3: one value per point is required (np.stack would raise a bare ValueError)
            raise msgs.MessageValueError(f"PointCloud2 field(s) {vector} must have count 1")
        with np.errstate(over="ignore"):  # FLOAT64 beyond float32 becomes inf: handled as non-finite below
            cols = [arr[f].astype(np.float32).reshape(-1) for f in ("x", "y", "z")]
            cols.append(arr["intensity"].astype(np.float32).reshape(-1) if "intensity" in names
                        else np.zeros(arr.size, np.float32))
        pts = np.stack(cols, 1)
        finite = np.isfinite(pts).all(1)
        if not bool(msg.is_dense):  # drivers mark missing returns with NaN, or (Ouster) with the origin
            keep = finite & (pts[:, :3] != 0).any(1)
            if not keep.all():
                pts = pts[keep]
        elif not finite.all():
            raise msgs.MessageValueError("PointCloud2 with is_dense true contains non-finite points")
        return pts

    def _on_points(self, msg: Any) -> None:
        """Executor side: caps + decoding only (bounded by the caps), then the worker takes over."""
        p: LidarDetectionParams = self.params
        pts = self.cloud_array(msg, p.max_points, max_fields=p.max_fields, max_string_length=p.max_string_length)
        self.submit((pts, msgs.stamp_ns(msg), str(msg.header.frame_id)))

    def _detect_and_publish(self, job: tuple[np.ndarray, int, str]) -> None:
        """Worker side (or the callback in synchronous mode): the detector, then the detections."""
        pts, stamp, frame_id = job
        p: LidarDetectionParams = self.params
        det = self.model.detect([pts])[0]
        keep = det["scores"] >= p.score_threshold
        labels = [self.class_names[int(k)] for k in det["labels"][keep]]
        out = msgs.detection3d_array(det["boxes"][keep], det["scores"][keep].tolist(), labels,
                                     stamp=stamp, frame_id=frame_id)
        self.pub.publish(out)
        self.frames += 1
