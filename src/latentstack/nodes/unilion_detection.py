"""UniLION detection node core: PointCloud2 + N camera Images + N CameraInfo + TF in → 3-D boxes and BEV maps out.

Inputs (SensorDataQoS; ``/tf`` default QoS, ``/tf_static`` transient local):

- ``points`` — the LiDAR cloud (any driver layout :class:`~.lidar_detection.LidarDetectionNodeCore` accepts, with the
  same caps ``max_points`` / ``max_fields`` / ``max_string_length``); moved into ``base_frame`` by TF (no arithmetic
  when that transform is the identity, as for the simulated rig);
- per camera name ``c`` in ``cameras`` (modes with C only): ``c/<image_topic>`` (rgb8, bgr8, rgba8, bgra8, mono8 or
  mono16; exactly the model's image size — the model was trained at one size and is not resized here) and
  ``c/<info_topic>``. Intrinsics are ``P[:3, :3]`` (``K`` when P is unset) of rectified images, as the stereo node;
  the ROS principal point (pixel centres at integers) is shifted by +½ px to the model's convention (pixel ``j``
  covers ``[j, j+1)``, :mod:`latentstack.sim.unilion_scenes`). Camera extrinsics ``base_frame ← image frame id`` come
  from TF at the frame's stamp;
- the ego pose ``odom_frame ← base_frame`` from TF at the frame's stamp (modes with T only).

**Time synchronisation.** The cloud, the images and the camera infos of a frame are matched by **exact** header
stamp (message_filters' ExactTime policy): a frame is processed once all its messages arrived. At most
``sync_queue_size`` incomplete stamps are held; a new stamp beyond that evicts the oldest (``sync_unmatched``), and
a completed stamp drops every older incomplete one (``sync_stale``: it can no longer be processed in order), each
logged (rate-limited) with what was missing. A completed frame whose transforms are not in the TF buffer yet waits
for the next ``/tf`` message (TF may arrive after the data over DDS); it is dropped (``tf_missing``, logged) when a
newer frame completes first. Memory is bounded by ``sync_queue_size`` frames plus one waiting for TF, plus the
worker's one in flight and one pending.

**Modes** (``mode``): L, LT, LC, LCT — which token kinds the one model uses (``perception.unilion``). In T modes the
node keeps the model's temporal memory from frame to frame. The memory is reset (``memory_reset``; a new scene id
from a counter) when a stamp goes backwards or more than the model's ``max_seq_time`` passed since the previous
processed frame. Times and poses given to the model are relative to the first frame of the current scene (its
``time_s`` starts at 0, its ``ego_pose`` at the identity), so float32 keeps its precision with wall-clock stamps and
large odometry coordinates; the model only uses the differences. A frame with the stamp of the previous processed
frame (a lockstep re-send) is answered with the cached outputs, without running the model (``duplicate_frame``):
running it again would feed the frame its own memory.

**Outputs** (header stamp = the frame's, frame id ``base_frame``): ``detections`` (vision_msgs/Detection3DArray,
boxes ``x, y, z, l, w, h, yaw`` with class names, scores ≥ ``score_threshold``) — published last, so a consumer that
waits for it (the lockstep sensor) has every map of the frame; and ``nav_msgs/OccupancyGrid`` BEV maps on the
model's BEV grid (row ↔ y, column ↔ x, ``data[row·width + col]``; resolution = the BEV cell size; origin = the grid's
corner ``(point_range x0, y0)`` in ``base_frame``, identity orientation; no unknown cells):

- ``segmentation_topic`` (default ``bev/objects``): per cell the **maximum over the segmentation channels named in
  ``segmentation_channels``** (default the object classes Car, Pedestrian, Cyclist: "some object's footprint") of the
  sigmoid probability;
- ``drivable_topic`` (default ``bev/drivable``): the ``drivable`` channel;
- ``occupancy_topic`` (default ``bev/occupancy``): the maximum over the occupancy head's height bins.

Every probability ``p`` maps to ``round(100·p)`` ∈ [0, 100] (ROS: 0 free … 100 occupied). An empty topic name turns
a map off.

Refused inputs (logged, counted ``invalid_message``; the node keeps running): clouds over the caps or malformed,
images of another size or an unsupported encoding, camera infos with non-finite or non-positive focal lengths or
another size, malformed transforms. Threading (``async_inference``): callbacks validate, decode and synchronise on the
executor; the model runs on the node's :class:`~latentstack.nodes.worker.LatestFrameWorker` (latest frame wins; a
dropped frame only lengthens the gap the memory bridges). ``async_inference: false`` runs it in the callback
(deterministic tests); the outputs for the same frames are the same.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from latentstack import msgs

from .base import (
    NodeParams,
    ParameterError,
    available_device,
    check,
    check_device_param,
    check_finite,
    check_string_length,
)
from .interfaces import CAMERA_INFO_TYPE, IMAGE_TYPE
from .lidar_detection import DETECTIONS_TYPE, POINTCLOUD_TYPE, LidarDetectionNodeCore
from .tf import TF_QOS, TF_STATIC_QOS, TF_TYPE
from .tf_listener import TFBuffer, TFLookupError
from .worker import PerceptionNodeCore

__all__ = ["GRID_TYPE", "MODES", "PIXEL_CENTRE_SHIFT", "UniLIONDetectionNodeCore", "UniLIONDetectionParams", "probability_grid"]

GRID_TYPE = "nav_msgs/msg/OccupancyGrid"
MODES = ("L", "LT", "LC", "LCT")  # as perception.unilion.MODES (not imported: graph files validate without torch)
PIXEL_CENTRE_SHIFT = 0.5  # ROS K (pixel j centred at j) -> model K (pixel j covers [j, j+1))


@dataclass(frozen=True)
class UniLIONDetectionParams(NodeParams):
    model: str = "policies/unilion_tiny"
    mode: str = "LCT"  # L | LT | LC | LCT
    points_topic: str = "points"
    cameras: tuple[str, ...] = ("cam0", "cam1")  # topic prefixes, in the model's camera order
    image_topic: str = "image_raw"  # per camera: <cam>/<image_topic>
    info_topic: str = "camera_info"  # per camera: <cam>/<info_topic>
    detections_topic: str = "detections"
    segmentation_topic: str = "bev/objects"  # "" = off
    segmentation_channels: tuple[str, ...] = ("Car", "Pedestrian", "Cyclist")
    drivable_topic: str = "bev/drivable"  # "" = off
    occupancy_topic: str = "bev/occupancy"  # "" = off
    base_frame: str = "base_link"
    odom_frame: str = "odom"
    score_threshold: float = 0.3
    sync_queue_size: int = 8  # incomplete stamps held by the exact-time synchroniser
    tf_cache_size: int = 100  # stamped samples per dynamic TF edge
    max_points: int = 300_000
    max_fields: int = 32
    max_string_length: int = 256
    torch_threads: int = 1
    device: str = "cpu"
    async_inference: bool = True

    def __post_init__(self) -> None:
        check(bool(self.model), "parameter 'model' must name a UniLION checkpoint directory")
        check(self.mode in MODES, f"mode must be one of {MODES}, got {self.mode!r}")
        check(len(self.cameras) >= 1 and all(self.cameras) and len(set(self.cameras)) == len(self.cameras),
              "cameras must be distinct non-empty names")
        check(bool(self.points_topic) and bool(self.detections_topic), "points/detections topics must not be empty")
        check(bool(self.segmentation_channels) or not self.segmentation_topic,
              "segmentation_channels must name at least one channel")
        check(bool(self.base_frame) and bool(self.odom_frame) and self.base_frame != self.odom_frame,
              "base_frame and odom_frame must be distinct non-empty frame ids")
        check_finite("score_threshold", self.score_threshold)
        check(0.0 <= self.score_threshold <= 1.0, f"score_threshold must be in [0, 1], got {self.score_threshold}")
        check(1 <= self.sync_queue_size <= 1000, f"sync_queue_size must be in [1, 1000], got {self.sync_queue_size}")
        check(2 <= self.tf_cache_size <= 100_000, f"tf_cache_size must be in [2, 100000], got {self.tf_cache_size}")
        check(self.max_points >= 1, f"max_points must be >= 1, got {self.max_points}")
        check(self.max_fields >= 3, f"max_fields must be >= 3 (x, y, z), got {self.max_fields}")
        check(self.max_string_length >= 1, f"max_string_length must be >= 1, got {self.max_string_length}")
        check(self.torch_threads >= 1, f"torch_threads must be >= 1, got {self.torch_threads}")
        check_device_param(self.device)


@dataclass
class _Frame:
    """The messages of one stamp, decoded, as they arrive."""

    points: np.ndarray | None = None
    lidar_frame: str = ""
    images: list[np.ndarray | None] = field(default_factory=list)
    image_frames: list[str] = field(default_factory=list)
    intrinsics: list[np.ndarray | None] = field(default_factory=list)

    def missing(self) -> list[str]:
        out = [] if self.points is not None else ["points"]
        out += [f"image {i}" for i, im in enumerate(self.images) if im is None]
        out += [f"camera_info {i}" for i, k in enumerate(self.intrinsics) if k is None]
        return out


def probability_grid(prob: np.ndarray, resolution: float, origin_xy: tuple[float, float], stamp: int, frame_id: str,
                     distro: str | None = None) -> Any:
    """``nav_msgs/OccupancyGrid`` of a (rows = y, cols = x) probability map: cells ``round(100·p)``."""
    p = np.clip(np.nan_to_num(np.asarray(prob, dtype=np.float64), nan=0.0), 0.0, 1.0)
    h, w = p.shape
    t = msgs.ns_to_time(stamp, distro)
    origin = msgs.new("geometry_msgs/msg/Pose", distro,
                      position=msgs.new("geometry_msgs/msg/Point", distro, x=float(origin_xy[0]),
                                        y=float(origin_xy[1]), z=0.0),
                      orientation=msgs.new("geometry_msgs/msg/Quaternion", distro, x=0.0, y=0.0, z=0.0, w=1.0))
    info = msgs.new("nav_msgs/msg/MapMetaData", distro, map_load_time=t, resolution=float(resolution), width=w,
                    height=h, origin=origin)
    data = np.rint(100.0 * p).astype(np.int8).reshape(-1)
    return msgs.new(GRID_TYPE, distro, header=msgs.header(stamp, frame_id, distro), info=info, data=data)


def _rigid_inverse(m: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = m[:3, :3].T
    out[:3, 3] = -m[:3, :3].T @ m[:3, 3]
    return out


class UniLIONDetectionNodeCore(PerceptionNodeCore):
    default_name: ClassVar[str] = "unilion_detection"
    Params: ClassVar[type] = UniLIONDetectionParams

    def __init__(self, transport: Any, params: UniLIONDetectionParams | None = None, *, model: Any = None,
                 name: str | None = None, namespace: str = "/") -> None:
        super().__init__(transport, params, name=name, namespace=namespace)
        p: UniLIONDetectionParams = self.params
        try:
            import torch

            torch.set_num_threads(p.torch_threads)
            self._torch = torch
            if model is None:
                from latentstack.nodes.policy_node import resolve_policy_path
                from latentstack.perception.unilion import load_unilion

                device = available_device(p.device)  # first: a missing CUDA is the error, not the model path
                model = load_unilion(resolve_policy_path(p.model), device=device)
            self.model = model.eval()
            cfg = model.config
            self.camera_mode = "C" in p.mode
            self.temporal = "T" in p.mode
            if self.camera_mode and len(p.cameras) != cfg.num_cameras:
                raise ParameterError(f"the model takes {cfg.num_cameras} cameras; parameter 'cameras' names "
                                     f"{len(p.cameras)}: {list(p.cameras)}")
            unknown = sorted(set(p.segmentation_channels) - set(cfg.seg_classes))
            if p.segmentation_topic and unknown:
                raise ParameterError(f"segmentation_channels {unknown} are not channels of the model "
                                     f"{list(cfg.seg_classes)}")
            if cfg.voxel_size[0] != cfg.voxel_size[1]:
                raise ParameterError(f"an OccupancyGrid needs square BEV cells; voxel_size {cfg.voxel_size}")
        except BaseException:
            self.close()
            raise
        self.image_hw: tuple[int, int] = tuple(cfg.image_size)  # type: ignore[assignment]
        self.class_names: tuple[str, ...] = tuple(cfg.classes)
        self.seg_index = [list(cfg.seg_classes).index(c) for c in p.segmentation_channels]
        self.drivable_index = list(cfg.seg_classes).index("drivable") if "drivable" in cfg.seg_classes else None
        self.cell_m = float(cfg.voxel_size[0] * cfg.out_stride)
        self.grid_origin = (float(cfg.point_range[0]), float(cfg.point_range[1]))
        self.max_seq_ns = round(cfg.max_seq_time * 1e9)
        self.tf = TFBuffer(cache_size=p.tf_cache_size)
        self._sync: OrderedDict[int, _Frame] = OrderedDict()
        self._waiting: tuple[int, _Frame] | None = None  # complete, waiting for TF
        self._tf_error = ""  # why the waiting frame's transforms were not found (for the drop log)
        # temporal state: touched by the worker job only
        self.memory: Any = None
        self.scene_id = 0
        self._scene_start: tuple[int, np.ndarray] | None = None
        self._last: tuple[int, list[tuple[Any, Any]]] | None = None  # (stamp, [(publisher, message)])
        # written by the worker thread only (merged into stats()["counters"])
        self.frames = 0  # frames run through the model and published
        self.memory_resets = 0
        self.duplicate_frames = 0
        self.start_worker(self._infer_and_publish, threaded=p.async_inference)
        self.grid_pubs: dict[str, Any] = {}
        for key, topic in (("segmentation", p.segmentation_topic), ("drivable", p.drivable_topic),
                           ("occupancy", p.occupancy_topic)):
            if topic and (key != "drivable" or self.drivable_index is not None):
                self.grid_pubs[key] = self.create_publisher(topic, GRID_TYPE, "default")
        self.pub = self.create_publisher(p.detections_topic, DETECTIONS_TYPE, "default")
        self.create_subscription("/tf_static", TF_TYPE, self._on_tf_static, TF_STATIC_QOS)
        self.create_subscription("/tf", TF_TYPE, self._on_tf, TF_QOS)
        if self.camera_mode:
            for i, cam in enumerate(p.cameras):
                self.create_subscription(f"{cam}/{p.info_topic}", CAMERA_INFO_TYPE,
                                         lambda m, i=i: self._on_info(i, m), "sensor_data")
                self.create_subscription(f"{cam}/{p.image_topic}", IMAGE_TYPE,
                                         lambda m, i=i: self._on_image(i, m), "sensor_data")
        self.create_subscription(p.points_topic, POINTCLOUD_TYPE, self._on_points, "sensor_data")

    # -- inputs (executor side: caps, decoding, synchronisation)
    def _on_tf(self, msg: Any, static: bool = False) -> None:
        n = self.params.max_string_length
        for tf in msg.transforms:  # frame ids are copied into the buffer and logs: capped like every string
            check_string_length("TF frame_id", tf.header.frame_id, n)
            check_string_length("TF child_frame_id", tf.child_frame_id, n)
        try:
            self.tf.add_message(msg, static=static)  # a malformed transform raises after the good ones are kept
        finally:
            self._try_submit()

    def _on_tf_static(self, msg: Any) -> None:
        self._on_tf(msg, static=True)

    def _on_points(self, msg: Any) -> None:
        p: UniLIONDetectionParams = self.params
        pts = LidarDetectionNodeCore.cloud_array(msg, p.max_points, max_fields=p.max_fields,
                                                 max_string_length=p.max_string_length)
        fr = self._slot(msgs.stamp_ns(msg))
        fr.points, fr.lidar_frame = pts, str(msg.header.frame_id)
        self._check_complete(msgs.stamp_ns(msg))

    def _on_image(self, i: int, msg: Any) -> None:
        p: UniLIONDetectionParams = self.params
        check_string_length("frame_id", msg.header.frame_id, p.max_string_length)
        check_string_length("encoding", msg.encoding, p.max_string_length)
        h, w = int(msg.height), int(msg.width)
        if (h, w) != self.image_hw:  # checked on the header: a wrong-size image costs no decoding
            raise msgs.MessageValueError(f"camera {p.cameras[i]}: image {w}×{h} is not the model's "
                                         f"{self.image_hw[1]}×{self.image_hw[0]}")
        if not str(msg.header.frame_id):
            raise msgs.MessageValueError(f"camera {p.cameras[i]}: image without a frame id (TF needs it)")
        img = msgs.msg_to_image(msg, want="rgb8")
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise msgs.MessageValueError(f"camera {p.cameras[i]}: needs colour or grey 8/16-bit images, got "
                                         f"{msg.encoding} {img.shape}")
        stamp = msgs.stamp_ns(msg)
        fr = self._slot(stamp)
        fr.images[i], fr.image_frames[i] = img, str(msg.header.frame_id)
        self._check_complete(stamp)

    def _on_info(self, i: int, msg: Any) -> None:
        p: UniLIONDetectionParams = self.params
        check_string_length("frame_id", msg.header.frame_id, p.max_string_length)
        if (int(msg.height), int(msg.width)) != self.image_hw:
            raise msgs.MessageValueError(f"camera {p.cameras[i]}: camera_info for {msg.width}×{msg.height} images, "
                                         f"the model takes {self.image_hw[1]}×{self.image_hw[0]}")
        pm = np.asarray(msg.p, dtype=np.float64).reshape(-1)
        km = np.asarray(msg.k, dtype=np.float64).reshape(-1)
        if pm.size != 12 or km.size != 9:
            raise msgs.MessageValueError(f"camera {p.cameras[i]}: camera_info K/P have {km.size}/{pm.size} values")
        # rectified images have the intrinsics of P (as the stereo node); K when P is unset
        k = pm.reshape(3, 4)[:, :3].copy() if pm[0] != 0 else km.reshape(3, 3).copy()
        if not np.isfinite(k).all() or k[0, 0] <= 0 or k[1, 1] <= 0 or k[2, 2] != 1 or k[1, 0] or k[2, 0] or k[2, 1]:
            raise msgs.MessageValueError(f"camera {p.cameras[i]}: camera_info has no valid pinhole matrix "
                                         f"{k.round(3).tolist()}")
        k[0, 2] += PIXEL_CENTRE_SHIFT
        k[1, 2] += PIXEL_CENTRE_SHIFT
        stamp = msgs.stamp_ns(msg)
        self._slot(stamp).intrinsics[i] = k
        self._check_complete(stamp)

    def _slot(self, stamp: int) -> _Frame:
        fr = self._sync.get(stamp)
        if fr is not None:
            return fr
        if len(self._sync) >= self.params.sync_queue_size:
            old, dropped = self._sync.popitem(last=False)  # the oldest incomplete stamp
            self.warn("sync_unmatched", "dropped the frame at %.3f s: still missing %s after %d newer stamps",
                      old / 1e9, ", ".join(dropped.missing()), self.params.sync_queue_size)
        n = len(self.params.cameras) if self.camera_mode else 0
        fr = _Frame(images=[None] * n, image_frames=[""] * n, intrinsics=[None] * n)
        self._sync[stamp] = fr
        return fr

    def _check_complete(self, stamp: int) -> None:
        fr = self._sync[stamp]
        if fr.missing():
            return
        del self._sync[stamp]
        for old in [s for s in self._sync if s < stamp]:  # can no longer be processed in order
            dropped = self._sync.pop(old)
            self.warn("sync_stale", "dropped the frame at %.3f s: the frame at %.3f s completed first (missing %s)",
                      old / 1e9, stamp / 1e9, ", ".join(dropped.missing()))
        if self._waiting is not None:
            self.warn("tf_missing", "dropped the frame at %.3f s: no TF for it before the next frame completed (%s)",
                      self._waiting[0] / 1e9, self._tf_error)
        self._waiting = (stamp, fr)
        self._try_submit()

    def _lookup(self, target: str, source: str, stamp: int) -> np.ndarray:
        return self.tf.lookup(target, source, stamp)

    def _try_submit(self) -> None:
        """Submits the complete frame once its transforms are in the buffer (else it waits for the next /tf)."""
        if self._waiting is None:
            return
        stamp, fr = self._waiting
        p: UniLIONDetectionParams = self.params
        try:
            base_lidar = self._lookup(p.base_frame, fr.lidar_frame or p.base_frame, stamp)
            cam2ego = (np.stack([self._lookup(p.base_frame, f, stamp) for f in fr.image_frames])
                       if self.camera_mode else None)
            ego_pose = self._lookup(p.odom_frame, p.base_frame, stamp) if self.temporal else None
        except TFLookupError as exc:
            self._tf_error = str(exc)
            return
        self._waiting = None
        for m in (base_lidar, cam2ego, ego_pose):  # finite edges can still chain to inf (|t| near 1e308)
            if m is not None and not np.isfinite(m).all():
                raise msgs.MessageValueError(f"the transforms of the frame at {stamp / 1e9:.3f} s are not finite")
        pts = fr.points
        if not np.array_equal(base_lidar, np.eye(4)):  # the identity mount (simulated rig): no arithmetic at all
            xyz = pts[:, :3].astype(np.float64) @ base_lidar[:3, :3].T + base_lidar[:3, 3]
            pts = np.concatenate([xyz.astype(np.float32), pts[:, 3:]], 1)
        images = np.stack(fr.images) if self.camera_mode else None  # type: ignore[arg-type]
        intr = np.stack(fr.intrinsics) if self.camera_mode else None  # type: ignore[arg-type]
        self.submit((stamp, pts, images, intr, cam2ego, ego_pose))

    def stats(self) -> dict[str, Any]:
        st = super().stats()
        st["counters"].update({k: v for k, v in (("memory_reset", self.memory_resets),
                                                 ("duplicate_frame", self.duplicate_frames)) if v})
        st["frames"] = self.frames
        return st

    # -- inference (worker side, or the callback in synchronous mode)
    def _scene_inputs(self, stamp: int, ego_pose: np.ndarray) -> tuple[float, np.ndarray]:
        """Memory reset rules, then (time since the scene start in s, pose relative to the scene start)."""
        if self._scene_start is not None:
            last = self._last[0] if self._last is not None else self._scene_start[0]
            if stamp < last or stamp - last > self.max_seq_ns:
                self.memory_resets += 1
                self.memory, self._scene_start = None, None
                self.scene_id += 1
        if self._scene_start is None:
            self._scene_start = (stamp, ego_pose)
        t0, pose0 = self._scene_start
        with np.errstate(over="ignore", invalid="ignore"):
            rel = _rigid_inverse(pose0) @ ego_pose
        if not np.isfinite(rel).all():
            raise msgs.MessageValueError(f"ego pose at {stamp / 1e9:.3f} s is not finite relative to the scene start")
        return (stamp - t0) / 1e9, rel

    def model_inputs(self, stamp: int, points: np.ndarray, images: np.ndarray | None, intrinsics: np.ndarray | None,
                     cam2ego: np.ndarray | None, ego_pose: np.ndarray | None) -> dict[str, Any]:
        """The model's keyword inputs for one frame (updates the scene bookkeeping in T modes)."""
        kw: dict[str, Any] = {}
        if images is not None:
            kw.update(images=[images], intrinsics=[intrinsics], cam2ego=[cam2ego])
        if self.temporal:
            t, pose = self._scene_inputs(stamp, ego_pose)  # type: ignore[arg-type]
            kw.update(ego_pose=[pose], time_s=[t], scene_id=[self.scene_id])
        return self.model.processor([points], **kw)

    def _infer_and_publish(self, job: tuple[Any, ...]) -> None:
        stamp = job[0]
        if self._last is not None and self._last[0] == stamp:  # a re-sent frame: the same answer, memory untouched
            self.duplicate_frames += 1
            for pub, m in self._last[1]:
                pub.publish(m)
            return
        inputs = self.model_inputs(*job)
        with self._torch.inference_mode():
            out, new_memory = self.model(mode=self.params.mode, memory=self.memory, **inputs)
        if self.temporal:
            self.memory = new_memory
        det = self.model.processor.postprocess(out)[0]
        self._publish(stamp, det)

    def _publish(self, stamp: int, det: dict[str, np.ndarray]) -> None:
        p: UniLIONDetectionParams = self.params
        d = self.transport.distro
        out: list[tuple[Any, Any]] = []
        seg, occ = det["seg"], det["occ"]
        maps = {"segmentation": lambda: seg[self.seg_index].max(0), "occupancy": lambda: occ.max(0),
                "drivable": lambda: seg[self.drivable_index]}
        for key, pub in self.grid_pubs.items():
            out.append((pub, probability_grid(maps[key](), self.cell_m, self.grid_origin, stamp, p.base_frame, d)))
        keep = det["scores"] >= p.score_threshold
        labels = [self.class_names[int(k)] for k in det["labels"][keep]]
        out.append((self.pub, msgs.detection3d_array(det["boxes"][keep], det["scores"][keep].tolist(), labels,
                                                     stamp=stamp, frame_id=p.base_frame, distro=d)))
        for pub, m in out:  # detections last: the lockstep answer comes after the maps
            pub.publish(m)
        self._last = (stamp, out)
        self.frames += 1
