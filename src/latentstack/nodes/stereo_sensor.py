"""Simulated stereo camera node core (graph kind ``stereo_scene``): rectified underwater pairs from MuJoCo.

Frame ``k`` is scene seed ``seed + k`` of :class:`latentstack.sim.stereo_scenes.StereoRenderer` (default: the
first test-split seeds, never trained on), rendered at ``height`` × ``width`` and turned underwater at
``turbidity`` exactly as ``lstack stereo eval`` does (:func:`underwater_pair`: the same β, B∞ and sensor noise
from a generator seeded by (scene seed, turbidity)), so the node's pixels equal the evaluation's for the
same seeds. Focal length and baseline are stored as float32, as in the rendered splits.

Outputs per frame (one header stamp ``k · dt_s``; SensorDataQoS except the ground truth):

==============================  ==================================  ==========================================
topic (relative)                type                                content
==============================  ==================================  ==========================================
``left/camera_info``            sensor_msgs/msg/CameraInfo          pinhole, no distortion, frame ``left_frame_id``
``right/camera_info``           sensor_msgs/msg/CameraInfo          same, ``P[0,3] = −f·B`` (ROS stereo convention)
``left/image_rect``             sensor_msgs/msg/Image rgb8          rectified left image
``right/image_rect``            sensor_msgs/msg/Image rgb8          rectified right image
``ground_truth/disparity``      stereo_msgs/msg/DisparityImage      exact disparity ``f·B / Z`` of the left view
==============================  ==================================  ==========================================

Camera infos go out before the images (the depth node pairs an image with the newest camera info). Frame
scheduling (lockstep on the depth node's ``disparity`` / free-running at ``rate_hz``, ``frames``):
:class:`~.sensor_stream.SensorStreamCore`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from latentstack import msgs

from .base import NodeParams, check, check_finite
from .interfaces import CAMERA_INFO_TYPE, IMAGE_TYPE
from .sensor_stream import SensorStreamCore, check_stream_params
from .stereo_depth import DISPARITY_TYPE

__all__ = ["StereoFrame", "StereoSceneCore", "StereoSceneParams", "underwater_pair"]

EVAL_NOISE_TAG = 0xE7A1  # the evaluation's noise stream tag (perception/stereo/data.py eval_pair)


@dataclass(frozen=True)
class StereoSceneParams(NodeParams):
    seed: int = 300_000  # first scene seed (stereo test split); frame k is scene seed + k
    frames: int = 10
    turbidity: float = 1.0  # k of the attenuation/backscatter model (0 = clear water)
    height: int = 64  # render size (the shipped models were trained at 64 x 128)
    width: int = 128
    dt_s: float = 0.1  # sim time between pairs; stamps are k * dt_s
    lockstep: bool = True
    rate_hz: float = 10.0
    republish_s: float = 2.0
    drain_s: float = 2.0
    publish_clock: bool = True  # /clock = the frame's sim time (k * dt_s), before each frame
    left_topic: str = "left/image_rect"
    right_topic: str = "right/image_rect"
    left_info_topic: str = "left/camera_info"
    right_info_topic: str = "right/camera_info"
    ground_truth_topic: str = "ground_truth/disparity"
    answer_topic: str = "disparity"  # lockstep: the depth node's DisparityImage
    left_frame_id: str = "stereo_left"
    right_frame_id: str = "stereo_right"
    base_frame: str = "base_link"  # /tf_static: base_frame -> left; /tf per frame: left -> right (the baseline)

    def __post_init__(self) -> None:
        check_stream_params(self)
        check(self.seed >= 0, f"seed must be >= 0, got {self.seed}")
        check_finite("turbidity", self.turbidity)
        check(self.turbidity >= 0, f"turbidity must be >= 0, got {self.turbidity}")
        check(16 <= self.height <= 1024 and 16 <= self.width <= 1024, "height and width must be in [16, 1024]")
        check(bool(self.left_frame_id) and bool(self.right_frame_id), "frame ids must not be empty")


@dataclass
class StereoFrame:
    left: np.ndarray  # (H, W, 3) uint8, underwater
    right: np.ndarray
    disparity: np.ndarray  # (H, W) float32, exact (left view)
    focal: float  # float32 values, as stored in a rendered split
    baseline: float
    seed: int


def underwater_pair(clean_left: np.ndarray, clean_right: np.ndarray, depth_left: np.ndarray,
                    depth_right: np.ndarray, focal: float, seed: int, turbidity: float) -> tuple[np.ndarray, np.ndarray]:
    """The evaluation's underwater (left, right) uint8 pair of clean uint8 renders (``StereoSplit.eval_pair``)."""
    from latentstack.sim.stereo_scenes import BACKSCATTER, BETA, underwater

    rng = np.random.default_rng([int(seed), round(turbidity * 1000), EVAL_NOISE_TAG])
    lc = clean_left.astype(np.float32) / 255.0
    rc = clean_right.astype(np.float32) / 255.0
    left = underwater(lc, depth_left, focal, turbidity, rng, beta=BETA, backscatter=BACKSCATTER, noise_std=0.01)
    right = underwater(rc, depth_right, focal, turbidity, rng, beta=BETA, backscatter=BACKSCATTER, noise_std=0.01)
    return left, right


