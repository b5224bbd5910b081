"""UniLION BEV metrics: hand-counted IoUs, best-threshold segmentation, absent channels, paired bootstrap."""
from __future__ import annotations

import numpy as np
import pytest

from latentstack.perception.unilion.metrics import (
    occupancy_counts,
    occupancy_iou,
    paired_bootstrap_diff,
    seg_counts,
    seg_miou,
)


def test_seg_miou_counts_by_hand() -> None:
    gt = np.zeros((2, 2, 4), np.uint8)
    gt[0, 0, :2] = 1  # channel 0: two cells
    prob = np.zeros((2, 2, 4))
    prob[0, 0, 0], prob[0, 0, 1], prob[0, 1, 3] = 0.9, 0.42, 0.9  # hits 1 or 2 cells, 1 false positive
    c = seg_counts(prob, gt, thresholds=(0.4, 0.5))
    assert c.shape == (2, 2, 2)
    assert c[0].tolist() == [[2, 3], [1, 3]]  # threshold 0.4: I 2, U 3; 0.5: I 1, U 3
    miou, per = seg_miou(c[None])
    assert per[0] == pytest.approx(2 / 3) and np.isnan(per[1])  # channel 1 never present nor predicted
    assert miou == pytest.approx(2 / 3)
    # ratio of sums over frames, not a mean of per-frame IoUs
    other = seg_counts(np.zeros((2, 2, 4)), gt, thresholds=(0.4, 0.5))
    _, per2 = seg_miou(np.stack([c, other]))
    assert per2[0] == pytest.approx(2 / 5)


def test_occupancy_iou_and_paired_bootstrap() -> None:
    gt = np.zeros((2, 3, 3), np.uint8)
    gt[0, :2, :2] = 1
    prob = np.zeros((2, 3, 3))
    prob[0, :2, :1] = 0.8
    prob[1, 2, 2] = 0.6
    c = occupancy_counts(prob, gt)
    assert c.tolist() == [2, 5]
    assert occupancy_iou(c[None]) == pytest.approx(0.4)
    rng = np.random.default_rng(0)
    good = np.stack([occupancy_counts(gt.astype(float), gt) for _ in range(30)])
    noisy = np.stack([occupancy_counts(rng.random(gt.shape), gt) for _ in range(30)])
    r = paired_bootstrap_diff(good, noisy, occupancy_iou, num_resamples=200)
    assert r["ci_low"] <= r["diff"] <= r["ci_high"] and r["ci_low"] > 0.5
    same = paired_bootstrap_diff(noisy, noisy, occupancy_iou, num_resamples=50)
    assert same == {"diff": 0.0, "ci_low": 0.0, "ci_high": 0.0}
    with pytest.raises(ValueError, match="same frames"):
        paired_bootstrap_diff(good, noisy[:5], occupancy_iou)
