"""Synthetic underwater stereo: rectified pairs rendered with MuJoCo + an attenuation/backscatter model.

One MuJoCo model holds a fixed pool of geoms (back wall, seabed, boxes, spheres, cylinders,
ellipsoids), a left and a right camera and one texture per geom. A *scene seed* re-poses,
re-sizes and re-textures the pool, picks a baseline, focal length (fovy), camera height and
pitch, then renders clean RGB and metric z-depth for both cameras. Re-posing an existing
model (instead of compiling one per scene) keeps a single GL context: rendering is ~ms per pair.

Rectification is exact by construction: both cameras share one orientation and the right
camera sits ``baseline`` metres along the left camera's x axis, so a point at z-depth ``Z``
appears on the same row with disparity ``d = f·b / Z`` (``f`` in pixels from fovy).

Underwater image formation (per colour channel c, applied to the clean radiance J on the fly so
one render serves every turbidity level; spec stereo.md §11):

    I_c = J_c · exp(−β_c k r) + B∞_c · (1 − exp(−β_c k r)) + noise,   β = (0.35, 0.12, 0.08), B∞ = (0.05, 0.25, 0.35)

with ``r`` the range along the pixel ray and ``k`` the turbidity multiplier (x1, x2, x3 ...).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "BACKSCATTER",
    "BETA",
    "SPLIT_SEEDS",
    "StereoRenderer",
    "StereoSample",
    "StereoSceneConfig",
    "disparity_from_depth",
    "generate_split",
    "load_split",
    "occlusion_mask",
    "procedural_texture",
    "underwater",
]

BETA = (0.35, 0.12, 0.08)  # attenuation per metre at k = 1 (R, G, B)
BACKSCATTER = (0.05, 0.25, 0.35)  # veiling light B∞ (R, G, B)

# Disjoint scene-seed ranges: textures and layouts are functions of the seed, so disjoint seeds
# also mean disjoint texture sets. Test seeds are never used for fitting or model selection.
SPLIT_SEEDS: dict[str, range] = {
    "train": range(100_000),
    "val": range(200_000, 210_000),
    "test": range(300_000, 310_000),
}

_N_BOX, _N_SPHERE, _N_CYL, _N_ELL = 5, 2, 2, 2


@dataclass(frozen=True)
class StereoSceneConfig:
    height: int = 64
    width: int = 128
    fovy_deg: tuple[float, float] = (42.0, 55.0)  # random focal length
    baseline_m: tuple[float, float] = (0.2, 0.5)  # as UW-StereoDepth-80K
    cam_height_m: tuple[float, float] = (0.8, 2.0)
    pitch_deg: tuple[float, float] = (0.0, 15.0)  # looking down towards the seabed
    object_depth_m: tuple[float, float] = (1.3, 7.0)
    wall_depth_m: tuple[float, float] = (6.0, 11.0)
    objects: tuple[int, int] = (3, 11)  # how many pool objects are placed
    textureless_prob: float = 0.15  # fraction of objects with a flat colour (no texture)
    texture_size: int = 64


@dataclass
class StereoSample:
    """One rendered pair (clean radiance; call :func:`underwater` for the water)."""

    left: np.ndarray  # (H, W, 3) float32 in [0, 1]
    right: np.ndarray
    depth_left: np.ndarray  # (H, W) float32 z-depth [m]
    depth_right: np.ndarray
    focal_px: float
    baseline_m: float
    seed: int
    meta: dict = field(default_factory=dict)

    @property
    def disparity(self) -> np.ndarray:
        return disparity_from_depth(self.depth_left, self.focal_px, self.baseline_m)


def disparity_from_depth(depth: np.ndarray, focal_px: float, baseline_m: float) -> np.ndarray:
    """Exact disparity of a rectified pair: ``d = f·b / Z`` (pixels)."""
    return (focal_px * baseline_m / np.maximum(depth, 1e-6)).astype(np.float32)


def occlusion_mask(disp_left: np.ndarray, disp_right: np.ndarray, tol_px: float = 1.0) -> np.ndarray:
    """True where a left pixel is visible in the right image (in view and left/right consistent).

    The left pixel (y, x) lands at x − d in the right image; it is occluded there when the right
    view sees something with a different disparity (a nearer surface) or x − d leaves the image.
    """
    _, w = disp_left.shape
    xs = np.arange(w, dtype=np.float32)[None, :] - disp_left
    in_view = xs >= 0.0
    xi = np.clip(np.round(xs).astype(np.int64), 0, w - 1)
    d_r = np.take_along_axis(disp_right, xi, axis=1)
    return in_view & (np.abs(d_r - disp_left) < tol_px)


def procedural_texture(rng: np.random.Generator, size: int, flat: bool = False) -> np.ndarray:
    """(size, size, 3) uint8 texture: multi-scale noise, stripes, checkers or blobs in a random palette."""
    import cv2

    c0, c1 = rng.uniform(0.05, 0.95, 3), rng.uniform(0.05, 0.95, 3)
    if flat:
        return np.broadcast_to((c0 * 255).astype(np.uint8), (size, size, 3)).copy()
    kind = rng.integers(4)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if kind == 0:  # multi-octave noise
        t = np.zeros((size, size), np.float32)
        for octave in range(4):
            n = rng.standard_normal((size, size)).astype(np.float32)
            s = size / 2 ** (octave + 1) / 3
            t += cv2.GaussianBlur(n, (0, 0), max(s, 0.6)) * (0.6 ** octave)
    elif kind == 1:  # oriented stripes with noise
        a = rng.uniform(0, math.pi)
        freq = rng.uniform(3, 12)
        t = np.sin(2 * math.pi * freq * (np.cos(a) * xx + np.sin(a) * yy) + rng.uniform(0, 6.3))
        t = t + 0.5 * cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), 1.0)
    elif kind == 2:  # checker
        n = int(rng.integers(3, 10))
        t = ((np.floor(xx * n) + np.floor(yy * n)) % 2).astype(np.float32)
        t = t + 0.3 * rng.standard_normal((size, size)).astype(np.float32)
    else:  # random blobs
        t = np.zeros((size, size), np.float32)
        for _ in range(int(rng.integers(8, 30))):
            cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.03, 0.15)
            t += ((xx - cx) ** 2 + (yy - cy) ** 2 < r * r).astype(np.float32) * rng.uniform(-1, 1)
        t = t + 0.2 * rng.standard_normal((size, size)).astype(np.float32)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    contrast = rng.uniform(0.3, 1.0)  # some low-contrast textures
    t = 0.5 + (t - 0.5) * contrast
    img = c0[None, None, :] * (1 - t[..., None]) + c1[None, None, :] * t[..., None]
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def _scene_xml(cfg: StereoSceneConfig) -> str:
    geoms, assets = [], []
    kinds = (["box"] * _N_BOX + ["sphere"] * _N_SPHERE + ["cylinder"] * _N_CYL + ["ellipsoid"] * _N_ELL)
    names = ["wall", "floor"] + [f"obj{i}" for i in range(len(kinds))]
    for n in names:
        assets.append(f'<texture name="t_{n}" type="2d" builtin="flat" width="{cfg.texture_size}" '
                      f'height="{cfg.texture_size}" rgb1="1 1 1"/>')
        assets.append(f'<material name="m_{n}" texture="t_{n}" texrepeat="1 1" specular="0.1" shininess="0.1"/>')
    geoms.append('<geom name="wall" type="box" size="0.05 30 30" pos="10 0 0" material="m_wall"/>')
    geoms.append('<geom name="floor" type="box" size="40 40 0.05" pos="0 0 -0.05" material="m_floor"/>')
    for i, k in enumerate(kinds):
        geoms.append(f'<geom name="obj{i}" type="{k}" size="0.3 0.3 0.3" pos="-50 0 0" material="m_obj{i}"/>')
    return f"""<mujoco model="stereo_scene">
  <visual><global offwidth="{max(cfg.width, 64)}" offheight="{max(cfg.height, 64)}"/>
    <map znear="0.02" zfar="60"/><quality shadowsize="0"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.5 0.5 0.5" specular="0 0 0"/></visual>
  <asset>{''.join(assets)}</asset>
  <worldbody>
    <light pos="2 0 8" dir="0.2 0 -1" diffuse="0.5 0.5 0.5" castshadow="false"/>
    {''.join(geoms)}
    <camera name="left" pos="0 0 1" xyaxes="0 -1 0 0 0 1" fovy="45"/>
    <camera name="right" pos="0 -0.3 1" xyaxes="0 -1 0 0 0 1" fovy="45"/>
  </worldbody>
