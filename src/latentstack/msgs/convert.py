"""Numpy <-> ROS 2 message converters for the types the nodes exchange.

Every ``*_to_*`` reader validates what came off the wire (sizes, encodings, finiteness) and
raises :class:`~latentstack.msgs.errors.MessageValueError`, so a node can log one clear line
and keep running instead of crashing on a bad peer.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .errors import MessageValueError
from .typestore import new

__all__ = [
    "IMAGE_ENCODINGS",
    "camera_info",
    "camera_info_from_fovy",
    "compressed_image_to_numpy",
    "detection3d_array",
    "detection3d_array_to_numpy",
    "float32_array",
    "float32_array_values",
    "header",
    "image_to_msg",
    "joint_state",
    "joint_state_positions",
    "msg_to_image",
    "ns_to_time",
    "pointcloud2_from_numpy",
    "pointcloud2_to_numpy",
    "rectification_maps",
    "stamp_ns",
    "string_msg",
    "time_to_ns",
    "twist",
    "twist_to_numpy",
]

# encoding -> (dtype, channels)  (sensor_msgs/image_encodings.hpp)
IMAGE_ENCODINGS: dict[str, tuple[str, int]] = {
    "rgb8": ("uint8", 3),
    "bgr8": ("uint8", 3),
    "rgba8": ("uint8", 4),
    "bgra8": ("uint8", 4),
    "mono8": ("uint8", 1),
    "8UC1": ("uint8", 1),
    "8UC3": ("uint8", 3),
    "mono16": ("uint16", 1),
    "16UC1": ("uint16", 1),
    "32FC1": ("float32", 1),
    "32FC3": ("float32", 3),
    "64FC1": ("float64", 1),
}

_NS = 1_000_000_000


# ----------------------------------------------------------------------------- time / header
def ns_to_time(ns: int, distro: str | None = None) -> Any:
    """builtin_interfaces/Time from integer nanoseconds (sec may be negative, nanosec in [0, 1e9))."""
    sec, nsec = divmod(int(ns), _NS)
    if not -(2**31) <= sec < 2**31:
        raise MessageValueError(f"time {ns} ns does not fit builtin_interfaces/Time (int32 seconds)")
    return new("builtin_interfaces/msg/Time", distro, sec=sec, nanosec=nsec)


def time_to_ns(t: Any) -> int:
    return int(t.sec) * _NS + int(t.nanosec)


def header(stamp: int = 0, frame_id: str = "", distro: str | None = None) -> Any:
    """std_msgs/Header; ``stamp`` in integer nanoseconds."""
    return new("std_msgs/msg/Header", distro, stamp=ns_to_time(stamp, distro), frame_id=str(frame_id))


def stamp_ns(msg: Any) -> int:
    """Header stamp of a stamped message, in nanoseconds."""
    return time_to_ns(msg.header.stamp)


# ----------------------------------------------------------------------------- images
def image_to_msg(
    image: np.ndarray, encoding: str | None = None, stamp: int = 0, frame_id: str = "", distro: str | None = None
) -> Any:
    """sensor_msgs/Image from an (H, W) or (H, W, C) array; ``encoding`` defaults from dtype/channels."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3:
        raise MessageValueError(f"image must be (H, W) or (H, W, C), got shape {np.shape(image)}")
    h, w, c = arr.shape
    if encoding is None:
        encoding = {
            ("uint8", 1): "mono8", ("uint8", 3): "rgb8", ("uint8", 4): "rgba8", ("uint16", 1): "mono16",
            ("float32", 1): "32FC1", ("float32", 3): "32FC3", ("float64", 1): "64FC1",
        }.get((arr.dtype.name, c))
        if encoding is None:
            raise MessageValueError(f"no default image encoding for dtype {arr.dtype} with {c} channels")
    if encoding not in IMAGE_ENCODINGS:
        raise MessageValueError(f"unsupported image encoding {encoding!r}; known: {sorted(IMAGE_ENCODINGS)}")
    dtype, channels = IMAGE_ENCODINGS[encoding]
    if arr.dtype != np.dtype(dtype) or c != channels:
        raise MessageValueError(f"encoding {encoding} needs {dtype} x {channels} channels, got {arr.dtype} x {c}")
    data = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False)
    step = w * c * data.dtype.itemsize
    return new(
        "sensor_msgs/msg/Image", distro,
        header=header(stamp, frame_id, distro), height=h, width=w, encoding=encoding, is_bigendian=0,
        step=step, data=np.frombuffer(data.tobytes(), dtype=np.uint8),
    )


