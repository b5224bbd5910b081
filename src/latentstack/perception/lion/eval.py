"""Rotated IoU (BEV and 3-D), rotated NMS, and KITTI-style AP with 40 recall positions (R40).

Boxes are ``(x, y, z_center, l, w, h, yaw)``. The BEV overlap of two rotated rectangles comes
from ``cv2.rotatedRectangleIntersection`` (exact convex polygon clipping); 3-D IoU multiplies it
by the z overlap.

AP protocol (KITTI R40 semantics, one class at a time, all scans pooled): detections sorted by
score; each is matched to the unmatched ground truth of highest IoU ≥ threshold. Ground truths
that are *ignored* (fewer than ``min_points`` LiDAR points, or outside the range bin being
scored) neither count as misses nor make a matching detection a false positive; a detection
whose centre falls outside the range bin is ignored too. AP = mean over recall
r ∈ {1/40, …, 1} of the max precision at recall ≥ r.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["APResult", "ap_from_matches", "average_precision", "bev_iou", "bootstrap_ap", "evaluate_detections", "iou3d", "match_scans", "rotated_nms"]


def _rect(b: np.ndarray) -> tuple[tuple[float, float], tuple[float, float], float]:
    return ((float(b[0]), float(b[1])), (float(b[3]), float(b[4])), math.degrees(float(b[6])))


def bev_intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(Na, Nb) BEV intersection areas of rotated rectangles."""
    a = np.asarray(a, np.float64).reshape(-1, 7)
    b = np.asarray(b, np.float64).reshape(-1, 7)
    out = np.zeros((len(a), len(b)))
    if len(a) == 0 or len(b) == 0:
        return out
    ra = 0.5 * np.hypot(a[:, 3], a[:, 4])
    rb = 0.5 * np.hypot(b[:, 3], b[:, 4])
    d = np.hypot(a[:, None, 0] - b[None, :, 0], a[:, None, 1] - b[None, :, 1])
    for i, j in zip(*np.nonzero(d < ra[:, None] + rb[None, :]), strict=True):
        ret, pts = cv2.rotatedRectangleIntersection(_rect(a[i]), _rect(b[j]))
        if ret != cv2.INTERSECT_NONE and pts is not None and len(pts) >= 3:
            out[i, j] = cv2.contourArea(cv2.convexHull(pts))
    return out


def bev_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64).reshape(-1, 7)
    b = np.asarray(b, np.float64).reshape(-1, 7)
    inter = bev_intersection(a, b)
    union = (a[:, 3] * a[:, 4])[:, None] + (b[:, 3] * b[:, 4])[None] - inter
    return inter / np.maximum(union, 1e-9)


def iou3d(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64).reshape(-1, 7)
    b = np.asarray(b, np.float64).reshape(-1, 7)
    inter = bev_intersection(a, b)
    top = np.minimum((a[:, 2] + a[:, 5] / 2)[:, None], (b[:, 2] + b[:, 5] / 2)[None])
    bot = np.maximum((a[:, 2] - a[:, 5] / 2)[:, None], (b[:, 2] - b[:, 5] / 2)[None])
    inter = inter * np.clip(top - bot, 0, None)
    vol = a[:, 3] * a[:, 4] * a[:, 5]
    vol_b = b[:, 3] * b[:, 4] * b[:, 5]
    return inter / np.maximum(vol[:, None] + vol_b[None] - inter, 1e-9)


