"""Disparity and depth metrics with the StereoAdapter-2 masks (spec §8).

Disparity metrics are pooled over all valid pixels of a split (not per image): EPE (AvgErr),
MedErr, bad-0.5/1/2/4 px rates and **D1 = KITTI (error > 3 px and > 5 % of the true
disparity)**; ``bad1`` (> 1 px) is the ETH3D / FlyingThings "D1". Disparity metrics use the
non-occluded mask (in view in the right image, left/right consistent).

Depth metrics: ``depth = f·b / |disp|``, mask ``0.1 < gt < 50 m``, both clamped to [0.1, 50];
AbsRel, SqRel, RMSE, RMSE_log, δ<1.25, δ<1.25², δ<1.25³ computed per image, then averaged.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["BAD_THRESHOLDS", "DisparityAccumulator", "depth_metrics", "disparity_errors", "summarize_depth"]

BAD_THRESHOLDS = (0.5, 1.0, 2.0, 4.0)
MIN_DEPTH, MAX_DEPTH = 0.1, 50.0


def disparity_errors(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Absolute errors and ground truth at masked pixels (for pooling)."""
    if pred.shape != gt.shape or gt.shape != mask.shape:
        raise ValueError(f"shapes differ: pred {pred.shape}, gt {gt.shape}, mask {mask.shape}")
    m = mask & np.isfinite(gt)
    return np.abs(pred[m] - gt[m]).astype(np.float64), gt[m].astype(np.float64)


@dataclass
class DisparityAccumulator:
    """Pools errors over a split; :meth:`summary` gives EPE, median, bad-x and D1 (KITTI)."""

    errors: list[np.ndarray] = field(default_factory=list)
    gts: list[np.ndarray] = field(default_factory=list)

    def add(self, pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> None:
        e, g = disparity_errors(pred, gt, mask)
        self.errors.append(e)
        self.gts.append(g)

    def summary(self) -> dict[str, float]:
        if not self.errors:
            return {"n_pixels": 0}
        e, g = np.concatenate(self.errors), np.concatenate(self.gts)
        if e.size == 0:
            return {"n_pixels": 0}
        out = {"n_pixels": int(e.size), "epe": float(e.mean()), "median": float(np.median(e))}
        for t in BAD_THRESHOLDS:
            out[f"bad{t:g}"] = float((e > t).mean())
        out["d1_kitti"] = float(((e > 3.0) & (e > 0.05 * g)).mean())
        return out


def depth_metrics(pred_disp: np.ndarray, gt_depth: np.ndarray, focal_baseline: float) -> dict[str, float] | None:
    """Per-image depth metrics (None when no pixel passes the 0.1–50 m mask)."""
    pred = focal_baseline / np.maximum(np.abs(pred_disp), 1e-6)
    m = (gt_depth > MIN_DEPTH) & (gt_depth < MAX_DEPTH)
    if not m.any():
        return None
    p = np.clip(pred[m], MIN_DEPTH, MAX_DEPTH).astype(np.float64)
    g = np.clip(gt_depth[m], MIN_DEPTH, MAX_DEPTH).astype(np.float64)
    ratio = np.maximum(p / g, g / p)
    return {
        "abs_rel": float(np.mean(np.abs(p - g) / g)),
        "sq_rel": float(np.mean((p - g) ** 2 / g)),
        "rmse": float(np.sqrt(np.mean((p - g) ** 2))),
        "rmse_log": float(np.sqrt(np.mean((np.log(p) - np.log(g)) ** 2))),
        "delta1": float(np.mean(ratio < 1.25)),
        "delta2": float(np.mean(ratio < 1.25 ** 2)),
        "delta3": float(np.mean(ratio < 1.25 ** 3)),
    }


def summarize_depth(per_image: list[dict[str, float] | None]) -> dict[str, float]:
    rows = [r for r in per_image if r is not None]
    if not rows:
        return {"n_images": 0}
    out = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    out["n_images"] = len(rows)
    return out