def msg_to_image(msg: Any, *, want: str | None = None, copy: bool = True) -> np.ndarray:
    """(H, W, C) array (``(H, W)`` for one channel) from a sensor_msgs/Image, honouring ``step`` padding.

    ``want="rgb8"`` converts bgr8/bgra8/rgba8 to RGB and grey (mono8/8UC1, mono16/16UC1) to three equal
    channels; 16-bit grey is scaled by 255/65535 and rounded (cv_bridge's mono16 -> 8-bit scaling), so a camera
    that uses the full 16-bit range keeps its contrast. Raises MessageValueError on inconsistent fields.
    """
    enc = str(msg.encoding)
    if enc not in IMAGE_ENCODINGS:
        raise MessageValueError(f"unsupported image encoding {enc!r}")
    dtype_name, c = IMAGE_ENCODINGS[enc]
    dt = np.dtype(dtype_name).newbyteorder(">" if msg.is_bigendian else "<")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    row = w * c * dt.itemsize
    data = np.asarray(msg.data, dtype=np.uint8).reshape(-1)
    if h < 0 or w < 0 or step < row:
        raise MessageValueError(f"image step {step} < width*channels*itemsize = {row}")
    if data.size < h * step:
        raise MessageValueError(f"image data has {data.size} bytes, height*step needs {h * step}")
    rows = data[: h * step].reshape(h, step)[:, :row]
    img = np.ascontiguousarray(rows).view(dt).reshape(h, w, c)
    if dt.byteorder == ">":
        img = img.astype(dt.newbyteorder("<"))
    if want is not None and want != enc:
        if want != "rgb8" or enc not in ("bgr8", "bgra8", "rgba8", "8UC3", *_GREY):
            raise MessageValueError(f"cannot convert image encoding {enc} to {want}")
        if enc in _GREY:
            img = _grey_to_rgb8(img[..., 0])
        else:
            img = img[..., [2, 1, 0]] if enc.startswith("bgr") else img[..., :3]
    if copy or not img.flags.writeable:
        img = np.array(img, copy=True)
    return img[..., 0] if img.shape[-1] == 1 else img  # grey converted to rgb8 has three channels


_GREY = ("mono8", "8UC1", "mono16", "16UC1")


def _grey_to_rgb8(grey: np.ndarray) -> np.ndarray:
    """(H, W) uint8/uint16 -> (H, W, 3) uint8 with equal channels (uint16 scaled by 255/65535, rounded)."""
    if grey.dtype == np.uint16:
        grey = np.rint(grey.astype(np.float32) * np.float32(255.0 / 65535.0)).astype(np.uint8)
    return np.repeat(grey.astype(np.uint8, copy=False)[..., None], 3, axis=2)


