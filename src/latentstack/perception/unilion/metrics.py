"""BEV segmentation mIoU and occupancy IoU for UniLION, with paired bootstrap intervals over frames.

Both are ratio-of-sums IoUs over a whole split (intersections and unions summed over frames, then divided), as
BEVFusion / UniLION's map evaluation. Segmentation is multi-label (a cell may be drivable *and* a car
footprint): per channel, predictions are thresholded at each of ``thresholds`` and the channel's IoU is the best
threshold's (BEVFusion's protocol); mIoU is the mean over channels. Occupancy is one binary IoU over all
(z, y, x) cells at threshold 0.5. Detection AP (BEV, range bins, paired bootstrap) is LION's
:mod:`latentstack.perception.lion.eval`.

Per-frame counts are kept so :func:`paired_bootstrap_diff` can resample frames (the same resample for both
methods) and give a percentile interval of ``metric(a) − metric(b)``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["SEG_THRESHOLDS", "occupancy_counts", "occupancy_iou", "paired_bootstrap_diff", "seg_counts", "seg_miou"]

SEG_THRESHOLDS: tuple[float, ...] = (0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65)


def seg_counts(prob: np.ndarray, gt: np.ndarray, thresholds: Sequence[float] = SEG_THRESHOLDS) -> np.ndarray:
    """One frame: (S, Y, X) probabilities and {0,1} labels → (S, T, 2) intersection and union cell counts."""
    p = np.asarray(prob)[:, None] >= np.asarray(thresholds)[None, :, None, None]  # (S, T, Y, X)
    g = np.asarray(gt).astype(bool)[:, None]
    inter = (p & g).sum((2, 3))
    union = (p | g).sum((2, 3))
    return np.stack([inter, union], -1).astype(np.int64)


def seg_miou(counts: np.ndarray) -> tuple[float, np.ndarray]:
    """Frames' counts (F, S, T, 2) → (mIoU, per-channel IoU at each channel's best threshold). A channel whose
    union is 0 at every threshold (never present, never predicted) is left out of the mean (NaN)."""
    tot = np.asarray(counts).sum(0).astype(np.float64)  # (S, T, 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(tot[..., 1] > 0, tot[..., 0] / tot[..., 1], np.nan)
    per = np.full(iou.shape[0], np.nan)
    ok = ~np.isnan(iou).all(1)
    per[ok] = np.nanmax(iou[ok], 1)
    return float(np.nanmean(per)) if ok.any() else float("nan"), per


def occupancy_counts(prob: np.ndarray, gt: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """One frame: (Z, Y, X) probabilities and {0,1} labels → (2,) intersection and union counts."""
    p = np.asarray(prob) >= threshold
    g = np.asarray(gt).astype(bool)
    return np.array([(p & g).sum(), (p | g).sum()], np.int64)


def occupancy_iou(counts: np.ndarray) -> float:
    tot = np.asarray(counts).sum(0)
    return float(tot[0] / tot[1]) if tot[1] > 0 else float("nan")


def paired_bootstrap_diff(counts_a: np.ndarray, counts_b: np.ndarray, metric: Callable[[np.ndarray], float],
                          num_resamples: int = 1000, seed: int = 0) -> dict[str, float]:
    """``metric(a) − metric(b)`` and its 95 % percentile interval, resampling frames (axis 0) jointly."""
    a, b = np.asarray(counts_a), np.asarray(counts_b)
    if len(a) != len(b):
        raise ValueError(f"paired counts need the same frames, got {len(a)} and {len(b)}")
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(num_resamples):
        idx = rng.integers(0, len(a), len(a))
        diffs.append(metric(a[idx]) - metric(b[idx]))
    lo, hi = np.nanpercentile(diffs, [2.5, 97.5])
    return {"diff": metric(a) - metric(b), "ci_low": float(lo), "ci_high": float(hi)}
