"""UniLION scaling: forward time vs LiDAR voxel count and camera (image) token count, and the four modes (issue 17
item 5).

UniLION's claim is that modalities and time are just more tokens for one linear-RNN (LION) backbone, so the cost
grows linearly with the token count. One run, one process, a seeded untrained ``--preset`` model (``unilion_tiny``
by default; torch seed ``--seed``) on a real generated frame (``unilion_scenes.generate_sequence``, sequence seed
``--scene-seed``: the ``base`` variant; frame 0 fills the temporal memory, frame 1 is timed):

- ``voxels``: mode L, the LiDAR cloud of frame 1 at density factors ``--density``: ``f < 1`` keeps a random
  ``f`` of the points; ``f = k >= 2`` adds ``k − 1`` jittered copies, copy ``i`` shifted by
  ``N(0, (1 + i/2) · voxel size)`` per axis, so new voxels fill around the surfaces (points and voxels both grow);
  the VFE alone (``model.vfe``, whose cost follows the points) is timed in the same rounds, and the forward
  minus the VFE (difference of medians) is fitted against the tokens too;
- ``images``: mode LC on the default cloud with image sizes ``--image-sizes`` (at 2 cameras) and camera counts
  ``--cameras`` (at the preset's image size), each rendered by the scene generator (the LiDAR scan is the same
  for every camera setup: checked and recorded); ``image_size`` / ``num_cameras`` are architecture fields, so one
  model is built per setup with the same torch seed (the conv weights are then identical across sizes);
- ``modes``: L, LT, LC, LCT at the preset's sizes: tokens per kind, time per mode, ratio to L.

Every forward gets the streaming inputs (ego pose, time, scene id), so it also stores the memory for the next
frame, as a deployment would. Token counts come from the model's ``out["num_tokens"]`` (LiDAR, camera,
temporal, backbone output); the fits use the backbone's *input* tokens (LiDAR + camera + temporal, before
``input_merge``). Timing: eval mode, ``torch.no_grad``, ``--warmup`` untimed calls per point, then
``--repeats`` rounds, each timing every point once (interleaved, so load bursts on a shared box hit all points
alike); wall time (``perf_counter``; on CUDA with ``torch.cuda.synchronize`` before and after each call, so
host-side work of the sparse ops is included); median (p50) and p90 per point. At 1 CPU thread the thread's CPU
time is recorded too (robust when the box is shared). The first forward of the process (one-time setup) is
timed separately and excluded.

Fits: least squares ``time ≈ a + b · tokens`` per sweep and thread setting (``b``: marginal ms per 1k tokens,
``r2``), the log-log slope, and a degree-2 fit's share of the time at the largest count. The verdict
``linear`` is :data:`LINEARITY_RULE`. CPU runs time at 1 thread and at ``os.cpu_count()`` threads
(``--threads``). Writes ``bench_unilion.json``, ``bench_unilion.png`` and ``summary.md``:

    .venv/bin/python benchmarks/unilion.py --device cpu                     # CPU -> reports/unilion/scaling
    PYTHONPATH=src python benchmarks/unilion.py --device cuda               # a GPU machine -> $OUT
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
MODES = ("L", "LT", "LC", "LCT")
# camera yaw sets (degrees, ego frame) per camera count; 2 is the scene generator's default
CAMERA_YAWS: dict[int, tuple[float, ...]] = {1: (0.0,), 2: (30.0, -30.0), 3: (45.0, 0.0, -45.0),
                                             4: (60.0, 20.0, -20.0, -60.0)}
R2_MIN, QUAD_SHARE_MAX = 0.97, 0.2
LINEARITY_RULE = (f"linear when the least-squares line has R^2 >= {R2_MIN} and a degree-2 fit's x^2 term is at "
                  f"most {QUAD_SHARE_MAX:.0%} of the time at the largest token count")


# --------------------------------------------------------------------------- inputs
def scene_config(model_cfg: Any, image_size: Sequence[int], yaws: Sequence[float]) -> Any:
    """A 2-frame scene config matching the model's grid and camera setup."""
    from latentstack.sim import unilion_scenes as us

    kw: dict[str, Any] = {"num_frames": 2, "image_size": tuple(image_size), "camera_yaws_deg": tuple(yaws)}
    if tuple(model_cfg.point_range) != us.UniSceneConfig().point_range:  # a smaller grid: objects placed inside
        x0, y0, _, x1, y1, _ = model_cfg.point_range
        kw.update(point_range=tuple(model_cfg.point_range), place_x=(4.0, x1 - 1.6), place_y=y1 - 0.8,
                  bev_range=(x0, y0, x1, y1))
    return us.UniSceneConfig(**kw)