def compressed_image_to_numpy(msg: Any, *, check_size: Callable[[int, int], None] | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a sensor_msgs/CompressedImage (JPEG or PNG, as image_transport publishes).

    ``format`` may be the bare ``jpeg``/``png`` or image_transport's ``"<encoding>; jpeg compressed <enc>"``;
    the codec is taken from the data's signature (a mislabelled message still decodes; anything but JPEG/PNG is
    refused), ``compressedDepth`` is refused. Grey and 16-bit PNGs become three equal channels (16-bit scaled
    as in :func:`msg_to_image`). ``check_size(width, height)`` runs on the image header before the pixels are
    decoded, so a node's size caps also stop a decompression bomb. Raises MessageValueError.
    """
    fmt = str(msg.format)
    if "compresseddepth" in fmt.lower():
        raise MessageValueError(f"CompressedImage format {fmt!r} (compressedDepth) is not a colour image")
    data = np.asarray(msg.data, dtype=np.uint8).reshape(-1).tobytes()
    if data[:3] == b"\xff\xd8\xff":
        codec = "JPEG"
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        codec = "PNG"
    else:
        raise MessageValueError(f"CompressedImage (format {fmt[:64]!r}, {len(data)} bytes) is neither JPEG nor PNG")
    import io
    import warnings

    from PIL import Image

    # what PIL raises for bad data (UnidentifiedImageError/truncation are OSErrors; bombs their own classes)
    pil_errors = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError,
                  Image.DecompressionBombWarning)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # a bomb is a bad message, not a warning
            im = Image.open(io.BytesIO(data), formats=[codec])
        w, h = im.size
    except pil_errors as exc:
        raise MessageValueError(f"CompressedImage header is not decodable as {codec}: {exc}") from None
    if check_size is not None:
        check_size(w, h)  # before the pixels are decoded
    try:
        im.load()
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(im, dtype=np.uint32 if im.mode == "I" else None)
            return _grey_to_rgb8(np.clip(arr, 0, 65535).astype(np.uint16))
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except pil_errors as exc:
        raise MessageValueError(f"CompressedImage data is not decodable as {codec}: {exc}") from None


def camera_info(
    width: int, height: int, fx: float, fy: float, cx: float, cy: float,
    stamp: int = 0, frame_id: str = "", distro: str | None = None,
) -> Any:
    """Pinhole sensor_msgs/CameraInfo without distortion (plumb_bob, zero D)."""
    k = np.array([fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0])
    p = np.array([fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0])
    return new(
        "sensor_msgs/msg/CameraInfo", distro,
        header=header(stamp, frame_id, distro), height=int(height), width=int(width),
        distortion_model="plumb_bob", d=np.zeros(5), k=k, r=np.eye(3).reshape(-1), p=p,
    )


def camera_info_from_fovy(
    width: int, height: int, fovy_deg: float, stamp: int = 0, frame_id: str = "", distro: str | None = None
) -> Any:
    """CameraInfo of a MuJoCo camera: vertical field of view, square pixels, centred principal point."""
    fy = 0.5 * height / math.tan(math.radians(fovy_deg) / 2)
    return camera_info(width, height, fy, fy, (width - 1) / 2, (height - 1) / 2, stamp, frame_id, distro)


# distortion_model -> accepted D lengths (sensor_msgs/distortion_models.hpp; image_geometry's models)
RECTIFY_MODELS: dict[str, tuple[int, ...]] = {"plumb_bob": (4, 5, 8), "rational_polynomial": (8, 12, 14),
                                              "equidistant": (4,)}


def rectification_maps(msg: Any) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV remap tables (map_x, map_y: (height, width) float32) that undistort and rectify a raw image.

    As image_geometry's PinholeCameraModel: ``cv2.initUndistortRectifyMap(K, D, R, P[:3, :3])`` for plumb_bob and
    rational_polynomial, ``cv2.fisheye.initUndistortRectifyMap`` for equidistant; the rectified image then has the
    intrinsics of ``P``. Binning and a region of interest are refused (not needed by the nodes), as is any other
    distortion model: a MessageValueError naming the supported ones, never a silently distorted depth.
    """
    model = str(msg.distortion_model)
    d = np.asarray(msg.d, dtype=np.float64).reshape(-1)
    k = np.asarray(msg.k, dtype=np.float64).reshape(-1)
    r = np.asarray(msg.r, dtype=np.float64).reshape(-1)
    p = np.asarray(msg.p, dtype=np.float64).reshape(-1)
    w, h = int(msg.width), int(msg.height)
    if model not in RECTIFY_MODELS:
        raise MessageValueError(f"CameraInfo distortion_model {model[:64]!r} cannot be rectified; "
                                f"supported: {sorted(RECTIFY_MODELS)}")
    if d.size not in RECTIFY_MODELS[model]:
        raise MessageValueError(f"CameraInfo {model} needs {RECTIFY_MODELS[model]} distortion coefficients, "
                                f"got {d.size}")
    if k.size != 9 or r.size != 9 or p.size != 12:
        raise MessageValueError(f"CameraInfo K/R/P have {k.size}/{r.size}/{p.size} values, need 9/9/12")
    if not (np.isfinite(d).all() and np.isfinite(k).all() and np.isfinite(r).all() and np.isfinite(p).all()):
        raise MessageValueError("CameraInfo has non-finite calibration values")
    if k[0] <= 0 or k[4] <= 0 or p[0] <= 0 or p[5] <= 0:
        raise MessageValueError(f"CameraInfo focal lengths must be positive (K {k[0]}, {k[4]}; P {p[0]}, {p[5]})")
    if not (1 <= w <= 16384 and 1 <= h <= 16384):
        raise MessageValueError(f"CameraInfo size {w}x{h} outside 1..16384")
    roi = msg.roi
    if int(msg.binning_x) > 1 or int(msg.binning_y) > 1 or (
            int(roi.width) not in (0, w) or int(roi.height) not in (0, h) or int(roi.x_offset) or int(roi.y_offset)):
        raise MessageValueError("CameraInfo with binning or a region of interest is not supported for rectification")
    import cv2

    kk, rr, pp = k.reshape(3, 3), r.reshape(3, 3), p.reshape(3, 4)[:, :3]
    if model == "equidistant":
        mx, my = cv2.fisheye.initUndistortRectifyMap(kk, d, rr, pp, (w, h), cv2.CV_32FC1)
    else:
        mx, my = cv2.initUndistortRectifyMap(kk, d, rr, pp, (w, h), cv2.CV_32FC1)
    return mx, my


