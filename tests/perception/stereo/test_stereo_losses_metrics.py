"""Sequence loss (§13.8), metric parity on hand-computed fixtures (§13.9), SGBM baseline wiring."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from latentstack.perception.stereo.losses import sequence_loss, sequence_weights
from latentstack.perception.stereo.metrics import DisparityAccumulator, depth_metrics, summarize_depth
from latentstack.perception.stereo.sgbm import SGBMConfig, fill_holes_background, sgbm_disparity


def test_sequence_weights():
    n = 8
    g = 0.9 ** (15 / (n - 1))
    assert sequence_weights(n) == pytest.approx([g ** (n - i - 1) for i in range(n)])
    assert sequence_weights(n)[-1] == 1.0


def test_sequence_loss_ignores_invalid_pixels():
    gt = torch.tensor([[[[1.0, 2.0, 800.0, 4.0]]]])
    valid = torch.tensor([[[[1.0, 1.0, 1.0, 0.2]]]])  # pixel 2: |gt| ≥ 700; pixel 3: mask < 0.5
    p1 = torch.tensor([[[[2.0, 2.0, 0.0, -50.0]]]])
    p2 = torch.tensor([[[[1.0, 4.0, 1e6, 1e6]]]])
    loss, info = sequence_loss([p1, p2], gt, valid)
    w = sequence_weights(2)
    assert loss.item() == pytest.approx(w[0] * 0.5 + w[1] * 1.0)
    assert info["epe"] == pytest.approx(1.0)


def test_disparity_metrics_pool_pixels_and_define_d1():
    acc = DisparityAccumulator()
    gt = np.array([[10.0, 10.0, 100.0, 1.0]], np.float32)
    pred = np.array([[10.2, 13.5, 104.0, 1.0]], np.float32)
    acc.add(pred, gt, np.array([[True, True, True, False]]))
    acc.add(np.array([[0.0]], np.float32), np.array([[2.0]], np.float32), np.array([[True]]))
    s = acc.summary()
    e = np.array([0.2, 3.5, 4.0, 2.0])
    assert s["n_pixels"] == 4 and s["epe"] == pytest.approx(e.mean(), rel=1e-5)
    assert s["bad1"] == pytest.approx(0.75) and s["bad0.5"] == pytest.approx(0.75)
    assert s["d1_kitti"] == pytest.approx(0.25)  # 3.5 px at 10 px (>3 and >5 %); 4 px at 100 px is only 4 %


def test_depth_metrics_match_hand_computation_with_mask_and_clamp():
    fb = 10.0
    gt = np.array([[2.0, 5.0, 60.0, 0.05]], np.float32)  # the last two fail the 0.1–50 m mask
    pred_depth = np.array([2.4, 3.5, 1.0, 1.0])
    m = depth_metrics(fb / pred_depth[None, :].astype(np.float32), gt, fb)
    p, g = np.array([2.4, 3.5]), np.array([2.0, 5.0])
    assert m["abs_rel"] == pytest.approx(np.mean(np.abs(p - g) / g), rel=1e-5)
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean((p - g) ** 2)), rel=1e-5)
    assert m["delta1"] == pytest.approx(0.5)  # ratios 1.2 (in) and 1.43 (out)
    assert m["delta2"] == pytest.approx(1.0)
    m2 = depth_metrics(np.array([[fb / 1000.0]], np.float32), np.array([[40.0]], np.float32), fb)
    assert m2["abs_rel"] == pytest.approx(10 / 40)  # prediction 1000 m is clamped to 50 m
    assert summarize_depth([m, None, m2])["n_images"] == 2


def test_depth_delta_threshold_is_strict():
    m = depth_metrics(np.array([[10 / 2.4, 10 / 2.6]], np.float32), np.array([[2.0, 2.0]], np.float32), 10.0)
    assert m["delta1"] == pytest.approx(0.5)  # ratio 1.2 counts, 1.3 does not
    m = depth_metrics(np.array([[10 / 3.0]], np.float32), np.array([[2.0]], np.float32), 10.0)
    assert m["delta1"] == 0.0 and m["delta2"] == 1.0


def test_hole_filling_takes_the_background_neighbour():
    disp = np.array([[5.0, -1.0, -1.0, 2.0, -1.0]], np.float32)
    out = fill_holes_background(disp, disp >= 0)
    np.testing.assert_array_equal(out, [[5.0, 2.0, 2.0, 2.0, 2.0]])


def test_sgbm_recovers_a_constant_shift():
    rng = np.random.default_rng(0)
    right = (rng.random((48, 160, 3)) * 255).astype(np.uint8)
    right = np.ascontiguousarray(np.repeat(np.repeat(right[:, ::2], 2, axis=1), 1, axis=0))
    shift = 7
    left = np.zeros_like(right)
    left[:, shift:] = right[:, :-shift]
    disp, density = sgbm_disparity(left, right, SGBMConfig(num_disparities=16))
    assert density > 0.5
    assert np.median(np.abs(disp[:, 40:-10] - shift)) < 0.5
    with pytest.raises(ValueError):
        sgbm_disparity(left, right[:10], SGBMConfig())