def density_cloud(points: np.ndarray, factor: float, voxel_size: Sequence[float], seed: int = 0) -> np.ndarray:
    """The cloud at ``factor`` × its density: a random subset for ``factor < 1``; for an integer ``factor >= 2``
    the cloud plus ``factor − 1`` copies, copy ``i`` (1-based) jittered by ``N(0, (1 + i/2) · voxel_size)``."""
    rng = np.random.default_rng(seed)
    if factor <= 0:
        raise ValueError(f"density factor must be > 0, got {factor}")
    if factor < 1:
        keep = np.sort(rng.choice(len(points), max(1, round(factor * len(points))), replace=False))
        return points[keep]
    k = round(factor)
    if abs(factor - k) > 1e-9:
        raise ValueError(f"density factors >= 1 must be integers (copies), got {factor}")
    sig = np.asarray(voxel_size[:3], np.float64)
    copies = [points]
    for i in range(1, k):
        xyz = points[:, :3] + rng.normal(0.0, 1.0, (len(points), 3)) * sig * (1 + i / 2)
        copies.append(np.concatenate([xyz, points[:, 3:]], 1))
    return np.concatenate(copies).astype(np.float32)


def streaming_inputs(model: Any, frames: Sequence[Any], scfg: Any, points: np.ndarray | None = None
                     ) -> list[dict[str, Any]]:
    """Processor outputs (on the model's device) of the frames; ``points`` replaces the last frame's cloud."""
    from latentstack.sim import unilion_scenes as us

    intr, c2e = us.camera_calibration(scfg)
    out = []
    for i, f in enumerate(frames):
        cloud = points if (points is not None and i == len(frames) - 1) else f.points
        out.append(model.processor([cloud], images=[f.images], intrinsics=[intr], cam2ego=[c2e],
                                   ego_pose=[f.ego_pose], time_s=[f.time_s], scene_id=[f.seq_seed]))
    return out