# ----------------------------------------------------------------------------- joint state / arrays
def joint_state(
    names: Sequence[str], position: Sequence[float], velocity: Sequence[float] | None = None,
    effort: Sequence[float] | None = None, stamp: int = 0, frame_id: str = "", distro: str | None = None,
) -> Any:
    pos = np.asarray(position, dtype=np.float64).reshape(-1)
    if len(names) != pos.size:
        raise MessageValueError(f"{len(names)} joint names but {pos.size} positions")
    return new(
        "sensor_msgs/msg/JointState", distro, header=header(stamp, frame_id, distro), name=[str(n) for n in names],
        position=pos,
        velocity=np.asarray(velocity if velocity is not None else [], dtype=np.float64).reshape(-1),
        effort=np.asarray(effort if effort is not None else [], dtype=np.float64).reshape(-1),
    )


def joint_state_positions(msg: Any, names: Sequence[str] | None = None) -> np.ndarray:
    """Positions (float64) in the order of ``names`` (message order when None); finite, complete."""
    pos = np.asarray(msg.position, dtype=np.float64)
    msg_names = list(msg.name)
    if msg_names and len(msg_names) != pos.size:
        raise MessageValueError(f"JointState has {len(msg_names)} names but {pos.size} positions")
    if names is not None and list(names) != msg_names:
        index = {n: i for i, n in enumerate(msg_names)}
        missing = [n for n in names if n not in index]
        if missing:
            raise MessageValueError(f"JointState lacks joints {missing} (has {msg_names})")
        pos = pos[[index[n] for n in names]]
    if not np.all(np.isfinite(pos)):
        raise MessageValueError("JointState positions contain NaN/inf")
    return pos.copy()


def joint_state_to_dict(msg: Any) -> dict[str, float]:
    return dict(zip(list(msg.name), joint_state_positions(msg).tolist(), strict=True))


def float32_array(values: Sequence[float] | np.ndarray, label: str = "", distro: str | None = None) -> Any:
    """std_msgs/Float32MultiArray with one labelled dimension."""
    v = np.asarray(values, dtype=np.float32).reshape(-1)
    dim = new("std_msgs/msg/MultiArrayDimension", distro, label=str(label), size=v.size, stride=v.size)
    layout = new("std_msgs/msg/MultiArrayLayout", distro, dim=[dim], data_offset=0)
    return new("std_msgs/msg/Float32MultiArray", distro, layout=layout, data=v)


