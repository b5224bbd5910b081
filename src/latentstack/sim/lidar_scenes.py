"""Synthetic MuJoCo LiDAR scenes with exact labels (LION data, spec lion.md §13).

A scene is an MJCF built in code: a ground plane, objects as sized boxes with random yaw
(Car 3.9×1.6×1.56 m, Pedestrian 0.8×0.6×1.73, Cyclist 1.76×0.6×1.73, each ±10 %), and
clutter (poles, walls, ellipsoid bushes) that is *not* labelled. A 64-beam spinning LiDAR
(HDL-64E layout: elevations linear over −24.9°…+2.0°) at 1.73 m height is ray-cast with one
``mujoco.mj_multiRay`` call; ``geomid`` gives the exact instance of every point. Range noise
(σ = 2 cm) and random dropout are added afterwards; intensity = reflectivity(material) ·
|cos(incidence)| from the hit normals, plus noise.

Frame: the sensor frame (KITTI LiDAR convention): x forward, y left, z up, origin at the
sensor, so the ground is at z = −1.73. Boxes are ``(x, y, z_center, length, width, height,
yaw)`` in that frame; yaw about +z, length along the heading.

To keep CPU training affordable the default scan covers the front ±45° (KITTI's camera
FOV, inside which KITTI labels objects) at 0.4° azimuth step (225 × 64 = 14,400 rays) and
points are kept within ``x ∈ [0, 40]``, ``|y| ≤ 20``, ``z ∈ [−3, 1]``.

Seeds: a scan is a pure function of its integer seed. The splits use disjoint seed ranges
(:data:`SPLIT_SEEDS`); test seeds are never used for fitting or selection.

On-disk format (``.npz``, no pickle; :func:`save_split` / :func:`load_split`) — one file per
split, ragged arrays flattened with offsets:

====================  ===========  ===============================================================
key                   dtype/shape  meaning
====================  ===========  ===============================================================
``points``            f32 (P, 4)   x, y, z, intensity of all scans concatenated (sensor frame)
``point_instance``    i32 (P,)     index into this scan's boxes, −1 for ground/clutter
``point_offsets``     i64 (S+1,)   scan s owns ``points[point_offsets[s]:point_offsets[s+1]]``
``boxes``             f32 (M, 7)   x, y, z, l, w, h, yaw of every labelled object (incl. 0-point ones)
``box_class``         i32 (M,)     index into ``classes``
``box_num_points``    i32 (M,)     LiDAR points on the object (after noise/dropout/range crop)
``box_offsets``       i64 (S+1,)   scan s owns ``boxes[box_offsets[s]:box_offsets[s+1]]``
``seeds``             i64 (S,)     the seed of every scan
``classes``           str (3,)     ``Car, Pedestrian, Cyclist``
``config``            str ()       JSON of the :class:`LidarSceneConfig` used
====================  ===========  ===============================================================

A box counts as a valid ground truth when it has ≥ ``min_points`` (5, KITTI-like) points;
evaluation ignores the others (neither TP nor FP).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

__all__ = [
    "CLASSES",
    "CLASS_SIZES",
    "SPLIT_SEEDS",
    "LidarScan",
    "LidarSceneConfig",
    "LidarSequenceConfig",
    "generate_scan",
    "generate_split",
    "load_split",
    "points_in_boxes",
    "save_split",
    "scan_rays",
    "scan_sequence",
]

CLASSES: tuple[str, ...] = ("Car", "Pedestrian", "Cyclist")
# (length, width, height) means, KITTI anchor sizes (spec §1 / §13)
CLASS_SIZES: dict[str, tuple[float, float, float]] = {
    "Car": (3.9, 1.6, 1.56),
    "Pedestrian": (0.8, 0.6, 1.73),
    "Cyclist": (1.76, 0.6, 1.73),
}
# material reflectivity for the intensity channel (objects differ from ground/clutter on purpose: a cue)
_REFLECTIVITY = {"ground": 0.15, "Car": 0.6, "Pedestrian": 0.35, "Cyclist": 0.45, "pole": 0.5, "wall": 0.3,
                 "bush": 0.25}
# disjoint seed ranges; sizes are the defaults of `lstack lion gen-data`
SPLIT_SEEDS: dict[str, range] = {
    "train": range(10_000),
    "val": range(100_000, 110_000),
    "test": range(200_000, 210_000),
}


@dataclass(frozen=True)
class LidarSceneConfig:
    sensor_height: float = 1.73
    num_beams: int = 64
    elev_min_deg: float = -24.9
    elev_max_deg: float = 2.0
    azimuth_fov_deg: float = 90.0  # centred on +x
    azimuth_step_deg: float = 0.4
    max_range: float = 60.0
    range_noise: float = 0.02
    dropout: float = 0.03
    intensity_noise: float = 0.03
    # point/box crop in the sensor frame: x_min, y_min, z_min, x_max, y_max, z_max
    point_range: tuple[float, float, float, float, float, float] = (0.0, -20.0, -3.0, 40.0, 20.0, 1.0)
    # object placement (metres, sensor frame)
    place_x: tuple[float, float] = (4.0, 40.0)
    place_y: float = 19.0
    num_cars: tuple[int, int] = (2, 7)
    num_pedestrians: tuple[int, int] = (0, 4)
    num_cyclists: tuple[int, int] = (0, 3)
    num_poles: tuple[int, int] = (2, 8)
    num_walls: tuple[int, int] = (0, 2)
    num_bushes: tuple[int, int] = (1, 6)
    size_jitter: float = 0.1
    min_points: int = 5

    def __post_init__(self) -> None:
        if self.num_beams < 1 or self.azimuth_step_deg <= 0 or self.azimuth_fov_deg <= 0:
            raise ValueError("num_beams, azimuth_step_deg and azimuth_fov_deg must be positive")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        pr = self.point_range
        if len(pr) != 6 or not (pr[0] < pr[3] and pr[1] < pr[4] and pr[2] < pr[5]):
            raise ValueError(f"point_range must be (xmin, ymin, zmin, xmax, ymax, zmax), got {pr}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LidarSceneConfig:
        d = json.loads(text)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


@dataclass
class LidarScan:
    points: np.ndarray  # (P, 4) float32
    point_instance: np.ndarray  # (P,) int32, −1 background
    boxes: np.ndarray  # (M, 7) float32
    box_class: np.ndarray  # (M,) int32
    box_num_points: np.ndarray  # (M,) int32
    seed: int


def scan_rays(cfg: LidarSceneConfig) -> np.ndarray:
    """Unit ray directions (R, 3), beam-major (64 elevations × azimuths), sensor frame."""
    elev = np.deg2rad(np.linspace(cfg.elev_min_deg, cfg.elev_max_deg, cfg.num_beams))
    n_az = round(cfg.azimuth_fov_deg / cfg.azimuth_step_deg)
    az = np.deg2rad((np.arange(n_az) + 0.5) * cfg.azimuth_step_deg - cfg.azimuth_fov_deg / 2)
    e, a = np.meshgrid(elev, az, indexing="ij")
    return np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], -1).reshape(-1, 3)


def _sample_layout(cfg: LidarSceneConfig, rng: np.random.Generator) -> tuple[list, list]:
    """Objects (class, box) and clutter (kind, params) placed without BEV overlap."""
    placed: list[tuple[float, float, float]] = []  # (x, y, radius) for rejection

    def free(x: float, y: float, r: float) -> bool:
        return all(math.hypot(x - px, y - py) > r + pr + 0.3 for px, py, pr in placed)

    def place(radius: float, x_rng: tuple[float, float], y_abs: float, in_fov: bool = False) -> tuple[float, float] | None:
        half_fov = math.tan(math.radians(min(cfg.azimuth_fov_deg, 178.0) / 2))
        for _ in range(50):
            x = rng.uniform(*x_rng)
            # labelled objects go where the sensor looks (KITTI labels only the camera FOV too)
            y_lim = min(y_abs, x * half_fov) if in_fov else y_abs
            y = rng.uniform(-y_lim, y_lim)
            if free(x, y, radius):
                placed.append((x, y, radius))
                return x, y
        return None

    objects = []
    counts = {"Car": cfg.num_cars, "Pedestrian": cfg.num_pedestrians, "Cyclist": cfg.num_cyclists}
    for cls_name, (lo, hi) in counts.items():
        for _ in range(int(rng.integers(lo, hi + 1))):
            base = np.array(CLASS_SIZES[cls_name])
            size = base * rng.uniform(1 - cfg.size_jitter, 1 + cfg.size_jitter, 3)
            xy = place(0.5 * math.hypot(size[0], size[1]), cfg.place_x, cfg.place_y, in_fov=True)
            if xy is None:
                continue
            yaw = rng.uniform(-math.pi, math.pi)
            z = -cfg.sensor_height + size[2] / 2
            objects.append((CLASSES.index(cls_name), np.array([xy[0], xy[1], z, *size, yaw])))
    clutter = []
    for _ in range(int(rng.integers(cfg.num_poles[0], cfg.num_poles[1] + 1))):
        r, h = rng.uniform(0.05, 0.2), rng.uniform(1.0, 4.0)
        xy = place(r, (2.0, cfg.point_range[3]), cfg.point_range[4])
        if xy is not None:
            clutter.append(("pole", (xy[0], xy[1], r, h)))
    for _ in range(int(rng.integers(cfg.num_walls[0], cfg.num_walls[1] + 1))):
        length, h = rng.uniform(4.0, 12.0), rng.uniform(0.5, 2.5)
        xy = place(length / 2, (8.0, cfg.point_range[3]), cfg.point_range[4])
        if xy is not None:
            clutter.append(("wall", (xy[0], xy[1], length, 0.15, h, rng.uniform(-math.pi, math.pi))))
    for _ in range(int(rng.integers(cfg.num_bushes[0], cfg.num_bushes[1] + 1))):
        rx, ry, rz = rng.uniform(0.3, 1.5), rng.uniform(0.3, 1.5), rng.uniform(0.3, 1.0)
        xy = place(max(rx, ry), (3.0, cfg.point_range[3]), cfg.point_range[4])
        if xy is not None:
            clutter.append(("bush", (xy[0], xy[1], rx, ry, rz)))
    return objects, clutter


def _mjcf(cfg: LidarSceneConfig, objects: list, clutter: list) -> tuple[str, list[str]]:
    """MJCF text (world frame: ground at z = 0) and the material name of every geom, by geom id."""
    g0 = -cfg.sensor_height  # sensor-frame z of the ground; world z = sensor z + height
    geoms = ['<geom name="ground" type="plane" size="200 200 0.1" pos="0 0 0"/>']
    kinds = ["ground"]
    for i, (c, b) in enumerate(objects):
        x, y, z, length, width, height, yaw = b
        geoms.append(f'<geom name="obj{i}" type="box" size="{length / 2} {width / 2} {height / 2}" '
                     f'pos="{x} {y} {z - g0}" euler="0 0 {yaw}"/>')
        kinds.append(CLASSES[c])
    for i, (kind, p) in enumerate(clutter):
        if kind == "pole":
            x, y, r, h = p
            geoms.append(f'<geom name="pole{i}" type="cylinder" size="{r} {h / 2}" pos="{x} {y} {h / 2}"/>')
        elif kind == "wall":
            x, y, length, t, h, yaw = p
            geoms.append(f'<geom name="wall{i}" type="box" size="{length / 2} {t / 2} {h / 2}" '
                         f'pos="{x} {y} {h / 2}" euler="0 0 {yaw}"/>')
        else:
            x, y, rx, ry, rz = p
            geoms.append(f'<geom name="bush{i}" type="ellipsoid" size="{rx} {ry} {rz}" pos="{x} {y} {rz * 0.8}"/>')
        kinds.append(kind)
    xml = ('<mujoco><compiler angle="radian"/><worldbody>' + "".join(geoms) + "</worldbody></mujoco>")
    return xml, kinds


def points_in_boxes(points: np.ndarray, boxes: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """(P, M) bool: point p inside box m (rotated in BEV, axis-aligned in z), boxes grown by ``margin``."""
    pts = np.asarray(points, dtype=np.float64)[:, None, :3]
    b = np.asarray(boxes, dtype=np.float64)[None]
    d = pts - b[..., :3]
    c, s = np.cos(b[..., 6]), np.sin(b[..., 6])
    lx = d[..., 0] * c + d[..., 1] * s
    ly = -d[..., 0] * s + d[..., 1] * c
    return ((np.abs(lx) <= b[..., 3] / 2 + margin) & (np.abs(ly) <= b[..., 4] / 2 + margin)
            & (np.abs(d[..., 2]) <= b[..., 5] / 2 + margin))


def generate_scan(seed: int, cfg: LidarSceneConfig | None = None) -> LidarScan:
    """One labelled scan, a pure function of ``seed``."""
    cfg = cfg or LidarSceneConfig()
    rng = np.random.default_rng(seed)
    objects, clutter = _sample_layout(cfg, rng)
    return _cast_scan(cfg, objects, clutter, rng, seed)


def _cast_scan(cfg: LidarSceneConfig, objects: list, clutter: list, rng: np.random.Generator, seed: int) -> LidarScan:
    """Ray-casts one scan of a laid-out scene (sensor frame); ``rng`` draws dropout and noise."""
    xml, kinds = _mjcf(cfg, objects, clutter)
    model = mujoco.MjModel.from_xml_string(xml)
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    rays = scan_rays(cfg)
    n = len(rays)
    geomid = np.full(n, -1, dtype=np.int32)
    dist = np.full(n, -1.0, dtype=np.float64)
    normal = np.zeros(3 * n, dtype=np.float64)
    origin = np.array([0.0, 0.0, cfg.sensor_height])
    mujoco.mj_multiRay(model, data, origin, rays.reshape(-1).astype(np.float64), None, 1, -1, geomid, dist, normal,
                       n, cfg.max_range)
    hit = (geomid >= 0) & (dist > 0)
    hit &= rng.random(n) >= cfg.dropout
    r = dist[hit] + rng.normal(0.0, cfg.range_noise, int(hit.sum()))
    dirs = rays[hit]
    xyz = dirs * r[:, None]  # sensor frame
    gid = geomid[hit]
    nrm = normal.reshape(-1, 3)[hit]
    cos_inc = np.abs(np.sum(nrm * dirs, axis=1))
    refl = np.array([_REFLECTIVITY[k] for k in kinds])[gid]
    inten = np.clip(refl * cos_inc + rng.normal(0.0, cfg.intensity_noise, len(r)), 0.0, 1.0)
    pr = cfg.point_range
    keep = ((xyz[:, 0] >= pr[0]) & (xyz[:, 0] < pr[3]) & (xyz[:, 1] >= pr[1]) & (xyz[:, 1] < pr[4])
            & (xyz[:, 2] >= pr[2]) & (xyz[:, 2] < pr[5]))
    xyz, gid, inten = xyz[keep], gid[keep], inten[keep]
    # geom 0 is the ground, geoms 1..len(objects) are the objects in order
    inst = np.where((gid >= 1) & (gid <= len(objects)), gid - 1, -1).astype(np.int32)
    boxes = np.array([b for _, b in objects], dtype=np.float32).reshape(-1, 7)
    classes = np.array([c for c, _ in objects], dtype=np.int32)
    counts = np.bincount(inst[inst >= 0], minlength=len(objects)).astype(np.int32)
    pts = np.concatenate([xyz, inten[:, None]], 1).astype(np.float32)
    return LidarScan(pts, inst, boxes, classes, counts, int(seed))


# ----------------------------------------------------------------------------- sequences (moving scenes)
@dataclass(frozen=True)
class LidarSequenceConfig:
    """Motion of a scan sequence: the ego drives straight ahead (+x), every object moves along its heading
    with a constant speed and yaw rate (a unicycle), clutter is static in the world."""

    dt_s: float = 0.1  # sim time between scans (a 10 Hz spinning LiDAR)
    ego_speed: tuple[float, float] = (2.0, 8.0)  # m/s, drawn once per sequence
    speed: tuple[tuple[float, float], ...] = ((0.0, 10.0), (0.0, 1.5), (1.0, 5.0))  # m/s per class (CLASSES)
    max_yaw_rate: float = 0.3  # rad/s, |ω| ~ U(0, max)

    def __post_init__(self) -> None:
        if not (self.dt_s > 0 and math.isfinite(self.dt_s)):
            raise ValueError(f"dt_s must be a positive number, got {self.dt_s}")
        if len(self.speed) != len(CLASSES):
            raise ValueError(f"speed needs one (lo, hi) per class {CLASSES}, got {self.speed}")


def _wrap(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi


def scan_sequence(seed: int, num_frames: int, cfg: LidarSceneConfig | None = None,
                  motion: LidarSequenceConfig | None = None, start: int = 0) -> list[LidarScan]:
    """Frames ``start .. start + num_frames - 1`` of one moving scene, a pure function of ``seed``.

    Frame ``t`` is the scene at time ``t · dt_s`` in the ego's sensor frame (the ego has moved ``v_ego · t ·
    dt_s`` along +x). Layout as :func:`generate_scan` (same ``rng`` draws for the layout, so frame 0 has the
    layout of ``generate_scan(seed)``); speeds from a second generator ``(seed, 1)``, per-frame dropout and noise
    from ``(seed, 2, t)``, so any frame can be made alone. Labels: every object's box at that time (boxes
    that left the crop have 0 points and are ignored by evaluation, as in single scans).
    """
    cfg = cfg or LidarSceneConfig()
    motion = motion or LidarSequenceConfig()
    if num_frames < 0 or start < 0:
        raise ValueError(f"num_frames and start must be >= 0, got {num_frames}, {start}")
    objects, clutter = _sample_layout(cfg, np.random.default_rng(seed))
    mrng = np.random.default_rng([seed, 1])
    v_ego = float(mrng.uniform(*motion.ego_speed))
    kin = [(float(mrng.uniform(*motion.speed[c])), float(mrng.uniform(-motion.max_yaw_rate, motion.max_yaw_rate)))
           for c, _ in objects]
    out = []
    for t in range(start, start + num_frames):
        tau = t * motion.dt_s
        moved = []
        for (c, b), (v, w) in zip(objects, kin, strict=True):
            x, y, z, length, width, height, yaw0 = (float(u) for u in b)
            if abs(w) < 1e-9:
                dx, dy = v * tau * math.cos(yaw0), v * tau * math.sin(yaw0)
            else:  # constant turn rate: an arc of radius v / w
                dx = v / w * (math.sin(yaw0 + w * tau) - math.sin(yaw0))
                dy = v / w * (math.cos(yaw0) - math.cos(yaw0 + w * tau))
            moved.append((c, np.array([x + dx - v_ego * tau, y + dy, z, length, width, height,
                                       _wrap(yaw0 + w * tau)])))
        shifted = [(kind, (p[0] - v_ego * tau, *p[1:])) for kind, p in clutter]
        out.append(_cast_scan(cfg, moved, shifted, np.random.default_rng([seed, 2, t]), seed))
    return out


def _seeds(split: str, n: int) -> list[int]:
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_SEEDS)}")
    rng = SPLIT_SEEDS[split]
    if n > len(rng):
        raise ValueError(f"split {split!r} has only {len(rng)} seeds, asked for {n}")
    return list(rng[:n])


def generate_split(split: str, n: int, cfg: LidarSceneConfig | None = None, progress: bool = True) -> list[LidarScan]:
    """The first ``n`` scans of a split (seeds from :data:`SPLIT_SEEDS`)."""
    from tqdm import tqdm

    seeds = _seeds(split, n)
    return [generate_scan(s, cfg) for s in tqdm(seeds, desc=f"lidar {split}", disable=not progress)]


def save_split(path: str | Path, scans: list[LidarScan], cfg: LidarSceneConfig) -> None:
    """Write scans in the documented ``.npz`` format (module docstring)."""
    def offsets(sizes: list[int]) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        points=np.concatenate([s.points for s in scans]).astype(np.float32),
        point_instance=np.concatenate([s.point_instance for s in scans]).astype(np.int32),
        point_offsets=offsets([len(s.points) for s in scans]),
        boxes=np.concatenate([s.boxes for s in scans]).astype(np.float32).reshape(-1, 7),
        box_class=np.concatenate([s.box_class for s in scans]).astype(np.int32),
        box_num_points=np.concatenate([s.box_num_points for s in scans]).astype(np.int32),
        box_offsets=offsets([len(s.boxes) for s in scans]),
        seeds=np.array([s.seed for s in scans], dtype=np.int64),
        classes=np.array(CLASSES),
        config=np.array(cfg.to_json()),
    )


def load_split(path: str | Path) -> tuple[list[LidarScan], LidarSceneConfig]:
    """Read a split written by :func:`save_split` (``allow_pickle=False``)."""
    with np.load(Path(path), allow_pickle=False) as z:
        required = {"points", "point_instance", "point_offsets", "boxes", "box_class", "box_num_points",
                    "box_offsets", "seeds", "classes", "config"}
        missing = required - set(z.files)
        if missing:
            raise ValueError(f"{path}: not a LiDAR split file, missing keys {sorted(missing)}")
        if tuple(str(c) for c in z["classes"]) != CLASSES:
            raise ValueError(f"{path}: classes {list(z['classes'])} != {list(CLASSES)}")
        po, bo = z["point_offsets"], z["box_offsets"]
        pts, inst, boxes = z["points"], z["point_instance"], z["boxes"]
        bcls, bnum, seeds = z["box_class"], z["box_num_points"], z["seeds"]
        scans = [LidarScan(pts[po[i]:po[i + 1]], inst[po[i]:po[i + 1]], boxes[bo[i]:bo[i + 1]],
                           bcls[bo[i]:bo[i + 1]], bnum[bo[i]:bo[i + 1]], int(seeds[i])) for i in range(len(seeds))]
        cfg = LidarSceneConfig.from_json(str(z["config"]))
    return scans, cfg