# --------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(fns: Sequence[Callable[[], Any]], device: torch.device, repeats: int, warmup: int
                     ) -> list[dict[str, Any]]:
    """Wall time of each ``fn`` (device-synchronised) over ``repeats`` rounds after ``warmup`` untimed calls each.
    Each round calls every ``fn`` once, in order, so a burst of load on a shared machine hits all points alike
    instead of one. Per ``fn``: p50, p90 (ms), the raw times, and the calling thread's CPU time p50 (CPU at one
    thread only: other threads' work is not in it)."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    wall: list[list[float]] = [[] for _ in fns]
    cpu: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            _sync(device)
            t0, c0 = time.perf_counter(), time.thread_time()
            fn()
            _sync(device)
            wall[i].append((time.perf_counter() - t0) * 1e3)
            cpu[i].append((time.thread_time() - c0) * 1e3)
    one_thread_cpu = device.type == "cpu" and torch.get_num_threads() == 1
    return [{"wall_ms_p50": statistics.median(w), "wall_ms_p90": float(np.percentile(w, 90)),
             "wall_ms": [round(t, 3) for t in w], "thread_cpu_ms_p50": statistics.median(c) if one_thread_cpu else None}
            for w, c in zip(wall, cpu)]


def prepare_point(model: Any, inputs: list[dict[str, Any]], mode: str) -> tuple[dict[str, Any], Callable[[], Any]]:
    """The last frame of ``inputs`` in ``mode`` (T: with the memory of the frame before it, run in the same mode
    without T): its token counts and a closure running that forward (call it under ``torch.no_grad``)."""
    memory = None
    with torch.no_grad():
        if "T" in mode:
            _, memory = model(mode=mode.replace("T", ""), **inputs[-2])
        out, _ = model(mode=mode, memory=memory, **inputs[-1])
    n = [int(v) for v in out["num_tokens"].tolist()]
    row: dict[str, Any] = {"mode": mode, "num_tokens": dict(zip(("lidar", "camera", "temporal", "backbone_out"), n)),
                           "input_tokens": n[0] + n[1] + n[2], "points": len(inputs[-1]["points"])}
    return row, lambda: model(mode=mode, memory=memory, **inputs[-1])


# --------------------------------------------------------------------------- fits
def linear_fit(x: Sequence[float], y: Sequence[float], covariate: Sequence[float] | None = None) -> dict[str, Any]:
    """Least squares ``y ≈ a + b·x`` (R²), log-log slope, and the x² term's share of y at max x (degree-2 fit);
    ``linear`` by :data:`LINEARITY_RULE`. With ``covariate`` (e.g. points: the VFE's cost; pixels: the image
    CNN's) both fits get a ``+ c·covariate`` term, so the verdict is about ``x`` with that cost accounted for.
    Fewer than 3 distinct x (4 with a covariate): nothing to judge (all None)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    cov = [] if covariate is None else [np.asarray(covariate, np.float64)]
    if len(np.unique(x)) < 3 + len(cov):
        return {"a": None, "b": None, "c": None, "r2": None, "loglog_slope": None, "quad_share": None,
                "linear": None, "n": len(x)}
    design = np.stack([np.ones_like(x), x, *cov], 1)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    ss_res = float(((y - design @ coef) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    quad, *_ = np.linalg.lstsq(np.stack([np.ones_like(x), x, x ** 2, *cov], 1), y, rcond=None)
    i = int(np.argmax(x))
    quad_share = float(quad[2] * x[i] ** 2 / y[i])
    slope = float(np.polyfit(np.log(x), np.log(y), 1)[0]) if (x > 0).all() and (y > 0).all() else None
    return {"a": float(coef[0]), "b": float(coef[1]), "b_per_1k": float(coef[1]) * 1e3,
            "c": float(coef[2]) if cov else None, "r2": r2, "loglog_slope": slope, "quad_share": quad_share,
            "linear": bool(r2 >= R2_MIN and abs(quad_share) <= QUAD_SHARE_MAX), "n": len(x)}


def marginal_per_1k(x: Sequence[float], y: Sequence[float]) -> list[float | None]:
    """(Δy / Δx) · 1000 between consecutive points in x order: a line has these all equal, a convex curve rising."""
    order = np.argsort(np.asarray(x, np.float64))
    xs, ys = np.asarray(x, np.float64)[order], np.asarray(y, np.float64)[order]
    return [float((ys[i + 1] - ys[i]) / (xs[i + 1] - xs[i]) * 1e3) if xs[i + 1] > xs[i] else None
            for i in range(len(xs) - 1)]


def fits_for(rows: list[dict[str, Any]], x_key: Callable[[dict[str, Any]], float],
             cov_key: Callable[[dict[str, Any]], float] | None = None, prefix: str = "") -> dict[str, Any]:
    """Fits of the rows' ``{prefix}wall_ms_p50`` (and, at one CPU thread, ``{prefix}thread_cpu_ms_p50``)."""
    xs = [x_key(r) for r in rows]
    cov = None if cov_key is None else [cov_key(r) for r in rows]
    res = {"wall_p50": linear_fit(xs, [r[f"{prefix}wall_ms_p50"] for r in rows], cov)}
    if rows and all(r[f"{prefix}thread_cpu_ms_p50"] is not None for r in rows):
        res["thread_cpu_p50"] = linear_fit(xs, [r[f"{prefix}thread_cpu_ms_p50"] for r in rows], cov)
    for clock, f in res.items():
        f["marginal_ms_per_1k"] = marginal_per_1k(xs, [r[f"{prefix}{clock.replace('_p50', '_ms_p50')}"] for r in rows])
    return res


# --------------------------------------------------------------------------- machine
def machine_info(device: torch.device) -> dict[str, Any]:
    from latentstack.core.device import cpu_model_name

    info: dict[str, Any] = {"cpu": cpu_model_name(), "cores": os.cpu_count(), "python": platform.python_version(),
                            "torch": torch.__version__, "device": str(device),
                            "load_avg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    try:
        from latentstack.kernels import cpp_available

        info["cpp_scan"] = bool(cpp_available())
    except ImportError:
        pass
    return info


# --------------------------------------------------------------------------- main
def _size(s: str) -> tuple[int, int]:
    h, w = s.lower().split("x")
    return int(h), int(w)


def build_model(preset: str, seed: int, device: torch.device, **arch: Any) -> Any:
    from latentstack.perception.unilion import UniLION, get_preset

    torch.manual_seed(seed)  # same seed for every size: identical conv / backbone weights
    return UniLION(get_preset(preset, **arch)).eval().to(device)


def run(args: argparse.Namespace, device: torch.device, log: Callable[[str], None]) -> dict[str, Any]:
    from latentstack.perception.unilion import get_preset
    from latentstack.sim import unilion_scenes as us

    base_cfg = get_preset(args.preset)
    seed = us.SPLIT_SEEDS["train"][0] if args.scene_seed is None else args.scene_seed
    default_yaws = CAMERA_YAWS.get(base_cfg.num_cameras, CAMERA_YAWS[2])
    setups: list[tuple[str, tuple[int, int], int]] = [(f"{h}x{w} x{2}cam", (h, w), 2) for h, w in args.image_sizes]
    setups += [(f"{base_cfg.image_size[0]}x{base_cfg.image_size[1]} x{n}cam", tuple(base_cfg.image_size), n)
               for n in args.cameras if (tuple(base_cfg.image_size), n) not in {(s, c) for _, s, c in setups}]
    t0 = time.perf_counter()
    scenes: dict[tuple[tuple[int, int], int], tuple[list[Any], Any]] = {}
    for _, size, n in [("default", tuple(base_cfg.image_size), base_cfg.num_cameras), *setups]:
        if (size, n) not in scenes:
            scfg = scene_config(base_cfg, size, CAMERA_YAWS.get(n, default_yaws))
            scenes[(size, n)] = (us.generate_sequence(seed, scfg), scfg)
    frames, scfg = scenes[(tuple(base_cfg.image_size), base_cfg.num_cameras)]
    same_lidar = all(np.array_equal(fr[1].points, frames[1].points) for fr, _ in scenes.values())
    scene = {"seed": int(seed), "variant": frames[0].variant, "points_per_frame": [len(f.points) for f in frames],
             "lidar_identical_across_camera_setups": same_lidar, "generation_s": round(time.perf_counter() - t0, 2)}
    log(f"scene seed {seed} ({scene['variant']}): {scene['points_per_frame']} points, "
        f"{len(scenes)} camera setups rendered in {scene['generation_s']} s")

    model = build_model(args.preset, args.seed, device)
    inputs = streaming_inputs(model, frames, scfg)
    t_first = time.perf_counter()
    with torch.no_grad():
        _sync(device)
        model(mode="L", **inputs[1])
        _sync(device)
    first_call_s = time.perf_counter() - t_first
    clouds = {f: density_cloud(frames[1].points, f, base_cfg.voxel_size, seed=args.seed) for f in args.density}
    image_models = {(size, n): build_model(args.preset, args.seed, device, image_size=size, num_cameras=n)
                    for _, size, n in setups}

    thread_settings = args.threads if device.type == "cpu" else [torch.get_num_threads()]
    runs: dict[str, Any] = {}
    restore = torch.get_num_threads()
    try:
        for nt in thread_settings:
            torch.set_num_threads(nt)
            key = f"threads{nt}" if device.type == "cpu" else device.type
            r: dict[str, Any] = {"torch_threads": nt, "voxels": [], "images": [], "modes": {}}
            cases: list[tuple[dict[str, Any], Callable[[], Any], str]] = []  # (row, forward, key prefix)
            for f in args.density:
                inp = streaming_inputs(model, frames, scfg, clouds[f])
                row, fn = prepare_point(model, inp, "L")
                r["voxels"].append({"density": f, **row})
                cases.append((r["voxels"][-1], fn, ""))
                # the VFE alone (its cost follows the points, not the tokens), timed in the same rounds
                cases.append((r["voxels"][-1], lambda inp=inp: model.vfe(inp[-1]["points"], 1), "vfe_"))
            for label, size, n in setups:
                m = image_models[(size, n)]
                fr, sc = scenes[(size, n)]
                row, fn = prepare_point(m, streaming_inputs(m, fr, sc), "LC")
                r["images"].append({"setup": label, "image_size": list(size), "num_cameras": n,
                                    "pixels": n * size[0] * size[1], **row})
                cases.append((r["images"][-1], fn, ""))
            for mode in MODES:
                row, fn = prepare_point(model, inputs, mode)
                r["modes"][mode] = row
                cases.append((row, fn, ""))
            with torch.no_grad():
                times = time_interleaved([fn for _, fn, _ in cases], device, args.repeats, args.warmup)
            for (row, _, prefix), t in zip(cases, times):
                row.update({prefix + k: v for k, v in t.items()})
            for row in r["voxels"]:  # difference of medians: the forward after the VFE
                row["after_vfe_wall_ms_p50"] = row["wall_ms_p50"] - row["vfe_wall_ms_p50"]
                row["after_vfe_thread_cpu_ms_p50"] = (None if row["thread_cpu_ms_p50"] is None else
                                                      row["thread_cpu_ms_p50"] - row["vfe_thread_cpu_ms_p50"])
            base = r["modes"]["L"]["wall_ms_p50"]
            r["ratio_to_L"] = {mode: r["modes"][mode]["wall_ms_p50"] / base for mode in MODES}
            r["fits"] = {"voxels_vs_lidar_tokens": fits_for(r["voxels"], lambda x: x["num_tokens"]["lidar"]),
                         "voxels_vs_lidar_tokens+points": fits_for(r["voxels"], lambda x: x["num_tokens"]["lidar"],
                                                                   lambda x: x["points"]),
                         "voxels_after_vfe_vs_lidar_tokens": fits_for(r["voxels"], lambda x: x["num_tokens"]["lidar"],
                                                                      prefix="after_vfe_"),
                         "voxels_vs_points": fits_for(r["voxels"], lambda x: x["points"]),
                         "images_vs_input_tokens": fits_for(r["images"], lambda x: x["input_tokens"]),
                         "images_vs_pixels": fits_for(r["images"], lambda x: x["pixels"]),
                         "modes_vs_input_tokens": fits_for(list(r["modes"].values()), lambda x: x["input_tokens"])}
            fv = r["fits"]["voxels_vs_lidar_tokens"]["wall_p50"]
            fi = r["fits"]["images_vs_input_tokens"]["wall_p50"]
            log(f"{key}: voxels {_fmt(fv.get('b_per_1k'))} ms/1k tokens (R2 {_fmt(fv['r2'])}, linear {fv['linear']}); "
                f"images {_fmt(fi.get('b_per_1k'))} ms/1k tokens (R2 {_fmt(fi['r2'])}); LCT/L "
                f"{r['ratio_to_L']['LCT']:.2f}")
            runs[key] = r
    finally:
        torch.set_num_threads(restore)
    return {"scene": scene, "first_call_s": first_call_s, "runs": runs}


def headline(result: dict[str, Any]) -> dict[str, Any]:
    """Per thread setting: marginal cost per 1k tokens, R², the verdict, and LCT / L."""
    out = {}
    for key, r in result["runs"].items():
        fv = r["fits"]["voxels_vs_lidar_tokens"]["wall_p50"]
        fi = r["fits"]["images_vs_input_tokens"]["wall_p50"]
        fvp = r["fits"]["voxels_after_vfe_vs_lidar_tokens"]["wall_p50"]
        out[key] = {"voxel_ms_per_1k_tokens": fv.get("b_per_1k"), "voxel_r2": fv["r2"], "voxel_linear": fv["linear"],
                    "voxel_after_vfe_ms_per_1k_tokens": fvp.get("b_per_1k"), "voxel_after_vfe_r2": fvp["r2"],
                    "voxel_after_vfe_linear": fvp["linear"],
                    "image_ms_per_1k_tokens": fi.get("b_per_1k"), "image_r2": fi["r2"], "image_linear": fi["linear"],
                    "lct_over_l": r["ratio_to_L"]["LCT"]}
    return out


def reading(result: dict[str, Any]) -> list[str]:
    """One bullet per run, generated from the numbers (so a rerun cannot leave a stale sentence behind)."""
    out = []
    for key, r in result["runs"].items():
        fv = r["fits"]["voxels_vs_lidar_tokens"]["wall_p50"]
        fa = r["fits"]["voxels_after_vfe_vs_lidar_tokens"]["wall_p50"]
        fi = r["fits"]["images_vs_input_tokens"]["wall_p50"]
        fp = r["fits"]["images_vs_pixels"]["wall_p50"]
        if fv["a"] is None or fi["a"] is None:
            out.append(f"- {key}: too few distinct token counts to fit.")
            continue
        marg = [m for m in fv["marginal_ms_per_1k"] if m is not None]
        vfe = max(row["vfe_wall_ms_p50"] / row["wall_ms_p50"] for row in r["voxels"])
        ratios = " / ".join(f"×{r['ratio_to_L'][m]:.2f}" for m in MODES[1:])
        out.append(
            f"- {key}: LiDAR tokens {min(x['num_tokens']['lidar'] for x in r['voxels'])}–"
            f"{max(x['num_tokens']['lidar'] for x in r['voxels'])}: time ≈ {fv['a']:.0f} ms + {fv['b_per_1k']:.1f} ms "
            f"per 1k tokens (R² {fv['r2']:.3f}, marginal {min(marg):.0f}–{max(marg):.0f} ms per 1k between points, "
            f"x² share {fv['quad_share']:.2f}: {'linear' if fv['linear'] else 'not linear'} by the rule); without "
            f"the VFE (at most {vfe:.0%} of a forward) {fa['b_per_1k']:.1f} ms per 1k, R² {fa['r2']:.3f}. Camera "
            f"tokens (LC): {fi['b_per_1k']:.1f} ms per 1k tokens, R² {fi['r2']:.3f}, x² share {fi['quad_share']:.2f} "
            f"({'linear' if fi['linear'] else 'not linear'} by the rule; against pixels R² {fp['r2']:.3f}). "
            f"LT / LC / LCT cost {ratios} of L.")
    return out


def _fmt(v: Any, nd: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return str(v)
    return f"{v:.{nd}g}" if isinstance(v, float) else str(v)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    for key, r in runs.items():
        for ax, rows, tok, fit_key, lab in (
                (axes[0], r["voxels"], lambda x: x["num_tokens"]["lidar"], "voxels_vs_lidar_tokens", "LiDAR voxels"),
                (axes[1], r["images"], lambda x: x["input_tokens"], "images_vs_input_tokens", "tokens")):
            if not rows:
                continue
            x = np.array([tok(row) for row in rows], float)
            y = np.array([row["wall_ms_p50"] for row in rows])
            p90 = np.array([row["wall_ms_p90"] for row in rows])
            order = np.argsort(x)
            line = ax.errorbar(x[order], y[order], yerr=[np.zeros(len(x)), (p90 - y)[order]], fmt="o", capsize=2,
                               label=f"{key} p50 (bar: p90)")
            if fit_key == "voxels_vs_lidar_tokens":  # the same forwards without the VFE's (point-bound) time
                ya = np.array([row["after_vfe_wall_ms_p50"] for row in rows])
                ax.plot(x[order], ya[order], "x--", color=line[0].get_color(), alpha=0.7, label=f"{key} after the VFE")
            f = r["fits"][fit_key]["wall_p50"]
            if f["a"] is not None:
                xx = np.linspace(0, x.max() * 1.05, 50)
                ax.plot(xx, f["a"] + f["b"] * xx, ":", color=line[0].get_color(),
                        label=f"{key} fit {f['a']:.0f} + {f['b_per_1k']:.1f}/1k·n, R² {f['r2']:.3f}")
    axes[0].set_xlabel("LiDAR voxel tokens (mode L, density sweep)")
    axes[1].set_xlabel("LiDAR + camera tokens (mode LC, image size / camera sweep)")
    for ax in axes[:2]:
        ax.set_ylabel("forward wall time (ms)")
        ax.legend(fontsize=7)
        ax.set_ylim(bottom=0)
    for row in next(iter(runs.values()))["images"]:
        axes[1].annotate(row["setup"], (row["input_tokens"], row["wall_ms_p50"]), fontsize=6,
                         textcoords="offset points", xytext=(3, -8))
    ax = axes[2]
    width = 0.8 / max(1, len(runs))
    for j, (key, r) in enumerate(runs.items()):
        ys = [r["modes"][m]["wall_ms_p50"] for m in MODES]
        bars = ax.bar(np.arange(len(MODES)) + j * width, ys, width, label=key)
        for b, m in zip(bars, MODES):
            ax.annotate(f"×{r['ratio_to_L'][m]:.2f}", (b.get_x() + b.get_width() / 2, b.get_height()),
                        ha="center", va="bottom", fontsize=7)
    first = next(iter(runs.values()))["modes"]
    ax.set_xticks(np.arange(len(MODES)) + width * (len(runs) - 1) / 2,
                  [f"{m}\n{first[m]['input_tokens']} tok" for m in MODES])
    ax.set_ylabel("forward wall time p50 (ms)")
    ax.set_title("modes at the preset's sizes (× L)", fontsize=9)
    ax.legend(fontsize=7)
    fig.suptitle(f"UniLION ({result['preset']}, untrained, seed {result['seed']}) on {result['env']['device']}: "
                 f"time vs tokens", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summary_md(result: dict[str, Any]) -> str:
    env, runs = result["env"], result["runs"]
    dev = env.get("gpu", env["cpu"])
    lines = [f"# UniLION scaling (`benchmarks/unilion.py`) on {env['device']} ({dev})", "",
             (f"Command: `{result['command']}`; torch {env['torch']}, Python {env['python']}, {env['cores']} cores, "
             f"load average at start / end {_fmt(env['load_avg_at_start'])} / {_fmt(env.get('load_avg_at_end'))}."),
             "", (f"Preset `{result['preset']}` (untrained, torch seed {result['seed']}); scene seed "
             f"{result['scene']['seed']} ({result['scene']['variant']}), frame 1 timed "
             f"({result['scene']['points_per_frame'][1]} points), frame 0 fills the memory. {result['repeats']} timed "
             f"forwards after {result['warmup']} untimed per point, eval, no grad, wall time (p50 / p90 ms). The "
             f"first forward of the process took {result['first_call_s']:.2f} s (one-time setup, excluded).")]
    if result.get("note"):
        lines += ["", f"**Note:** {result['note']}"]
    lines += ["", "## Headline (wall p50)", "", ("| run | voxels: ms per 1k tokens | R² | linear | after the VFE: ms "
              "per 1k tokens | R² | linear | images: ms per 1k tokens | R² | linear | LCT / L |"),
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, h in result["headline"].items():
        lines.append(f"| {key} | {_fmt(h['voxel_ms_per_1k_tokens'])} | {_fmt(h['voxel_r2'])} | {_fmt(h['voxel_linear'])}"
                     f" | {_fmt(h['voxel_after_vfe_ms_per_1k_tokens'])} | {_fmt(h['voxel_after_vfe_r2'])} | "
                     f"{_fmt(h['voxel_after_vfe_linear'])} | {_fmt(h['image_ms_per_1k_tokens'])} | "
                     f"{_fmt(h['image_r2'])} | {_fmt(h['image_linear'])} | {_fmt(h['lct_over_l'])} |")
    lines += ["", f"Rule: {LINEARITY_RULE}.", "", "## Reading", ""] + reading(result) + [
        "", ("Caveats: the weights are untrained, so the camera token count follows an untrained depth distribution "
             "(top-k bins per feature pixel; a trained model concentrates it); the image sweep mixes image sizes "
             "and camera counts; the density sweep grows points and voxels together (hence the VFE column); the "
             "intercept a is the token-independent part (dense BEV backbone and heads).")]
    for key, r in runs.items():
        lines += ["", f"## {key}", "", "### LiDAR voxels (mode L)", "",
                  ("| density | points | LiDAR tokens | backbone out | p50 ms | p90 ms | thread CPU p50 ms | VFE p50 ms "
                   "| after VFE p50 ms |"), "|---|---|---|---|---|---|---|---|---|"]
        for row in r["voxels"]:
            t = row["num_tokens"]
            lines.append(f"| {_fmt(row['density'])} | {row['points']} | {t['lidar']} | {t['backbone_out']} | "
                         f"{_fmt(row['wall_ms_p50'])} | {_fmt(row['wall_ms_p90'])} | {_fmt(row['thread_cpu_ms_p50'])} | "
                         f"{_fmt(row['vfe_wall_ms_p50'])} | {_fmt(row['after_vfe_wall_ms_p50'])} |")
        lines += ["", "### Image tokens (mode LC)", "",
                  "| setup | pixels | LiDAR | camera | backbone out | p50 ms | p90 ms | thread CPU p50 ms |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in r["images"]:
            t = row["num_tokens"]
            lines.append(f"| {row['setup']} | {row['pixels']} | {t['lidar']} | {t['camera']} | {t['backbone_out']} | "
                         f"{_fmt(row['wall_ms_p50'])} | {_fmt(row['wall_ms_p90'])} | {_fmt(row['thread_cpu_ms_p50'])} |")
        lines += ["", "### Modes (preset sizes)", "",
                  "| mode | LiDAR | camera | temporal | backbone out | p50 ms | p90 ms | × L |", "|---|---|---|---|---|---|---|---|"]
        for m, row in r["modes"].items():
            t = row["num_tokens"]
            lines.append(f"| {m} | {t['lidar']} | {t['camera']} | {t['temporal']} | {t['backbone_out']} | "
                         f"{_fmt(row['wall_ms_p50'])} | {_fmt(row['wall_ms_p90'])} | {_fmt(r['ratio_to_L'][m])} |")
        lines += ["", "### Fits (time ≈ a + b · x [+ c · covariate]; x and covariate named by the sweep, `+`)", "",
                  ("| sweep | clock | a ms | b ms per 1k x | c ms per 1k covariate | R² | log-log slope | "
                   "x² share at max | linear | marginal ms per 1k x, consecutive points |"),
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for name, fs in r["fits"].items():
            for clock, f in fs.items():
                c = f.get("c")
                lines.append(f"| {name} | {clock} | {_fmt(f['a'])} | {_fmt(f.get('b_per_1k'))} | "
                             f"{_fmt(None if c is None else c * 1e3)} | {_fmt(f['r2'])} | {_fmt(f['loglog_slope'])} | "
                             f"{_fmt(f['quad_share'])} | {_fmt(f['linear'])} | "
                             + ", ".join(f"{v:.3g}" if v is not None else "—" for v in f["marginal_ms_per_1k"]) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--out", type=Path, default=None,
                    help="output folder (default: $OUT on CUDA when set, else reports/unilion/scaling)")
    ap.add_argument("--preset", default="unilion_tiny")
    ap.add_argument("--seed", type=int, default=0, help="torch seed of the (untrained) models; jitter seed")
    ap.add_argument("--scene-seed", type=int, default=None, help="sequence seed (default: the first train seed)")
    ap.add_argument("--threads", type=int, nargs="+", default=None,
                    help="CPU thread settings (default: 1 and os.cpu_count())")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--density", type=float, nargs="+", default=[0.25, 0.5, 1, 2, 4, 8, 16])
    ap.add_argument("--image-sizes", type=_size, nargs="+", default=[(32, 48), (64, 96), (96, 144), (128, 192)],
                    help="HxW at 2 cameras")
    ap.add_argument("--cameras", type=int, nargs="+", default=[1, 2, 3, 4],
                    help=f"camera counts at the preset's image size (yaws: {CAMERA_YAWS})")
    ap.add_argument("--note", default="", help="a sentence for the summary (e.g. how the machine was shared)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but torch.cuda.is_available() is false here; use --device cpu")
    if any(n not in CAMERA_YAWS for n in args.cameras):
        ap.error(f"--cameras must be among {sorted(CAMERA_YAWS)}")
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    if args.threads is None:
        args.threads = sorted({1, os.cpu_count() or 1})
    out_dir = args.out
    if out_dir is None:
        out_dir = Path(os.environ["OUT"]) if device.type == "cuda" and os.environ.get("OUT") else \
            ROOT / "reports" / "unilion" / "scaling"
    out_dir.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(f"[unilion] {msg}", file=sys.stderr, flush=True)

    env = machine_info(device)
    t0 = time.perf_counter()
    res = run(args, device, log)
    env["load_avg_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    argv_list = sys.argv[1:] if argv is None else argv
    niceness = os.nice(0) if hasattr(os, "nice") else 0  # the run's priority is part of its command on a shared box
    result: dict[str, Any] = {
        "command": (f"nice -n {niceness} " if niceness > 0 else "")
                   + (".venv/bin/python" if device.type == "cpu" else "PYTHONPATH=src python")
                   + " benchmarks/unilion.py " + " ".join(shlex.quote(a) for a in argv_list),
        "env": env, "preset": args.preset, "seed": args.seed, "repeats": args.repeats, "warmup": args.warmup,
        "density": args.density, "note": args.note, "linearity_rule": LINEARITY_RULE, **res}
    result["headline"] = headline(result)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    (out_dir / "bench_unilion.json").write_text(json.dumps(result, indent=1) + "\n")
    try:
        plot(result, out_dir / "bench_unilion.png")
    except ImportError as exc:  # matplotlib missing on a bare GPU machine: the JSON is what counts
        log(f"no plot: {exc!r}")
    (out_dir / "summary.md").write_text(summary_md(result))
    log(f"wrote {out_dir / 'bench_unilion.json'}, bench_unilion.png, summary.md in {result['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