def float32_array_values(msg: Any, expected_len: int | None = None, *, finite: bool = True) -> np.ndarray:
    """Data of a Float32MultiArray (data_offset honoured), validated for length and finiteness."""
    data = np.asarray(msg.data, dtype=np.float32).reshape(-1)
    off = int(msg.layout.data_offset)
    if off < 0 or off > data.size:
        raise MessageValueError(f"data_offset {off} outside data of {data.size} values")
    data = data[off:]
    if expected_len is not None and data.size != expected_len:
        raise MessageValueError(f"expected {expected_len} values, got {data.size}")
    if finite and not np.all(np.isfinite(data)):
        raise MessageValueError("array contains NaN/inf")
    return data.copy()


def string_msg(text: str, distro: str | None = None) -> Any:
    return new("std_msgs/msg/String", distro, data=str(text))


def twist(linear: Sequence[float], angular: Sequence[float], distro: str | None = None) -> Any:
    lx, ly, lz = (float(x) for x in linear)
    ax, ay, az = (float(x) for x in angular)
    return new(
        "geometry_msgs/msg/Twist", distro,
        linear=new("geometry_msgs/msg/Vector3", distro, x=lx, y=ly, z=lz),
        angular=new("geometry_msgs/msg/Vector3", distro, x=ax, y=ay, z=az),
    )


def twist_to_numpy(msg: Any) -> tuple[np.ndarray, np.ndarray]:
    lin = np.array([msg.linear.x, msg.linear.y, msg.linear.z])
    ang = np.array([msg.angular.x, msg.angular.y, msg.angular.z])
    return lin, ang


# ----------------------------------------------------------------------------- point clouds
_PF = {  # PointField datatype <-> numpy
    1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8",
}
_PF_INV = {np.dtype(v).str[1:]: k for k, v in _PF.items()}


def pointcloud2_from_numpy(points: np.ndarray, stamp: int = 0, frame_id: str = "", distro: str | None = None) -> Any:
    """Unorganized sensor_msgs/PointCloud2 (height 1) from a 1-D structured array (e.g. x, y, z, intensity)."""
    arr = np.asarray(points)
    if arr.dtype.names is None or arr.ndim != 1:
        raise MessageValueError("points must be a 1-D structured array with named fields")
    fields = []
    for name in arr.dtype.names:
        fdt, off = arr.dtype.fields[name][:2]
        base, shape = fdt.base, fdt.shape
        code = _PF_INV.get(base.str[1:])
        if code is None:
            raise MessageValueError(f"field {name!r}: dtype {base} has no PointField datatype")
        count = int(np.prod(shape)) if shape else 1
        fields.append(new("sensor_msgs/msg/PointField", distro, name=name, offset=off, datatype=code, count=count))
    le = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
    data = np.frombuffer(np.ascontiguousarray(le).tobytes(), dtype=np.uint8)
    return new(
        "sensor_msgs/msg/PointCloud2", distro, header=header(stamp, frame_id, distro), height=1, width=arr.size,
        fields=fields, is_bigendian=False, point_step=arr.dtype.itemsize, row_step=arr.dtype.itemsize * arr.size,
        data=data, is_dense=True,
    )