class StereoSceneCore(SensorStreamCore):
    default_name: ClassVar[str] = "stereo_scene"
    Params: ClassVar[type] = StereoSceneParams
    answer_type: ClassVar[str] = DISPARITY_TYPE

    def __init__(self, transport: Any, params: StereoSceneParams | None = None, *, name: str | None = None,
                 namespace: str = "/") -> None:
        super().__init__(transport, params, name=name, namespace=namespace)
        p: StereoSceneParams = self.params
        self._renderer: Any = None
        self.left_info_pub = self.create_publisher(p.left_info_topic, CAMERA_INFO_TYPE, "sensor_data")
        self.right_info_pub = self.create_publisher(p.right_info_topic, CAMERA_INFO_TYPE, "sensor_data")
        self.left_pub = self.create_publisher(p.left_topic, IMAGE_TYPE, "sensor_data")
        self.right_pub = self.create_publisher(p.right_topic, IMAGE_TYPE, "sensor_data")
        self.gt_pub = self.create_publisher(p.ground_truth_topic, DISPARITY_TYPE, "default")
        self.setup_stream()
        self.publish_static_frames([(p.base_frame, p.left_frame_id, (0.0, 0.0, 0.0))])

    def frame(self, k: int) -> StereoFrame:
        """Frame ``k``: scene seed ``seed + k`` rendered, quantised like a split, made underwater."""
        import os

        from latentstack.sim.stereo_scenes import StereoRenderer, StereoSceneConfig, disparity_from_depth

        p: StereoSceneParams = self.params
        if self._renderer is None:
            os.environ.setdefault("MUJOCO_GL", "egl")
            self._renderer = StereoRenderer(StereoSceneConfig(height=p.height, width=p.width))
        seed = p.seed + k
        smp = self._renderer.render(seed)
        # what generate_split stores (uint8 clean, float32 depth/focal/baseline) and StereoSplit.load derives
        cl, cr = ((a * 255 + 0.5).astype(np.uint8) for a in (smp.left, smp.right))
        dl, dr = smp.depth_left.astype(np.float32), smp.depth_right.astype(np.float32)
        f32, b32 = np.float32(smp.focal_px), np.float32(smp.baseline_m)
        left, right = underwater_pair(cl, cr, dl, dr, float(f32), seed, p.turbidity)
        disp = disparity_from_depth(dl, 1.0, f32 * b32)
        return StereoFrame(left, right, disp, float(f32), float(b32), seed)

    def publish_frame(self, k: int, stamp_ns: int) -> None:
        p: StereoSceneParams = self.params
        fr = self.frame(k)
        d = self.transport.distro
        h, w = fr.left.shape[:2]
        cx, cy = (w - 1) / 2, (h - 1) / 2  # the renderer's principal point (image centre)
        left_info = msgs.camera_info(w, h, fr.focal, fr.focal, cx, cy, stamp_ns, p.left_frame_id, d)
        right_info = msgs.camera_info(w, h, fr.focal, fr.focal, cx, cy, stamp_ns, p.right_frame_id, d)
        right_info.p[3] = -fr.focal * fr.baseline  # exact in float64: both factors are float32 values
        self.left_info_pub.publish(left_info)
        self.right_info_pub.publish(right_info)
        # optical frames: the right camera sits baseline metres along the left one's x axis (this scene's rig)
        self.publish_frame_tf(p.left_frame_id, p.right_frame_id, stamp_ns, (float(fr.baseline), 0.0, 0.0))
        self.left_pub.publish(msgs.image_to_msg(fr.left, "rgb8", stamp_ns, p.left_frame_id, d))
        self.right_pub.publish(msgs.image_to_msg(fr.right, "rgb8", stamp_ns, p.right_frame_id, d))
        roi = msgs.new("sensor_msgs/msg/RegionOfInterest", d, x_offset=0, y_offset=0, height=h, width=w,
                       do_rectify=False)
        valid = fr.disparity[np.isfinite(fr.disparity)]
        gt = msgs.new(DISPARITY_TYPE, d, header=msgs.header(stamp_ns, p.left_frame_id, d),
                      image=msgs.image_to_msg(fr.disparity, "32FC1", stamp_ns, p.left_frame_id, d), f=fr.focal,
                      t=fr.baseline, valid_window=roi, min_disparity=float(valid.min()) if valid.size else 0.0,
                      max_disparity=float(valid.max()) if valid.size else 0.0, delta_d=0.0)
        self.gt_pub.publish(gt)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        super().close()
