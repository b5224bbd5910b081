"""Synthetic MuJoCo driving sequences for UniLION: moving ego, LiDAR + 2 cameras, per-frame 3-D / BEV labels.

Built on :mod:`latentstack.sim.lidar_scenes` (same object classes, sizes, layout sampler, MJCF builder and
noise model; that module is imported, never changed, so LION's data stay bit-identical). What is new:

- **Ego motion.** The ego drives a unicycle path (speed ``U(ego_speed)``, yaw rate ``U(±ego_yaw_rate)``); frame
  ``t`` is at time ``t·dt_s``. ``ego_pose[t]`` is the 4×4 world←ego transform, where the *world* frame is the
  ego (sensor) frame at t = 0 (x forward, y left, z up, origin at the LiDAR, ground at z = −1.73). Objects move
  as in :func:`~latentstack.sim.lidar_scenes.scan_sequence` (constant speed and yaw rate along their heading);
  clutter and the road are static in the world.
- **Road.** A band ``road_width`` wide along the ego path, built from thin boxes (rendered dark grey, lower
  LiDAR reflectivity than the ground); the BEV *drivable area* label is exactly the union of those boxes.
- **Cameras.** ``camera_yaws_deg`` cameras (default 2, ±30°) at ``camera_pos`` in the ego frame, ``image_size``
  (H, W) = 64×96, horizontal FOV ``camera_hfov_deg``; square pixels, principal point at the image centre.
  Conventions (OpenCV): camera axes x right, y down, z forward; ``intrinsics`` K (3×3) maps camera coordinates to
  pixels with pixel (row i, col j) covering ``u ∈ [j, j+1)``, ``v ∈ [i, i+1)``; ``cam2ego`` (4×4) maps camera to
  ego coordinates. Rendered with ``mujoco.Renderer`` (``MUJOCO_GL=egl`` headless).
- **LiDAR** as LION's (64 beams over −24.9°…+2°, ±45° azimuth at 0.4°), cast from the ego pose in the world.
- **Variants** where LiDAR alone is weak, one per sequence (``seed % 4``): ``base``; ``sparse`` (16 beams, 10 %
  dropout); ``far`` (objects at 25–50 m); ``occluded`` (more walls, bushes and cars).

Labels per frame (ego frame): boxes ``(x, y, z, l, w, h, yaw)`` with class, **track id** (index of the object in
its sequence) and LiDAR point count; ``bev_semantic`` (4, Ny, Nx) uint8 with channels :data:`SEMANTIC_CHANNELS`
(drivable area, then the footprint of each class); ``occupancy`` (Nz, Ny, Nx) uint8: a cell is occupied when
its centre is inside any solid (objects, walls, poles, bushes; not ground/road). BEV grid: row i ↔ y, column j ↔
x, cell centres ``bev_range[0] + (j+½)·bev_cell`` — the same layout as the detector's BEV map.

On disk (:func:`save_split` / :func:`load_split`, no pickle): ``{split}.npz`` with the arrays below and
``{split}.json`` (config, names, counts and the npz's sha256)::

    points (P,4) f32, point_instance (P,) i32, point_offsets (F+1,) i64       LiDAR, ego frame, per frame
    boxes (M,7) f32, box_class/box_track/box_num_points (M,) i32, box_offsets (F+1,) i64
    images (F, ncam, H, W, 3) u8, intrinsics (ncam,3,3) f64, cam2ego (ncam,4,4) f64
    ego_pose (F,4,4) f64, time_s (F,) f64, frame_seq (F,) i64 (index into seq_seeds), frame_index (F,) i64
    bev_semantic (F,4,Ny,Nx) u8, occupancy (F,Nz,Ny,Nx) u8, seq_seeds (S,) i64, seq_variant (S,) str

Splits use disjoint sequence-seed ranges (:data:`SPLIT_SEEDS`); test seeds are never used for fitting.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .lidar_scenes import (
    _REFLECTIVITY,
    CLASSES,
    LidarSceneConfig,
    LidarSequenceConfig,
    _mjcf,
    _sample_layout,
    points_in_boxes,
    scan_rays,
)

__all__ = [
    "SEMANTIC_CHANNELS",
    "SPLIT_SEEDS",
    "VARIANTS",
    "UniFrame",
    "UniSceneConfig",
    "camera_calibration",
    "cmd_gen_data",
    "gen_data",
    "generate_sequence",
    "generate_split",
    "load_split",
    "project_points",
    "save_split",
    "variant_of",
]

SEMANTIC_CHANNELS: tuple[str, ...] = ("drivable", *CLASSES)
VARIANTS: tuple[str, ...] = ("base", "sparse", "far", "occluded")
# disjoint from each other (and from LiDAR-only splits' usage: these are *sequence* seeds of another generator)
SPLIT_SEEDS: dict[str, range] = {
    "train": range(1_000_000, 1_010_000),
    "val": range(1_100_000, 1_110_000),
    "test": range(1_200_000, 1_210_000),
}
_ROAD_REFLECTIVITY = 0.08
_RGBA = {"ground": (0.35, 0.5, 0.3), "road": (0.22, 0.22, 0.24), "Car": (0.75, 0.15, 0.12),
         "Pedestrian": (0.2, 0.35, 0.85), "Cyclist": (0.9, 0.8, 0.15), "pole": (0.6, 0.6, 0.6),
         "wall": (0.55, 0.45, 0.4), "bush": (0.15, 0.4, 0.12)}


@dataclass(frozen=True)
class UniSceneConfig:
    num_frames: int = 8
    dt_s: float = 0.2
    ego_speed: tuple[float, float] = (2.0, 8.0)
    ego_yaw_rate: float = 0.15  # rad/s, |ω| ~ U(0, max)
    road_width: float = 8.0
    # LiDAR crop / object placement (metres, ego frame); the model grid covers this range
    point_range: tuple[float, float, float, float, float, float] = (0.0, -25.6, -3.0, 51.2, 25.6, 1.0)
    place_x: tuple[float, float] = (4.0, 50.0)
    place_y: float = 24.0
    max_range: float = 70.0
    # cameras (OpenCV axes; position in the ego frame, yaw about +z, no roll/pitch)
    image_size: tuple[int, int] = (64, 96)
    camera_hfov_deg: float = 64.0
    camera_yaws_deg: tuple[float, ...] = (30.0, -30.0)
    camera_pos: tuple[float, float, float] = (0.3, 0.0, -0.23)  # 1.5 m above ground
    # label grids
    bev_range: tuple[float, float, float, float] = (0.0, -25.6, 51.2, 25.6)  # x0, y0, x1, y1
    bev_cell: float = 0.8
    occ_z: tuple[float, float] = (-3.0, 1.0)
    occ_bins: int = 8
    variants: tuple[str, ...] = VARIANTS
    motion: LidarSequenceConfig = field(default_factory=LidarSequenceConfig)

    def __post_init__(self) -> None:
        if self.num_frames < 1 or self.dt_s <= 0:
            raise ValueError("num_frames >= 1 and dt_s > 0 required")
        unknown = set(self.variants) - set(VARIANTS)
        if unknown or not self.variants:
            raise ValueError(f"variants must be a non-empty subset of {VARIANTS}, got {self.variants}")
        if len(self.image_size) != 2 or min(self.image_size) < 8:
            raise ValueError(f"image_size (H, W) >= 8, got {self.image_size}")

    @property
    def bev_shape(self) -> tuple[int, int]:
        """(Ny, Nx) of the BEV label grids."""
        x0, y0, x1, y1 = self.bev_range
        return round((y1 - y0) / self.bev_cell), round((x1 - x0) / self.bev_cell)

    def lidar_config(self, variant: str) -> LidarSceneConfig:
        """The LION scene config of one variant (layout sampler, beams, noise)."""
        base = LidarSceneConfig(point_range=self.point_range, place_x=self.place_x, place_y=self.place_y,
                                max_range=self.max_range)
        if variant == "sparse":
            return dataclasses.replace(base, num_beams=16, dropout=0.1)
        if variant == "far":
            return dataclasses.replace(base, place_x=(25.0, min(50.0, self.point_range[3] - 1.0)))
        if variant == "occluded":
            return dataclasses.replace(base, num_walls=(2, 4), num_bushes=(4, 10), num_cars=(5, 10))
        return base

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> UniSceneConfig:
        d = json.loads(text)
        motion = d.pop("motion")
        motion = LidarSequenceConfig(**{k: _tup(v) for k, v in motion.items()})
        return cls(motion=motion, **{k: _tup(v) for k, v in d.items()})


def _tup(v: object) -> object:
    return tuple(_tup(x) for x in v) if isinstance(v, list) else v


@dataclass
class UniFrame:
    points: np.ndarray  # (P, 4) f32, ego frame
    point_instance: np.ndarray  # (P,) i32, −1 background
    boxes: np.ndarray  # (M, 7) f32, ego frame
    box_class: np.ndarray  # (M,) i32
    box_track: np.ndarray  # (M,) i32
    box_num_points: np.ndarray  # (M,) i32
    images: np.ndarray  # (ncam, H, W, 3) u8
    ego_pose: np.ndarray  # (4, 4) f64 world <- ego
    bev_semantic: np.ndarray  # (4, Ny, Nx) u8
    occupancy: np.ndarray  # (Nz, Ny, Nx) u8
    time_s: float
    seq_seed: int
    frame_index: int
    variant: str


def variant_of(seed: int, cfg: UniSceneConfig) -> str:
    return cfg.variants[seed % len(cfg.variants)]


def camera_calibration(cfg: UniSceneConfig) -> tuple[np.ndarray, np.ndarray]:
    """``intrinsics`` (ncam, 3, 3) and ``cam2ego`` (ncam, 4, 4), OpenCV camera axes (module docstring)."""
    h, w = cfg.image_size
    f = (w / 2) / math.tan(math.radians(cfg.camera_hfov_deg) / 2)
    k = np.array([[f, 0.0, w / 2], [0.0, f, h / 2], [0.0, 0.0, 1.0]])
    ks, ts = [], []
    for yaw_deg in cfg.camera_yaws_deg:
        a = math.radians(yaw_deg)
        z = np.array([math.cos(a), math.sin(a), 0.0])  # forward
        x = np.array([math.sin(a), -math.cos(a), 0.0])  # right
        y = np.array([0.0, 0.0, -1.0])  # down
        t = np.eye(4)
        t[:3, :3] = np.stack([x, y, z], 1)
        t[:3, 3] = cfg.camera_pos
        ks.append(k.copy())
        ts.append(t)
    return np.stack(ks), np.stack(ts)


def project_points(points_ego: np.ndarray, intrinsics: np.ndarray, cam2ego: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Ego-frame points (P, 3) → pixel coordinates (P, 2) as (u, v) and camera z-depth (P,) for one camera."""
    ego2cam = np.linalg.inv(cam2ego)
    pc = np.asarray(points_ego, np.float64)[:, :3] @ ego2cam[:3, :3].T + ego2cam[:3, 3]
    z = pc[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = (pc @ intrinsics.T)[:, :2] / z[:, None]
    return uv, z


def _pose(x: float, y: float, yaw: float) -> np.ndarray:
    t = np.eye(4)
    c, s = math.cos(yaw), math.sin(yaw)
    t[:2, :2] = [[c, -s], [s, c]]
    t[:2, 3] = (x, y)
    return t


def _unicycle(v: float, w: float, tau: float) -> tuple[float, float, float]:
    """Displacement (dx, dy) and heading change after ``tau`` seconds from heading 0."""
    if abs(w) < 1e-9:
        return v * tau, 0.0, 0.0
    return v / w * math.sin(w * tau), v / w * (1 - math.cos(w * tau)), w * tau


def _boxes_to_frame(boxes_world: np.ndarray, world2ego: np.ndarray) -> np.ndarray:
    b = boxes_world.astype(np.float64).copy()
    b[:, :3] = b[:, :3] @ world2ego[:3, :3].T + world2ego[:3, 3]
    yaw_off = math.atan2(world2ego[1, 0], world2ego[0, 0])
    b[:, 6] = (b[:, 6] + yaw_off + math.pi) % (2 * math.pi) - math.pi
    return b


def _bev_centres(cfg: UniSceneConfig) -> tuple[np.ndarray, np.ndarray]:
    ny, nx = cfg.bev_shape
    x0, y0 = cfg.bev_range[0], cfg.bev_range[1]
    xs = x0 + (np.arange(nx) + 0.5) * cfg.bev_cell
    ys = y0 + (np.arange(ny) + 0.5) * cfg.bev_cell
    return np.meshgrid(xs, ys, indexing="xy")  # (Ny, Nx) each


def _footprint(boxes: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """(Ny, Nx) bool: cell centre inside any box in BEV."""
    out = np.zeros(gx.shape, bool)
    for b in boxes:
        c, s = math.cos(b[6]), math.sin(b[6])
        dx, dy = gx - b[0], gy - b[1]
        out |= (np.abs(dx * c + dy * s) <= b[3] / 2) & (np.abs(-dx * s + dy * c) <= b[4] / 2)
    return out


class _Sequence:
    """One sequence's MuJoCo world (built once, re-posed per frame) and its renderer."""

    def __init__(self, seed: int, cfg: UniSceneConfig) -> None:
        os.environ.setdefault("MUJOCO_GL", "egl")
        import mujoco

        self.mj, self.cfg, self.seed = mujoco, cfg, int(seed)
        self.variant = variant_of(seed, cfg)
        self.lcfg = cfg.lidar_config(self.variant)
        self.objects, self.clutter = _sample_layout(self.lcfg, np.random.default_rng(seed))
        mrng = np.random.default_rng([seed, 1])
        self.v_ego = float(mrng.uniform(*cfg.ego_speed))
        self.w_ego = float(mrng.uniform(-cfg.ego_yaw_rate, cfg.ego_yaw_rate))
        self.kin = [(float(mrng.uniform(*cfg.motion.speed[c])),
                     float(mrng.uniform(-cfg.motion.max_yaw_rate, cfg.motion.max_yaw_rate))) for c, _ in self.objects]
        # road: 2 m steps along the ego path from 10 m behind the start to 30 m past the last frame
        t_end = (cfg.num_frames - 1) * cfg.dt_s
        s_max = self.v_ego * t_end + self.lcfg.point_range[3] + 30.0
        segs = []
        for s in np.arange(-10.0, s_max, 2.0):
            tau = s / self.v_ego
            x, y, yaw = _unicycle(self.v_ego, self.w_ego, tau)
            segs.append([x, y, -self.lcfg.sensor_height, 2.6, cfg.road_width, 0.01, yaw])
        self.road = np.array(segs)
        xml, kinds = _mjcf(self.lcfg, self.objects, self.clutter)
        h = self.lcfg.sensor_height
        extra = "".join(
            f'<geom name="road{i}" type="box" size="{r[3] / 2} {r[4] / 2} 0.005" pos="{r[0]} {r[1]} 0.005" '
            f'euler="0 0 {r[6]}" contype="0" conaffinity="0"/>' for i, r in enumerate(self.road))
        extra += "".join(f'<camera name="cam{i}" pos="0 0 {h}"/>' for i in range(len(cfg.camera_yaws_deg)))
        extra += '<light pos="0 0 30" dir="0.3 0.2 -1" diffuse="0.6 0.6 0.6" castshadow="false"/>'
        xml = xml.replace("</worldbody>", extra + "</worldbody>")
        xml = xml.replace("<mujoco>", '<mujoco><visual><headlight ambient="0.4 0.4 0.4" diffuse="0.4 0.4 0.4" '
                                      'specular="0 0 0"/><quality shadowsize="0"/></visual>', 1)
        self.kinds = kinds + ["road"] * len(self.road)
        self.model = mujoco.MjModel.from_xml_string(xml)
        self.data = mujoco.MjData(self.model)
        crng = np.random.default_rng([seed, 3])
        for g, kind in enumerate(self.kinds):
            rgb = np.clip(np.array(_RGBA[kind]) + crng.normal(0.0, 0.04, 3), 0, 1)
            self.model.geom_rgba[g] = [*rgb, 1.0]
        self.model.geom_rbound[:] = 1000.0  # geoms are re-posed: never frustum-cull them
        self.model.vis.map.znear = 0.05 / self.model.stat.extent
        self.model.vis.map.zfar = 200.0 / self.model.stat.extent
        self.n_obj = len(self.objects)
        self.obj_world = np.array([b for _, b in self.objects], dtype=np.float64).reshape(-1, 7)
        self.renderer = mujoco.Renderer(self.model, *cfg.image_size)
        self.intrinsics, self.cam2ego = camera_calibration(cfg)

    def close(self) -> None:
        self.renderer.close()

    def ego_pose(self, tau: float) -> np.ndarray:
        return _pose(*_unicycle(self.v_ego, self.w_ego, tau))

    def objects_at(self, tau: float) -> np.ndarray:
        """World boxes of every object at time ``tau``."""
        out = self.obj_world.copy()
        for i, (v, w) in enumerate(self.kin):
            yaw0 = out[i, 6]
            dx, dy, dyaw = _unicycle(v, w, tau)
            c, s = math.cos(yaw0), math.sin(yaw0)
            out[i, 0] += c * dx - s * dy
            out[i, 1] += s * dx + c * dy
            out[i, 6] = (yaw0 + dyaw + math.pi) % (2 * math.pi) - math.pi
        return out

    def frame(self, t: int) -> UniFrame:
        mj, cfg, lcfg, m = self.mj, self.cfg, self.lcfg, self.model
        tau = t * cfg.dt_s
        h = lcfg.sensor_height
        pose = self.ego_pose(tau)
        world2ego = np.linalg.inv(pose)
        objs = self.objects_at(tau)
        for i, b in enumerate(objs):  # geoms 1..n are the objects (lidar_scenes._mjcf order)
            m.geom_pos[1 + i] = [b[0], b[1], b[2] + h]
            q = np.zeros(4)
            mj.mju_euler2Quat(q, np.array([0.0, 0.0, b[6]]), "xyz")
            m.geom_quat[1 + i] = q
        for c in range(len(cfg.camera_yaws_deg)):
            c2w = pose @ self.cam2ego[c]
            rot = c2w[:3, :3] @ np.diag([1.0, -1.0, -1.0])  # OpenCV (x right, y down, z fwd) -> MuJoCo (y up, −z fwd)
            q = np.zeros(4)
            mj.mju_mat2Quat(q, rot.reshape(-1))
            m.cam_pos[c] = c2w[:3, 3] + [0.0, 0.0, h]
            m.cam_quat[c] = q
        mj.mj_forward(m, self.data)
        # LiDAR: rays rotated into the world, cast from the sensor; points back in the ego frame
        rays_ego = scan_rays(lcfg)
        rays = rays_ego @ pose[:3, :3].T
        n = len(rays)
        geomid = np.full(n, -1, dtype=np.int32)
        dist = np.full(n, -1.0, dtype=np.float64)
        normal = np.zeros(3 * n, dtype=np.float64)
        origin = pose[:3, 3] + [0.0, 0.0, h]
        mj.mj_multiRay(m, self.data, origin, rays.reshape(-1).astype(np.float64), None, 1, -1, geomid, dist, normal,
                       n, lcfg.max_range)
        rng = np.random.default_rng([self.seed, 2, t])
        hit = (geomid >= 0) & (dist > 0)
        hit &= rng.random(n) >= lcfg.dropout
        r = dist[hit] + rng.normal(0.0, lcfg.range_noise, int(hit.sum()))
        dirs = rays_ego[hit]
        xyz = dirs * r[:, None]
        gid = geomid[hit]
        cos_inc = np.abs(np.sum(normal.reshape(-1, 3)[hit] * rays[hit], axis=1))
        refl = np.array([_ROAD_REFLECTIVITY if k == "road" else _REFLECTIVITY[k] for k in self.kinds])[gid]
        inten = np.clip(refl * cos_inc + rng.normal(0.0, lcfg.intensity_noise, len(r)), 0.0, 1.0)
        pr = lcfg.point_range
        keep = ((xyz[:, 0] >= pr[0]) & (xyz[:, 0] < pr[3]) & (xyz[:, 1] >= pr[1]) & (xyz[:, 1] < pr[4])
                & (xyz[:, 2] >= pr[2]) & (xyz[:, 2] < pr[5]))
        xyz, gid, inten = xyz[keep], gid[keep], inten[keep]
        inst = np.where((gid >= 1) & (gid <= self.n_obj), gid - 1, -1).astype(np.int32)
        boxes = _boxes_to_frame(objs, world2ego).astype(np.float32).reshape(-1, 7)
        counts = np.bincount(inst[inst >= 0], minlength=self.n_obj).astype(np.int32)
        # cameras
        images = []
        for c in range(len(cfg.camera_yaws_deg)):
            self.renderer.update_scene(self.data, camera=c)
            images.append(self.renderer.render().copy())
        bev_sem, occ = self._labels(boxes, world2ego)
        return UniFrame(
            points=np.concatenate([xyz, inten[:, None]], 1).astype(np.float32), point_instance=inst, boxes=boxes,
            box_class=np.array([c for c, _ in self.objects], dtype=np.int32),
            box_track=np.arange(self.n_obj, dtype=np.int32), box_num_points=counts, images=np.stack(images),
            ego_pose=pose, bev_semantic=bev_sem, occupancy=occ, time_s=tau, seq_seed=self.seed, frame_index=t,
            variant=self.variant)

    def _labels(self, boxes: np.ndarray, world2ego: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.cfg
        gx, gy = _bev_centres(cfg)
        classes = np.array([c for c, _ in self.objects], dtype=np.int64)
        sem = [_footprint(_boxes_to_frame(self.road, world2ego), gx, gy)]
        sem += [_footprint(boxes[classes == k], gx, gy) for k in range(len(CLASSES))]
        # occupancy: every solid as a box / cylinder / ellipsoid in the ego frame, tested at cell centres
        nz = cfg.occ_bins
        dz = (cfg.occ_z[1] - cfg.occ_z[0]) / nz
        zs = cfg.occ_z[0] + (np.arange(nz) + 0.5) * dz
        pts = np.stack(np.broadcast_arrays(gx[None], gy[None], zs[:, None, None]), -1).reshape(-1, 3)
        solids = [boxes]
        g0 = -self.lcfg.sensor_height
        round_geoms = []
        for kind, p in self.clutter:
            if kind == "wall":
                x, y, length, t, hh, yaw = p
                solids.append(_boxes_to_frame(np.array([[x, y, g0 + hh / 2, length, t, hh, yaw]]), world2ego))
            elif kind == "pole":
                x, y, r, hh = p
                round_geoms.append(("pole", x, y, g0 + hh / 2, r, r, hh / 2))
            else:
                x, y, rx, ry, rz = p
                round_geoms.append(("bush", x, y, g0 + rz * 0.8, rx, ry, rz))
        b = np.concatenate(solids).reshape(-1, 7)
        occ = points_in_boxes(pts, b).any(1) if len(b) else np.zeros(len(pts), bool)
        rot, tr = world2ego[:3, :3], world2ego[:3, 3]
        yaw_off = math.atan2(rot[1, 0], rot[0, 0])
        for kind, x, y, z, ax, ay, az in round_geoms:
            cx, cy, cz = rot @ np.array([x, y, z]) + tr
            dx, dy, dzz = pts[:, 0] - cx, pts[:, 1] - cy, pts[:, 2] - cz
            if kind == "pole":
                occ |= (dx * dx + dy * dy <= ax * ax) & (np.abs(dzz) <= az)
            else:  # ellipsoid axes are world-aligned: rotate the offsets back into the world
                c, s = math.cos(yaw_off), math.sin(yaw_off)
                wx, wy = c * dx + s * dy, -s * dx + c * dy
                occ |= (wx / ax) ** 2 + (wy / ay) ** 2 + (dzz / az) ** 2 <= 1.0
        return np.stack(sem).astype(np.uint8), occ.reshape(nz, *gx.shape).astype(np.uint8)


def generate_sequence(seed: int, cfg: UniSceneConfig | None = None, num_frames: int | None = None
                      ) -> list[UniFrame]:
    """All frames of one sequence, a pure function of ``seed`` (and the config)."""
    cfg = cfg or UniSceneConfig()
    seq = _Sequence(seed, cfg)
    try:
        return [seq.frame(t) for t in range(cfg.num_frames if num_frames is None else num_frames)]
    finally:
        seq.close()


def _seeds(split: str, n: int) -> list[int]:
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_SEEDS)}")
    if n > len(SPLIT_SEEDS[split]):
        raise ValueError(f"split {split!r} has only {len(SPLIT_SEEDS[split])} sequence seeds, asked for {n}")
    return list(SPLIT_SEEDS[split][:n])


def generate_split(split: str, num_sequences: int, cfg: UniSceneConfig | None = None, progress: bool = True
                   ) -> list[UniFrame]:
    from tqdm import tqdm

    cfg = cfg or UniSceneConfig()
    frames: list[UniFrame] = []
    for s in tqdm(_seeds(split, num_sequences), desc=f"unilion {split}", disable=not progress):
        frames.extend(generate_sequence(s, cfg))
    return frames


def save_split(path_stem: str | Path, frames: list[UniFrame], cfg: UniSceneConfig) -> tuple[Path, Path]:
    """Write ``{stem}.npz`` + ``{stem}.json`` (module docstring). Returns both paths."""
    def offsets(sizes: list[int]) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    seeds = list(dict.fromkeys(f.seq_seed for f in frames))
    variants = [next(f.variant for f in frames if f.seq_seed == s) for s in seeds]
    intr, c2e = camera_calibration(cfg)
    npz = stem.with_suffix(".npz")
    np.savez_compressed(
        npz,
        points=np.concatenate([f.points for f in frames]).astype(np.float32),
        point_instance=np.concatenate([f.point_instance for f in frames]).astype(np.int32),
        point_offsets=offsets([len(f.points) for f in frames]),
        boxes=np.concatenate([f.boxes for f in frames]).astype(np.float32).reshape(-1, 7),
        box_class=np.concatenate([f.box_class for f in frames]).astype(np.int32),
        box_track=np.concatenate([f.box_track for f in frames]).astype(np.int32),
        box_num_points=np.concatenate([f.box_num_points for f in frames]).astype(np.int32),
        box_offsets=offsets([len(f.boxes) for f in frames]),
        images=np.stack([f.images for f in frames]).astype(np.uint8),
        intrinsics=intr, cam2ego=c2e,
        ego_pose=np.stack([f.ego_pose for f in frames]),
        time_s=np.array([f.time_s for f in frames], np.float64),
        frame_seq=np.array([seeds.index(f.seq_seed) for f in frames], np.int64),
        frame_index=np.array([f.frame_index for f in frames], np.int64),
        bev_semantic=np.stack([f.bev_semantic for f in frames]).astype(np.uint8),
        occupancy=np.stack([f.occupancy for f in frames]).astype(np.uint8),
        seq_seeds=np.array(seeds, np.int64), seq_variant=np.array(variants, dtype=str),
    )
    meta = {"format": "unilion_split", "format_version": 1, "config": json.loads(cfg.to_json()),
            "classes": list(CLASSES), "semantic_channels": list(SEMANTIC_CHANNELS),
            "cameras": [f"cam{i}" for i in range(len(cfg.camera_yaws_deg))], "num_frames": len(frames),
            "num_sequences": len(seeds), "npz": npz.name, "sha256": hashlib.sha256(npz.read_bytes()).hexdigest()}
    js = stem.with_suffix(".json")
    js.write_text(json.dumps(meta, indent=1) + "\n")
    return npz, js


def load_split(path_stem: str | Path) -> tuple[list[UniFrame], UniSceneConfig]:
    """Read a split written by :func:`save_split`; refuses a npz whose sha256 differs from its json."""
    stem = Path(path_stem)
    npz, js = stem.with_suffix(".npz"), stem.with_suffix(".json")
    meta = json.loads(js.read_text())
    if meta.get("format") != "unilion_split" or meta.get("format_version") != 1:
        raise ValueError(f"{js}: not a version-1 UniLION split")
    digest = hashlib.sha256(npz.read_bytes()).hexdigest()
    if digest != meta["sha256"]:
        raise ValueError(f"{npz}: sha256 {digest} does not match {js} ({meta['sha256']})")
    cfg = UniSceneConfig.from_json(json.dumps(meta["config"]))
    with np.load(npz, allow_pickle=False) as z:
        d = {k: z[k] for k in z.files}
    po, bo = d["point_offsets"], d["box_offsets"]
    frames = []
    for i in range(len(d["time_s"])):
        s = int(d["frame_seq"][i])
        p, b = slice(po[i], po[i + 1]), slice(bo[i], bo[i + 1])
        frames.append(UniFrame(
            d["points"][p], d["point_instance"][p], d["boxes"][b], d["box_class"][b], d["box_track"][b],
            d["box_num_points"][b], d["images"][i], d["ego_pose"][i], d["bev_semantic"][i], d["occupancy"][i],
            float(d["time_s"][i]), int(d["seq_seeds"][s]), int(d["frame_index"][i]), str(d["seq_variant"][s])))
    return frames, cfg


def gen_data(out_dir: str | Path, sizes: dict[str, int] | None = None, cfg: UniSceneConfig | None = None,
             progress: bool = True) -> dict[str, tuple[Path, Path]]:
    """``lstack unilion gen-data``: write ``{split}.npz`` + ``{split}.json`` for each split; ``sizes`` counts
    sequences (default train 96, val 8, test 32)."""
    cfg = cfg or UniSceneConfig()
    sizes = sizes or {"train": 96, "val": 8, "test": 32}
    return {split: save_split(Path(out_dir) / split, generate_split(split, n, cfg, progress), cfg)
            for split, n in sizes.items()}


def cmd_gen_data(args: Any) -> int:
    """``lstack unilion gen-data`` (flags in :mod:`latentstack.cli.unilion`)."""
    cfg = UniSceneConfig(num_frames=args.frames)
    sizes = {"train": args.train, "val": args.val, "test": args.test}
    for split, (npz, js) in gen_data(args.data, sizes, cfg).items():
        print(f"{split}: {sizes[split]} sequences x {cfg.num_frames} frames -> {npz} + {js.name}")
    return 0