def pointcloud2_to_numpy(msg: Any) -> np.ndarray:
    """Structured array (height*width points) from a PointCloud2; validates steps and field extents."""
    h, w, ps, rs = int(msg.height), int(msg.width), int(msg.point_step), int(msg.row_step)
    data = np.asarray(msg.data, dtype=np.uint8).reshape(-1)
    if min(h, w, ps, rs) < 0 or rs < w * ps or data.size < h * rs:
        raise MessageValueError(f"PointCloud2 of {h}x{w} points, step {ps}/{rs}, has only {data.size} bytes")
    if ps < 1 and h * w > 0:  # a zero-size point cannot be viewed (numpy would raise a bare ValueError)
        raise MessageValueError(f"PointCloud2 of {h}x{w} points has point_step {ps}")
    order = ">" if msg.is_bigendian else "<"
    names: list[str] = []
    formats: list[Any] = []
    offsets: list[int] = []
    for f in msg.fields:
        code, name, off = int(f.datatype), str(f.name), int(f.offset)
        if code not in _PF:
            raise MessageValueError(f"PointField {name!r} has unknown datatype {code}")
        if name in names:  # numpy: "name already used as a name or title"
            raise MessageValueError(f"PointCloud2 has duplicate PointField {name!r}")
        dt = np.dtype(order + _PF[code])
        count = max(int(f.count), 1)
        if off < 0 or off + dt.itemsize * count > ps:
            raise MessageValueError(f"PointField {name!r} (offset {off}, {count} x {dt.itemsize} B) "
                                    f"runs past point_step {ps}")
        names.append(name)
        formats.append((dt, (count,)) if count > 1 else dt)
        offsets.append(off)
    try:  # backstop: whatever numpy still refuses is a malformed message, not a crash
        dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": max(ps, 1)})
        rows = data[: h * rs].reshape(h, rs)[:, : w * ps]
        out = np.ascontiguousarray(rows).view(dtype).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise MessageValueError(f"PointCloud2 layout is not decodable: {exc}") from None
    return out.astype(out.dtype.newbyteorder("=")) if order == ">" else out.copy()


# ----------------------------------------------------------------------------- detections
def detection3d_array(
    boxes: np.ndarray, scores: Sequence[float], labels: Sequence[str], stamp: int = 0, frame_id: str = "",
    distro: str | None = None,
) -> Any:
    """vision_msgs/Detection3DArray from (N, 7) boxes ``x, y, z, length, width, height, yaw``."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    if not (len(scores) == len(labels) == len(b)):
        raise MessageValueError(f"{len(b)} boxes, {len(scores)} scores, {len(labels)} labels")
    hdr = header(stamp, frame_id, distro)
    dets = []
    for (x, y, z, lx, ly, lz, yaw), s, lab in zip(b, scores, labels, strict=True):
        q = new("geometry_msgs/msg/Quaternion", distro, x=0.0, y=0.0, z=math.sin(yaw / 2), w=math.cos(yaw / 2))
        pose = new("geometry_msgs/msg/Pose", distro, position=new("geometry_msgs/msg/Point", distro, x=x, y=y, z=z),
                   orientation=q)
        hyp = new("vision_msgs/msg/ObjectHypothesisWithPose", distro,
                  hypothesis=new("vision_msgs/msg/ObjectHypothesis", distro, class_id=str(lab), score=float(s)),
                  pose=new("geometry_msgs/msg/PoseWithCovariance", distro, pose=pose))
        bbox = new("vision_msgs/msg/BoundingBox3D", distro, center=pose,
                   size=new("geometry_msgs/msg/Vector3", distro, x=lx, y=ly, z=lz))
        dets.append(new("vision_msgs/msg/Detection3D", distro, header=hdr, results=[hyp], bbox=bbox, id=""))
    return new("vision_msgs/msg/Detection3DArray", distro, header=hdr, detections=dets)


def detection3d_array_to_numpy(msg: Any) -> dict[str, Any]:
    """``{"boxes": (N, 7), "scores": (N,), "labels": [str]}`` (best hypothesis of each detection)."""
    boxes, scores, labels = [], [], []
    for d in msg.detections:
        c, s, q = d.bbox.center, d.bbox.size, d.bbox.center.orientation
        yaw = math.atan2(2 * (q.w * q.z + q.x * q.y), 1 - 2 * (q.y**2 + q.z**2))
        boxes.append([c.position.x, c.position.y, c.position.z, s.x, s.y, s.z, yaw])
        best = max(d.results, key=lambda r: r.hypothesis.score, default=None)
        scores.append(best.hypothesis.score if best is not None else 0.0)
        labels.append(best.hypothesis.class_id if best is not None else "")
    return {"boxes": np.asarray(boxes, dtype=np.float64).reshape(-1, 7), "scores": np.asarray(scores), "labels": labels}


def kv_pairs(values: Mapping[str, Any], distro: str | None = None) -> list[Any]:
    """diagnostic_msgs/KeyValue list (values stringified)."""
    return [new("diagnostic_msgs/msg/KeyValue", distro, key=str(k), value=str(v)) for k, v in values.items()]