def rotated_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS on BEV IoU; returns kept indices in descending score order."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    if len(order) == 0:
        return order
    iou = bev_iou(boxes[order], boxes[order])
    suppressed = np.zeros(len(order), bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(order[i])
        suppressed |= iou[i] > iou_threshold
    return np.array(keep, dtype=np.int64)


@dataclass
class APResult:
    ap: float
    num_gt: int
    num_det: int
    precision: np.ndarray  # at the 40 recall positions


def match_scans(dets: Sequence[dict], gts: Sequence[dict], cls: int, iou_threshold: float, metric: str = "bev",
                range_bin: tuple[float, float] | None = None, min_points: int = 5
                ) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """Per scan ``(scores, is_tp, num_cared_gt)`` of the counted detections (ignored ones dropped)."""
    if metric not in ("bev", "3d"):
        raise ValueError(f"metric must be 'bev' or '3d', got {metric!r}")
    if len(dets) != len(gts):
        raise ValueError(f"{len(dets)} detection sets for {len(gts)} ground-truth scans")
    iou_fn = bev_iou if metric == "bev" else iou3d

    def in_bin(boxes: np.ndarray) -> np.ndarray:
        if range_bin is None:
            return np.ones(len(boxes), bool)
        r = np.hypot(boxes[:, 0], boxes[:, 1])
        return (r >= range_bin[0]) & (r < range_bin[1])

    out = []
    for d, g in zip(dets, gts, strict=True):
        dm = np.asarray(d["labels"]) == cls
        db, ds = np.asarray(d["boxes"]).reshape(-1, 7)[dm], np.asarray(d["scores"])[dm]
        gm = np.asarray(g["labels"]) == cls
        gb = np.asarray(g["boxes"]).reshape(-1, 7)[gm]
        care = (np.asarray(g["num_points"])[gm] >= min_points) & in_bin(gb)
        order = np.argsort(-ds, kind="stable")
        db, ds = db[order], ds[order]
        iou = iou_fn(db, gb) if len(db) and len(gb) else np.zeros((len(db), len(gb)))
        used = np.zeros(len(gb), bool)
        det_in = in_bin(db)
        scores, tps = [], []
        for i in range(len(db)):
            cand = np.where(~used & (iou[i] >= iou_threshold))[0]
            if len(cand):
                # prefer a cared-for GT, then the highest IoU
                j = cand[np.lexsort((-iou[i, cand], ~care[cand]))[0]]
                used[j] = True
                if care[j]:
                    scores.append(ds[i])
                    tps.append(1)
                continue  # matched an ignored GT: neither TP nor FP
            if det_in[i]:
                scores.append(ds[i])
                tps.append(0)
        out.append((np.asarray(scores, np.float64), np.asarray(tps, np.float64), int(care.sum())))
    return out


def ap_from_matches(matches: Sequence[tuple[np.ndarray, np.ndarray, int]]) -> APResult:
    """R40 AP from pooled per-scan matches (used directly and for bootstrap resampling over scans)."""
    num_gt = sum(m[2] for m in matches)
    scores = np.concatenate([m[0] for m in matches]) if matches else np.zeros(0)
    tp = np.concatenate([m[1] for m in matches]) if matches else np.zeros(0)
    prec40 = np.zeros(40)
    if num_gt == 0:
        return APResult(float("nan"), 0, len(scores), prec40)
    order = np.argsort(-scores, kind="stable")
    tp = tp[order]
    ctp, cfp = np.cumsum(tp), np.cumsum(1 - tp)
    recall = ctp / num_gt
    precision = ctp / np.maximum(ctp + cfp, 1e-9)
    for k, r in enumerate(np.linspace(1 / 40, 1.0, 40)):
        ok = recall >= r - 1e-12
        prec40[k] = precision[ok].max() if ok.any() else 0.0
    return APResult(float(prec40.mean()), num_gt, len(scores), prec40)


def average_precision(dets: Sequence[dict], gts: Sequence[dict], cls: int, iou_threshold: float, metric: str = "bev",
                      range_bin: tuple[float, float] | None = None, min_points: int = 5) -> APResult:
    """R40 AP over scans. ``dets[i]``: boxes/scores/labels; ``gts[i]``: boxes/labels/num_points."""
    return ap_from_matches(match_scans(dets, gts, cls, iou_threshold, metric, range_bin, min_points))


def bootstrap_ap(matches_by_method: dict[str, list], num_resamples: int = 1000, seed: int = 0
                 ) -> dict[str, dict[str, float]]:
    """Percentile 95 % intervals of AP, resampling scans (the same resample for every method: paired)."""
    rng = np.random.default_rng(seed)
    n = len(next(iter(matches_by_method.values())))
    samples: dict[str, list[float]] = {k: [] for k in matches_by_method}
    for _ in range(num_resamples):
        idx = rng.integers(0, n, n)
        for k, m in matches_by_method.items():
            samples[k].append(ap_from_matches([m[i] for i in idx]).ap)
    out = {}
    for k, v in samples.items():
        a = np.asarray(v)
        out[k] = {"lo": float(np.nanpercentile(a, 2.5)), "hi": float(np.nanpercentile(a, 97.5))}
    out["_samples"] = {k: np.asarray(v) for k, v in samples.items()}  # type: ignore[assignment]
    return out


# spec §13: Car 0.7 / 0.5, Pedestrian and Cyclist 0.5 (and KITTI's easier 0.5 / 0.25)
IOU_THRESHOLDS: dict[str, tuple[float, ...]] = {"Car": (0.7, 0.5), "Pedestrian": (0.5, 0.25), "Cyclist": (0.5, 0.25)}
RANGE_BINS: dict[str, tuple[float, float] | None] = {"all": None, "0-20m": (0.0, 20.0), "20-40m": (20.0, 40.0),
                                                      "40m+": (40.0, 1e9)}


def evaluate_detections(dets: Sequence[dict], gts: Sequence[dict], classes: Sequence[str], min_points: int = 5
                        ) -> dict[str, dict]:
    """Full table: ``table[cls][f"{metric}@{iou}"][range_bin] = {"ap", "num_gt", "num_det"}``."""
    table: dict[str, dict] = {}
    for k, name in enumerate(classes):
        table[name] = {}
        for thr in IOU_THRESHOLDS.get(name, (0.5,)):
            for metric in ("bev", "3d"):
                row = {}
                for bin_name, rb in RANGE_BINS.items():
                    res = average_precision(dets, gts, k, thr, metric, rb, min_points)
                    row[bin_name] = {"ap": res.ap, "num_gt": res.num_gt, "num_det": res.num_det}
                table[name][f"{metric}@{thr}"] = row
    return table
