"""Held-out evaluation: SA2-tiny vs the ConvGRU twin vs OpenCV SGBM in one run, per turbidity.

Every method sees the same underwater pixels (noise seeded by scene seed and k). Disparity
metrics are pooled over non-occluded pixels of the split, plus two diagnostic masks:
``large`` (true disparity > 12 px) and ``textureless`` (clean local std < 0.012) — both
intersected with non-occluded. Depth metrics are per image (spec §8). The MDE initialisation
of the SA2 model (mono prior alone, no stereo refinement) is scored too, as a control.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentstack.stats import percentile_ms

from .data import StereoSplit, textureless_mask
from .metrics import DisparityAccumulator, depth_metrics, summarize_depth
from .model import SA2Tiny
from .processor_stereo import model_device
from .sgbm import SGBMConfig, sgbm_disparity

__all__ = ["LARGE_DISP_PX", "evaluate_methods", "paired_wins", "plot_report", "write_json"]

LARGE_DISP_PX = 12.0
DEFAULT_SGBM = SGBMConfig()
MASKS = ("noc", "large", "textureless")


def evaluate_methods(models: dict[str, SA2Tiny], data: StereoSplit, turbidities: tuple[float, ...],
                     sgbm: SGBMConfig | None = DEFAULT_SGBM, iters: int | None = None, limit: int | None = None,
                     init_control: str | None = None, batch_size: int = 8, progress: bool = True) -> dict[str, Any]:
    """Scores every method on the first ``limit`` pairs of ``data`` at each turbidity.

    Returns pooled disparity tables per mask, per-image depth tables, per-image EPE lists (for
    paired comparisons) and latency percentiles (model latency is per batch / batch size).
    """
    from tqdm import tqdm

    n = len(data) if limit is None else min(limit, len(data))
    names = list(models) + (["sgbm"] if sgbm is not None else [])
    if init_control is not None:
        names.append(f"{init_control}_mono_init")
    tables: dict[str, dict[str, Any]] = {}
    per_image: dict[str, dict[str, list[float]]] = {}
    timing: dict[str, list[float]] = {m: [] for m in names}
    texless = [textureless_mask(data.left[i]) for i in range(n)]
    for k in turbidities:
        acc = {m: {mk: DisparityAccumulator() for mk in MASKS} for m in names}
        dep: dict[str, list] = {m: [] for m in names}
        img_epe: dict[str, list[float]] = {m: [] for m in names}
        density = []
        for start in tqdm(range(0, n, batch_size), desc=f"eval k={k:g}", disable=not progress):
            idx = np.arange(start, min(start + batch_size, n))
            pairs = [data.eval_pair(int(i), k) for i in idx]
            lefts, rights = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
            b = data.batch(idx, lefts, rights)
            preds: dict[str, np.ndarray] = {}
            with torch.inference_mode():
                for name, model in models.items():
                    dev = model_device(model)  # inputs go where the weights are; metrics are numpy (host)
                    left, right, fb = (b[k].to(dev, non_blocking=True) for k in ("left", "right", "fb"))
                    t = time.perf_counter()
                    out = model(left, right, fb, iters=iters)
                    if dev.type == "cuda":  # latency of the work, not of the asynchronous launch
                        torch.cuda.synchronize(dev)
                    timing[name].append((time.perf_counter() - t) / len(idx))
                    preds[name] = out["disp_preds"][-1][:, 0].cpu().numpy()
                    if name == init_control:
                        preds[f"{name}_mono_init"] = out["disp_init"][:, 0].cpu().numpy()
            if sgbm is not None:
                sg = []
                for j in range(len(idx)):
                    t = time.perf_counter()
                    d, dens = sgbm_disparity(lefts[j], rights[j], sgbm)
                    timing["sgbm"].append(time.perf_counter() - t)
                    sg.append(d)
                    density.append(dens)
                preds["sgbm"] = np.stack(sg)
            for j, i in enumerate(idx):
                gt, noc = data.disp[i], data.noc[i]
                masks = {"noc": noc, "large": noc & (gt > LARGE_DISP_PX), "textureless": noc & texless[i]}
                for m in names:
                    for mk in MASKS:
                        acc[m][mk].add(preds[m][j], gt, masks[mk])
                    img_epe[m].append(float(np.abs(preds[m][j] - gt)[noc].mean()))
                    dep[m].append(depth_metrics(preds[m][j], data.depth_left[i], float(data.focal_baseline[i])))
        key = f"x{k:g}"
        tables[key] = {m: {"disparity": {mk: acc[m][mk].summary() for mk in MASKS}, "depth": summarize_depth(dep[m])}
                       for m in names}
        if density:
            tables[key]["sgbm"]["density"] = float(np.mean(density))
        per_image[key] = img_epe
    lat = {m: {"p50_ms": percentile_ms(v, 50), "p90_ms": percentile_ms(v, 90)} for m, v in timing.items() if v}
    return {"tables": tables, "per_image_epe": per_image, "latency_1thread_loaded_box": lat, "n_pairs": n,
            "seeds": [int(data.seeds[0]), int(data.seeds[n - 1])], "methods": names}


def paired_wins(per_image: dict[str, list[float]], a: str, b: str) -> dict[str, Any]:
    """How often method ``a`` has the lower per-image EPE than ``b`` (paired), with a Wilson 95 % interval."""
    from latentstack.stats import wilson_interval

    ea, eb = np.asarray(per_image[a]), np.asarray(per_image[b])
    wins = int((ea < eb).sum())
    lo, hi = wilson_interval(wins, len(ea))
    return {"wins": wins, "n": len(ea), "rate": wins / max(len(ea), 1), "wilson95": [lo, hi],
            "mean_epe_ratio": float(ea.mean() / max(eb.mean(), 1e-12))}


def plot_report(result: dict[str, Any], path: Path | str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tabs = result["tables"]
    ks = [float(k[1:]) for k in tabs]
    metrics = [("disparity", "noc", "epe", "EPE (px), non-occluded"), ("disparity", "noc", "bad1", "bad-1px rate"),
               ("disparity", "large", "epe", f"EPE, disparity > {LARGE_DISP_PX:g} px"),
               ("disparity", "textureless", "epe", "EPE, textureless"), ("depth", None, "abs_rel", "AbsRel"),
               ("depth", None, "delta1", "δ<1.25")]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for ax, (kind, mk, key, title) in zip(axes.ravel(), metrics):
        for m in result["methods"]:
            ys = []
            for k in tabs:
                t = tabs[k][m][kind]
                ys.append((t[mk] if mk else t).get(key, np.nan))
            ax.plot(ks, ys, marker="o", label=m)
        ax.set_title(title)
        ax.set_xlabel("turbidity k")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"held-out synthetic underwater stereo ({result['n_pairs']} pairs per k)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_json(obj: Any, path: Path | str) -> None:
    Path(path).write_text(json.dumps(obj, indent=2) + "\n")
