"""Stereo depth node core: rectified left/right images + camera info in → depth and disparity out.

Inputs (SensorDataQoS): ``left/image_rect``, ``right/image_rect`` (rgb8/bgr8, same size),
``left/camera_info`` (focal length), ``right/camera_info`` (baseline from ``P[0,3] = −f·B``, the
ROS stereo convention; or the ``baseline_m`` parameter). Left and right are paired by header
stamp within ``sync_tolerance_s`` (approximate-time sync). Outputs: ``depth``
(sensor_msgs/Image 32FC1, metres, NaN where the disparity is not positive) and ``disparity``
(stereo_msgs/DisparityImage). Images whose size is not a multiple of 16 are edge-padded and the
result cropped back. A malformed message is logged, counted and dropped; the node keeps running.

Input caps (parameters, checked on the message fields before the image is decoded or the model
runs; a refused image is a counted ``invalid_message``): ``min_width`` × ``min_height`` (default
32 × 16; the model needs a padded width >= 32, a width-16 pair makes it raise) up to ``max_width``
× ``max_height`` (default 1024 × 1024: a 2048² pair takes ~68 s and 3.8 GB on a CPU and would block
the executor), and ``max_string_length`` (default 256) for frame ids and encodings.

Real camera drivers (issue 16): images may be ``rgb8``, ``bgr8``, ``rgba8``/``bgra8``, ``mono8`` or ``mono16``
(grey becomes three equal channels, 16-bit scaled by 255/65535 as cv_bridge does), left and right in different
encodings. ``compressed: true`` subscribes to image_transport's ``<left_topic>/compressed`` and
``<right_topic>/compressed`` (sensor_msgs/CompressedImage, JPEG or PNG; the size caps are checked on the image
header before the pixels are decoded) instead of the raw topics. The focal length is ``P[0]`` of the left
camera_info (``K[0]`` when P is unset): for rectified images (``image_rect``, the default) the calibration's
distortion ``D`` describes the raw camera and is not applied again, as in ROS's image_proc. ``rectify: true``
takes raw images (point ``left_topic``/``right_topic`` at ``image_raw``) and rectifies them with OpenCV remap
tables built from each camera_info's K, D, R, P (plumb_bob, rational_polynomial, equidistant; any other model,
binning or a region of interest is refused with a MessageValueError, not run distorted); a pair waits for both
camera_infos, and an image whose size differs from its camera_info is refused.

Threading (``async_inference``, default true): the callbacks on the executor check the caps, decode the
images and pair them; the model runs and depth/disparity are published on the node's worker thread
(:class:`~latentstack.nodes.worker.LatestFrameWorker`), so a slow pair never blocks the other nodes of the
executor. A pair that forms while the previous one is still running replaces any pair waiting behind it
(``frames_dropped_busy``). ``async_inference: false`` runs the model in the callback (deterministic tests,
offline runs); the outputs for the same pairs are the same.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from latentstack import msgs

from .base import NodeParams, available_device, check, check_device_param, check_finite, check_string_length
from .interfaces import CAMERA_INFO_TYPE, IMAGE_TYPE
from .worker import PerceptionNodeCore

__all__ = ["DISPARITY_TYPE", "StereoDepthNodeCore", "StereoDepthParams"]

DISPARITY_TYPE = "stereo_msgs/msg/DisparityImage"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
MDE_INIT = ("mono", "zero")
# Smallest inputs accepted: the width is padded to a multiple of 16 and the 1/16-scale correlation needs
# >= 2 columns (width 16 raises "Output size is too small" in both shipped models, 17 runs). The shipped
# models run down to 1 row; 16 rows is the node's long-standing minimum and kept.
FLOAT32_MAX = float(np.finfo(np.float32).max)
MODEL_MIN_WIDTH = 17
MODEL_MIN_HEIGHT = 16


@dataclass(frozen=True)
class StereoDepthParams(NodeParams):
    model: str = "policies/stereo_sa2_tiny"
    left_topic: str = "left/image_rect"
    right_topic: str = "right/image_rect"
    left_info_topic: str = "left/camera_info"
    right_info_topic: str = "right/camera_info"
    depth_topic: str = "depth"
    disparity_topic: str = "disparity"
    iters: int = 8
    mde_init: str = "mono"  # mono (the model's monocular prior) | zero (RAFT-Stereo start)
    baseline_m: float = 0.0  # 0: read it from the right camera_info
    sync_tolerance_s: float = 0.005
    min_depth_m: float = 0.1
    max_depth_m: float = 50.0
    torch_threads: int = 1
    device: str = "cpu"  # where the model runs: cpu | cuda | cuda:N | mps (checked when the node starts)
    min_width: int = 32  # input caps (pixels), checked before decoding: smaller/larger pairs are refused
    min_height: int = 16
    max_width: int = 1024
    max_height: int = 1024
    max_string_length: int = 256  # frame_id / encoding
    async_inference: bool = True  # run the model on the node's worker thread (false: in the callback)
    compressed: bool = False  # subscribe to <left_topic>/compressed, <right_topic>/compressed (CompressedImage)
    rectify: bool = False  # raw images: undistort + rectify with the camera_infos' K, D, R, P (OpenCV remap)

    def __post_init__(self) -> None:
        check(bool(self.model), "parameter 'model' must name a stereo checkpoint directory")
        check(self.min_width >= MODEL_MIN_WIDTH, f"min_width must be >= {MODEL_MIN_WIDTH} (model minimum), "
                                                 f"got {self.min_width}")
        check(self.min_height >= MODEL_MIN_HEIGHT, f"min_height must be >= {MODEL_MIN_HEIGHT} (model minimum), "
                                                   f"got {self.min_height}")
        check(self.max_width >= self.min_width, f"need max_width >= min_width, got {self.max_width}")
        check(self.max_height >= self.min_height, f"need max_height >= min_height, got {self.max_height}")
        check(self.max_string_length >= 1, f"max_string_length must be >= 1, got {self.max_string_length}")
        check(self.iters >= 1, f"iters must be >= 1, got {self.iters}")
        check(self.mde_init in MDE_INIT, f"mde_init must be one of {MDE_INIT}, got {self.mde_init!r}")
        for name in ("baseline_m", "sync_tolerance_s", "min_depth_m", "max_depth_m"):
            check_finite(name, getattr(self, name))
        check(self.baseline_m >= 0, f"baseline_m must be >= 0, got {self.baseline_m}")
        check(0 < self.min_depth_m < self.max_depth_m, "need 0 < min_depth_m < max_depth_m")
        check(self.torch_threads >= 1, f"torch_threads must be >= 1, got {self.torch_threads}")
        check_device_param(self.device)


class StereoDepthNodeCore(PerceptionNodeCore):
    default_name: ClassVar[str] = "stereo_depth"
    Params: ClassVar[type] = StereoDepthParams

    def __init__(self, transport: Any, params: StereoDepthParams | None = None, *, model: Any = None,
                 name: str | None = None, namespace: str = "/") -> None:
        super().__init__(transport, params, name=name, namespace=namespace)
        p: StereoDepthParams = self.params
        import torch

        torch.set_num_threads(p.torch_threads)
        try:
            if model is None:
                from latentstack.nodes.policy_node import resolve_policy_path
                from latentstack.perception.stereo.model import load_stereo_model

                model = load_stereo_model(resolve_policy_path(p.model), device=available_device(p.device))
            self.model = model.eval()
        except BaseException:
            self.close()
            raise
        self._torch = torch
        self._left: tuple[int, np.ndarray] | None = None
        self._right: tuple[int, np.ndarray] | None = None
        self._focal: float | None = None
        self._baseline: float | None = p.baseline_m or None
        self._done_stamp: int | None = None
        self._maps: dict[str, tuple[tuple[int, int], np.ndarray, np.ndarray] | None] = {"left": None, "right": None}
        self.frames = 0  # pairs run and published (written by the worker thread only)
        self.start_worker(self._run_and_publish, threaded=p.async_inference)
        self.depth_pub = self.create_publisher(p.depth_topic, IMAGE_TYPE, "sensor_data")
        self.disp_pub = self.create_publisher(p.disparity_topic, DISPARITY_TYPE, "sensor_data")
        if p.compressed:  # image_transport's naming: <base topic>/compressed
            self.create_subscription(f"{p.left_topic}/compressed", COMPRESSED_TYPE, self._on_left, "sensor_data")
            self.create_subscription(f"{p.right_topic}/compressed", COMPRESSED_TYPE, self._on_right, "sensor_data")
        else:
            self.create_subscription(p.left_topic, IMAGE_TYPE, self._on_left, "sensor_data")
            self.create_subscription(p.right_topic, IMAGE_TYPE, self._on_right, "sensor_data")
        self.create_subscription(p.left_info_topic, CAMERA_INFO_TYPE, self._on_left_info, "sensor_data")
        self.create_subscription(p.right_info_topic, CAMERA_INFO_TYPE, self._on_right_info, "sensor_data")

    # -- inputs
    def _check_caps(self, msg: Any) -> None:
        """Documented input caps, on the header fields only (before any decoding or inference)."""
        p: StereoDepthParams = self.params
        check_string_length("frame_id", msg.header.frame_id, p.max_string_length)
        h, w = int(msg.height), int(msg.width)
        if not (p.min_width <= w <= p.max_width and p.min_height <= h <= p.max_height):
            raise msgs.MessageValueError(
                f"image {w}×{h} outside the size caps {p.min_width}×{p.min_height} .. {p.max_width}×{p.max_height}")

    def _check_size(self, w: int, h: int) -> None:
        p: StereoDepthParams = self.params
        if not (p.min_width <= w <= p.max_width and p.min_height <= h <= p.max_height):
            raise msgs.MessageValueError(
                f"image {w}×{h} outside the size caps {p.min_width}×{p.min_height} .. {p.max_width}×{p.max_height}")

    def _rgb(self, msg: Any) -> np.ndarray:
        if self.params.compressed:
            check_string_length("frame_id", msg.header.frame_id, self.params.max_string_length)
            check_string_length("format", msg.format, self.params.max_string_length)
            return msgs.compressed_image_to_numpy(msg, check_size=self._check_size)
        self._check_caps(msg)
        check_string_length("encoding", msg.encoding, self.params.max_string_length)
        img = msgs.msg_to_image(msg, want="rgb8")
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise msgs.MessageValueError(f"stereo needs colour or grey 8/16-bit images, got {msg.encoding} "
                                         f"{img.shape}")
        return img

    def _on_left(self, msg: Any) -> None:
        self._left = (msgs.stamp_ns(msg), self._rgb(msg))
        self._maybe_run()

    def _on_right(self, msg: Any) -> None:
        self._right = (msgs.stamp_ns(msg), self._rgb(msg))
        self._maybe_run()

    def _on_left_info(self, msg: Any) -> None:
        check_string_length("frame_id", msg.header.frame_id, self.params.max_string_length)
        self._update_maps("left", msg)
        # rectified images have the intrinsics of P (equal to K for the simulated cameras); K when P is unset
        p = np.asarray(msg.p, dtype=np.float64)
        f = float(p[0]) if p.size == 12 and p[0] != 0 else float(np.asarray(msg.k)[0])
        if not np.isfinite(f) or f <= 0:
            raise msgs.MessageValueError(f"left camera_info has a non-positive focal length {f}")
        self._focal = f
        self._maybe_run()

    def _on_right_info(self, msg: Any) -> None:
        if self.params.rectify:
            check_string_length("frame_id", msg.header.frame_id, self.params.max_string_length)
            self._update_maps("right", msg)
        if self.params.baseline_m > 0:
            if self.params.rectify:
                self._maybe_run()
            return
        check_string_length("frame_id", msg.header.frame_id, self.params.max_string_length)
        p = np.asarray(msg.p, dtype=np.float64)
        if p.size != 12 or p[0] <= 0:
            raise msgs.MessageValueError("right camera_info has no valid projection matrix P")
        b = -p[3] / p[0]
        if not np.isfinite(b) or b <= 0:
            raise msgs.MessageValueError(f"right camera_info P[0,3] = {p[3]} gives no positive baseline")
        self._baseline = float(b)
        self._maybe_run()

    def _update_maps(self, side: str, msg: Any) -> None:
        """rectify mode: remap tables from this camera_info (rebuilt only when the calibration changes)."""
        if not self.params.rectify:
            return
        key = (int(msg.width), int(msg.height), str(msg.distortion_model), *np.asarray(msg.d).tolist(),
               *np.asarray(msg.k).tolist(), *np.asarray(msg.r).tolist(), *np.asarray(msg.p).tolist())
        cached = self._maps[side]
        if cached is not None and cached[0] == key:
            return
        self._maps[side] = None  # a refused calibration must not leave the previous tables in use
        self._check_size(int(msg.width), int(msg.height))
        mx, my = msgs.rectification_maps(msg)
        self._maps[side] = (key, mx, my)

    def _rectified(self, side: str, img: np.ndarray) -> np.ndarray:
        import cv2

        _key, mx, my = self._maps[side]
        if img.shape[:2] != mx.shape:
            raise msgs.MessageValueError(f"{side} image {img.shape[1]}×{img.shape[0]} differs from its camera_info "
                                         f"{mx.shape[1]}×{mx.shape[0]}")
        return cv2.remap(img, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)

    # -- inference
    def _maybe_run(self) -> None:
        if self._left is None or self._right is None or self._focal is None or self._baseline is None:
            return
        if self.params.rectify and (self._maps["left"] is None or self._maps["right"] is None):
            return
        (ts_l, left), (ts_r, right) = self._left, self._right
        if abs(ts_l - ts_r) > int(self.params.sync_tolerance_s * 1e9):
            return
        if ts_l == self._done_stamp:
            return
        if left.shape != right.shape:
            self._done_stamp = ts_l
            raise msgs.MessageValueError(f"left {left.shape} and right {right.shape} images differ in size")
        self._done_stamp = ts_l
        # DisparityImage carries f, t and the disparity range as float32: a calibration beyond it would fail to
        # encode after the depth image went out (a half-published pair); refused here, before the model runs
        fb = self._focal * self._baseline
        if not max(self._focal, self._baseline, fb / self.params.min_depth_m) <= FLOAT32_MAX:
            raise msgs.MessageValueError(f"focal length {self._focal} x baseline {self._baseline} m is outside "
                                         "the float32 range of a DisparityImage")
        if self.params.rectify:
            left, right = self._rectified("left", left), self._rectified("right", right)
        # the calibration goes with the pair: a camera_info arriving while the worker runs cannot mix in
        self.submit((ts_l, left, right, self._focal, self._baseline))

    def _run_and_publish(self, job: tuple[int, np.ndarray, np.ndarray, float, float]) -> None:
        """Worker side (or the callback in synchronous mode): the model, then depth and disparity."""
        stamp, left, right, focal, baseline = job
        disp = self.infer(left, right, focal * baseline)
        self._publish(stamp, disp, focal, baseline)

    def infer(self, left: np.ndarray, right: np.ndarray, focal_baseline: float) -> np.ndarray:
        """(H, W) float32 disparity for one uint8 RGB pair."""
        from latentstack.perception.stereo.processor_stereo import StereoProcessor, model_device

        # the processor pads/converts on the host and puts the inputs where the model's weights are
        proc = StereoProcessor(device=model_device(self.model))
        inputs = proc(left, right, focal_baseline, zero_init=self.params.mde_init == "zero")
        with self._torch.inference_mode():
            out = self.model(**inputs, iters=self.params.iters)
        return proc.postprocess(out, left.shape[:2])

    def _publish(self, stamp: int, disp: np.ndarray, focal: float, baseline: float) -> None:
        p: StereoDepthParams = self.params
        fb = focal * baseline
        with np.errstate(divide="ignore", invalid="ignore"):
            depth = np.where(disp > 0, fb / disp, np.nan).astype(np.float32)
        depth = np.where((depth >= p.min_depth_m) & (depth <= p.max_depth_m), depth, np.nan).astype(np.float32)
        distro = self.transport.distro
        depth_msg = msgs.image_to_msg(depth, "32FC1", stamp=stamp, distro=distro)
        h, w = disp.shape
        roi = msgs.new("sensor_msgs/msg/RegionOfInterest", distro, x_offset=0, y_offset=0, height=h, width=w,
                       do_rectify=False)
        dmsg = msgs.new(DISPARITY_TYPE, distro, header=msgs.header(stamp, "", distro),
                        image=msgs.image_to_msg(disp, "32FC1", stamp=stamp, distro=distro), f=float(focal),
                        t=float(baseline), valid_window=roi, min_disparity=float(fb / p.max_depth_m),
                        max_disparity=float(fb / p.min_depth_m), delta_d=0.0)
        # both encoded before either is sent: a pair is published whole or not at all
        depth_cdr = msgs.encode(depth_msg, IMAGE_TYPE, distro)
        disp_cdr = msgs.encode(dmsg, DISPARITY_TYPE, distro)
        self.depth_pub.publish_raw(depth_cdr)
        self.disp_pub.publish_raw(disp_cdr)
        self.frames += 1