</mujoco>"""


def _quat_from_euler(rng: np.random.Generator) -> np.ndarray:
    q = rng.standard_normal(4)
    return q / np.linalg.norm(q)


class StereoRenderer:
    """Re-poses one MuJoCo model per scene seed and renders a rectified pair (see module docstring)."""

    def __init__(self, cfg: StereoSceneConfig = StereoSceneConfig()) -> None:
        os.environ.setdefault("MUJOCO_GL", "egl")
        import mujoco

        self._mj = mujoco
        self.cfg = cfg
        self.model = mujoco.MjModel.from_xml_string(_scene_xml(cfg))
        self.data = mujoco.MjData(self.model)
        self.model.geom_rbound[:] = 100.0  # geoms are resized at run time: never frustum-cull them
        # MuJoCo's znear/zfar are fractions of the model extent: make them absolute metres
        self.model.vis.map.znear = 0.05 / self.model.stat.extent
        self.model.vis.map.zfar = 80.0 / self.model.stat.extent
        self.renderer = mujoco.Renderer(self.model, cfg.height, cfg.width)
        self.cam = {n: mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, n) for n in ("left", "right")}
        self.obj_ids = [mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_GEOM, f"obj{i}")
                        for i in range(_N_BOX + _N_SPHERE + _N_CYL + _N_ELL)]
        self.wall = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_GEOM, "wall")
        self.floor = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_GEOM, "floor")

    def close(self) -> None:
        self.renderer.close()

    def _set_textures(self, rng: np.random.Generator) -> list[bool]:
        m, size = self.model, self.cfg.texture_size
        flat = []
        for t in range(m.ntex):
            is_flat = bool(rng.random() < self.cfg.textureless_prob) and t >= 2  # wall/floor always textured
            tex = procedural_texture(rng, size, flat=is_flat)
            adr = m.tex_adr[t]
            m.tex_data[adr: adr + tex.size] = tex.reshape(-1)
            self._mj.mjr_uploadTexture(m, self.renderer._mjr_context, t)
            flat.append(is_flat)
        return flat

    def render(self, seed: int) -> StereoSample:
        cfg, m = self.cfg, self.model
        rng = np.random.default_rng([seed, 0x5732])
        flat = self._set_textures(rng)
        fovy = rng.uniform(*cfg.fovy_deg)
        baseline = rng.uniform(*cfg.baseline_m)
        cam_h = rng.uniform(*cfg.cam_height_m)
        pitch = math.radians(rng.uniform(*cfg.pitch_deg))
        # camera frame: x right (= −y world), y up, looking along +x world; pitch about the camera x axis
        xaxis = np.array([0.0, -1.0, 0.0])
        fwd = np.array([math.cos(pitch), 0.0, -math.sin(pitch)])
        yaxis = np.cross(xaxis, fwd)  # up, tilted with the pitch (x × y = −fwd: right-handed)
        rot = np.stack([xaxis, yaxis, -fwd], axis=1)  # columns: camera x, y, z in world
        quat = np.zeros(4)
        self._mj.mju_mat2Quat(quat, rot.reshape(-1))
        for name, off in (("left", 0.0), ("right", baseline)):
            c = self.cam[name]
            m.cam_pos[c] = np.array([0.0, 0.0, cam_h]) + off * xaxis
            m.cam_quat[c] = quat
            m.cam_fovy[c] = fovy
        focal = cfg.height / 2.0 / math.tan(math.radians(fovy) / 2.0)
        # layout: back wall, seabed texture scale, objects inside the view frustum
        wall_x = rng.uniform(*cfg.wall_depth_m)
        m.geom_pos[self.wall] = [wall_x, rng.uniform(-2, 2), 0.0]
        wq = np.zeros(4)
        self._mj.mju_euler2Quat(wq, np.array([0.0, rng.uniform(-0.3, 0.3), rng.uniform(-0.4, 0.4)]), "xyz")
        m.geom_quat[self.wall] = wq
        for g in (self.wall, self.floor):
            mat = m.geom_matid[g]
            m.mat_texrepeat[mat] = rng.uniform(0.15, 0.6, 2)  # repeats per metre: texels stay ~px-sized at 2–10 m
            m.mat_texuniform[mat] = True
        n_obj = int(rng.integers(*cfg.objects))
        order = rng.permutation(len(self.obj_ids))
        half_w = math.tan(math.radians(fovy) / 2.0) * cfg.width / cfg.height
        for rank, i in enumerate(order):
            g = self.obj_ids[i]
            if rank >= n_obj:
                m.geom_pos[g] = [-50.0, 0.0, 0.0]  # parked behind the cameras
                continue
            x = rng.uniform(*cfg.object_depth_m)
            y = rng.uniform(-half_w, half_w) * x * 0.9
            s = rng.uniform(0.2, 0.7) * (0.6 + 0.15 * x)
            z = rng.uniform(0.0, cam_h + 0.5 * s)
            m.geom_pos[g] = [x, y, z]
            m.geom_size[g] = s * rng.uniform(0.4, 1.2, 3)
            m.geom_quat[g] = _quat_from_euler(rng)
            mat = m.geom_matid[g]
            m.mat_texrepeat[mat] = rng.uniform(1, 3, 2)
            m.mat_texuniform[mat] = False
        self._mj.mj_forward(m, self.data)
        out = {}
        for name in ("left", "right"):
            self.renderer.disable_depth_rendering()
            self.renderer.update_scene(self.data, camera=name)
            rgb = self.renderer.render().astype(np.float32) / 255.0
            self.renderer.enable_depth_rendering()
            self.renderer.update_scene(self.data, camera=name)
            depth = self.renderer.render().astype(np.float32)
            self.renderer.disable_depth_rendering()
            out[name] = (rgb, depth)
        return StereoSample(out["left"][0], out["right"][0], out["left"][1], out["right"][1],
                            float(focal), float(baseline), int(seed),
                            {"fovy": float(fovy), "cam_height": float(cam_h), "pitch": float(pitch),
                             "n_objects": n_obj, "textureless_objects": int(sum(flat))})


def ray_range(depth: np.ndarray, focal_px: float) -> np.ndarray:
    """Range along each pixel ray from z-depth (pinhole, centred principal point)."""
    h, w = depth.shape
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    u = (u + 0.5 - w / 2) / focal_px
    v = (v + 0.5 - h / 2) / focal_px
    return depth * np.sqrt(1.0 + u * u + v * v)


def underwater(
    clean: np.ndarray,
    depth: np.ndarray,
    focal_px: float,
    turbidity: float,
    rng: np.random.Generator | None = None,
    *,
    beta: tuple[float, float, float] = BETA,
    backscatter: tuple[float, float, float] = BACKSCATTER,
    noise_std: float = 0.01,
) -> np.ndarray:
    """Attenuation + backscatter + sensor noise; returns uint8 (H, W, 3). ``turbidity`` = k ≥ 0."""
    if turbidity < 0 or not math.isfinite(turbidity):
        raise ValueError(f"turbidity must be a finite number >= 0, got {turbidity}")
    if clean.shape[:2] != depth.shape or clean.ndim != 3 or clean.shape[2] != 3:
        raise ValueError(f"clean image (H, W, 3) and depth (H, W) disagree: {clean.shape} vs {depth.shape}")
    r = ray_range(depth, focal_px)[..., None]
    t = np.exp(-np.asarray(beta, np.float32) * turbidity * r)
    img = clean * t + np.asarray(backscatter, np.float32) * (1.0 - t)
    if rng is not None and noise_std > 0:
        img = img + rng.normal(0.0, noise_std, img.shape).astype(np.float32)
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def generate_split(split: str, n: int, out: Path | str, cfg: StereoSceneConfig = StereoSceneConfig(),
                   progress: bool = True) -> Path:
    """Renders the first ``n`` seeds of ``split`` into one ``.npz`` (clean uint8 RGB + float16 depth)."""
    from tqdm import tqdm

    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}; choose one of {sorted(SPLIT_SEEDS)}")
    seeds = list(SPLIT_SEEDS[split])[:n]
    r = StereoRenderer(cfg)
    L, R, DL, DR, F, B = [], [], [], [], [], []
    try:
        for s in tqdm(seeds, desc=f"render {split}", disable=not progress):
            smp = r.render(s)
            L.append((smp.left * 255 + 0.5).astype(np.uint8))
            R.append((smp.right * 255 + 0.5).astype(np.uint8))
            DL.append(smp.depth_left)
            DR.append(smp.depth_right)
            F.append(smp.focal_px)
            B.append(smp.baseline_m)
    finally:
        r.close()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, left=np.stack(L), right=np.stack(R), depth_left=np.stack(DL).astype(np.float32),
                        depth_right=np.stack(DR).astype(np.float32), focal=np.array(F, np.float32),
                        baseline=np.array(B, np.float32), seeds=np.array(seeds, np.int64),
                        height=cfg.height, width=cfg.width, split=split)
    return out


def load_split(path: Path | str) -> dict[str, np.ndarray]:
    """Loads a split written by :func:`generate_split` (plain arrays; no pickle)."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
