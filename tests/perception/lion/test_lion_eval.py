"""Rotated IoU, NMS, AP R40 semantics, and the clustering baseline."""
from __future__ import annotations

import math

import numpy as np
import pytest

from latentstack.perception.lion.clustering import ClusteringDetector
from latentstack.perception.lion.eval import (
    ap_from_matches,
    average_precision,
    bev_iou,
    bootstrap_ap,
    iou3d,
    match_scans,
    rotated_nms,
)
from latentstack.sim.lidar_scenes import generate_scan


def test_rotated_iou_known_values() -> None:
    a = np.array([[0, 0, 0, 2, 2, 2, 0]], float)
    assert bev_iou(a, a)[0, 0] == pytest.approx(1.0)
    shifted = np.array([[1, 0, 0, 2, 2, 2, 0]], float)  # half overlap: 2 / (4 + 4 − 2)
    assert bev_iou(a, shifted)[0, 0] == pytest.approx(1 / 3, abs=1e-4)
    rot = np.array([[0, 0, 0, 2, 2, 2, math.pi / 4]], float)  # square vs 45° square: octagon
    inter = 8 * (math.sqrt(2) - 1)
    assert bev_iou(a, rot)[0, 0] == pytest.approx(inter / (8 - inter), abs=1e-4)
    # 3-D: half the height overlaps
    up = np.array([[0, 0, 1, 2, 2, 2, 0]], float)
    assert iou3d(a, up)[0, 0] == pytest.approx(4 / 12, abs=1e-6)
    far = np.array([[50, 0, 0, 2, 2, 2, 0]], float)
    assert bev_iou(a, far)[0, 0] == 0.0
    # yaw by π is the same rectangle
    flipped = a.copy()
    flipped[0, 6] = math.pi
    assert bev_iou(a, flipped)[0, 0] == pytest.approx(1.0, abs=1e-6)


def test_rotated_nms_keeps_best_of_overlaps() -> None:
    b = np.array([[0, 0, 0, 4, 2, 1, 0], [0.1, 0, 0, 4, 2, 1, 0], [10, 0, 0, 4, 2, 1, 0]], float)
    keep = rotated_nms(b, np.array([0.5, 0.9, 0.3]), 0.5)
    assert keep.tolist() == [1, 2]


def _gt(boxes, npts=None):
    boxes = np.asarray(boxes, float).reshape(-1, 7)
    return {"boxes": boxes, "labels": np.zeros(len(boxes), int),
            "num_points": np.full(len(boxes), 100) if npts is None else np.asarray(npts)}


def test_ap_r40_semantics() -> None:
    g = _gt([[10, 0, 0, 4, 2, 1.5, 0], [30, 5, 0, 4, 2, 1.5, 0]])
    perfect = {"boxes": g["boxes"], "scores": np.array([0.9, 0.8]), "labels": np.zeros(2, int)}
    assert average_precision([perfect], [g], 0, 0.7).ap == pytest.approx(1.0)
    # one hit, one miss: precision 1 up to recall 0.5 → 20 of 40 recall points
    half = {"boxes": g["boxes"][:1], "scores": np.array([0.9]), "labels": np.zeros(1, int)}
    assert average_precision([half], [g], 0, 0.7).ap == pytest.approx(0.5)
    # a higher-scored false positive: precision 1/2 at recall 1/2, 2/3 at recall 1; interpolated
    # (max precision at recall >= r) that is 2/3 at every recall point
    fp = {"boxes": np.r_[[[0, -10, 0, 4, 2, 1.5, 0]], g["boxes"]], "scores": np.array([0.95, 0.9, 0.8]),
          "labels": np.zeros(3, int)}
    res = average_precision([fp], [g], 0, 0.7)
    assert res.ap == pytest.approx(2 / 3)
    # GT with too few points is ignored: detecting it is neither TP nor FP, missing it is no miss
    g2 = _gt(g["boxes"], npts=[100, 2])
    assert average_precision([perfect], [g2], 0, 0.7).ap == pytest.approx(1.0)
    assert average_precision([half], [g2], 0, 0.7).ap == pytest.approx(1.0)
    # range bins: only the 30 m object counts in 20–40 m
    assert average_precision([half], [g], 0, 0.7, range_bin=(20, 40)).ap == pytest.approx(0.0)
    assert average_precision([half], [g], 0, 0.7, range_bin=(0, 20)).ap == pytest.approx(1.0)
    with pytest.raises(ValueError):
        average_precision([perfect], [g], 0, 0.7, metric="2d")


def test_bootstrap_is_paired_and_brackets_the_estimate() -> None:
    rng = np.random.default_rng(0)
    gts, dets = [], []
    for _ in range(20):
        b = np.c_[rng.uniform(5, 35, (3, 2)), np.zeros(3), np.tile([4, 2, 1.5, 0], (3, 1))]
        gts.append(_gt(b))
        noisy = b.copy()
        noisy[:, :2] += rng.normal(0, 0.3, (3, 2))
        dets.append({"boxes": noisy, "scores": rng.uniform(0, 1, 3), "labels": np.zeros(3, int)})
    m = match_scans(dets, gts, 0, 0.5)
    ci = bootstrap_ap({"a": m, "b": m}, num_resamples=200)
    est = ap_from_matches(m).ap
    assert ci["a"]["lo"] <= est <= ci["a"]["hi"]
    np.testing.assert_array_equal(ci["_samples"]["a"], ci["_samples"]["b"])


def test_clustering_baseline_finds_a_lone_car() -> None:
    scan = generate_scan(200_000)
    det = ClusteringDetector().detect(scan.points)
    assert det["boxes"].shape[1] == 7 and len(det["scores"]) == len(det["labels"])
    cars = scan.boxes[(scan.box_class == 0) & (scan.box_num_points >= 200)]
    assert len(cars) >= 1
    iou = bev_iou(det["boxes"][det["labels"] == 0], cars)
    assert (iou.max(0) >= 0.5).mean() >= 0.5
    with pytest.raises(ValueError):
        ClusteringDetector().detect(np.zeros((5, 2)))
