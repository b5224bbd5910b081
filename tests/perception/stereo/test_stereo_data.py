"""Synthetic underwater stereo: epipolar geometry of the MuJoCo pair, disparity, occlusion, water model."""
from __future__ import annotations

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from latentstack.sim.stereo_scenes import (
    SPLIT_SEEDS,
    StereoRenderer,
    StereoSceneConfig,
    disparity_from_depth,
    occlusion_mask,
    underwater,
)


@pytest.fixture(scope="module")
def renderer():
    r = StereoRenderer(StereoSceneConfig())
    yield r
    r.close()


def _world_from_left(r, sample, v, u):
    """Back-projects left pixel (v, u) with its rendered z-depth into world coordinates."""
    m, d = r.model, r.data
    c = r.cam["left"]
    z = sample.depth_left[v, u]
    f = sample.focal_px
    h, w = sample.depth_left.shape
    x_cam = np.array([(u + 0.5 - w / 2) / f * z, -(v + 0.5 - h / 2) / f * z, -z])  # MuJoCo camera looks along −z
    return d.cam_xpos[c] + d.cam_xmat[c].reshape(3, 3) @ x_cam, m


def test_epipolar_constraint_from_mujoco_camera_poses(renderer):
    """A 3-D point seen by the left camera projects onto the same row of the right camera, at u − f·b/Z."""
    s = renderer.render(12345)
    d = renderer.data
    cr = renderer.cam["right"]
    h, w = s.depth_left.shape
    rng = np.random.default_rng(0)
    for v, u in zip(rng.integers(0, h, 50), rng.integers(0, w, 50)):
        p, _ = _world_from_left(renderer, s, v, u)
        pc = d.cam_xmat[cr].reshape(3, 3).T @ (p - d.cam_xpos[cr])
        z = -pc[2]
        u_r = pc[0] / z * s.focal_px + w / 2 - 0.5
        v_r = -pc[1] / z * s.focal_px + h / 2 - 0.5
        assert abs(v_r - v) < 1e-3  # same row: rectified
        assert abs(z - s.depth_left[v, u]) < 1e-3  # same z-depth in both cameras
        assert abs((u - u_r) - s.disparity[v, u]) < 1e-3  # d = f·b / Z


def test_right_image_warped_by_gt_disparity_matches_left(renderer):
    s = renderer.render(777)
    disp = s.disparity
    noc = occlusion_mask(disp, disparity_from_depth(s.depth_right, s.focal_px, s.baseline_m))
    h, w = disp.shape
    ys = np.repeat(np.arange(h, dtype=np.float32)[:, None], w, 1)

    def warp_err(dd):
        xs = (np.arange(w, dtype=np.float32)[None, :] - dd).astype(np.float32)
        return np.abs(cv2.remap(s.right, xs, ys, cv2.INTER_LINEAR) - s.left).mean(-1)

    err = warp_err(disp)[noc].mean()
    assert 0.5 < noc.mean() < 1.0
    assert err < 0.01
    assert warp_err(disp + 2.0)[noc].mean() > 2 * err  # a wrong disparity is measurably worse


def test_scene_is_a_function_of_its_seed_and_seeds_are_disjoint(renderer):
    a, b, c = renderer.render(5), renderer.render(6), renderer.render(5)
    np.testing.assert_array_equal(a.left, c.left)
    np.testing.assert_array_equal(a.depth_left, c.depth_left)
    assert not np.array_equal(a.left, b.left)
    ranges = list(SPLIT_SEEDS.values())
    for i in range(len(ranges)):
        for j in range(i + 1, len(ranges)):
            assert not set(ranges[i]) & set(ranges[j])
    assert 0.2 <= a.baseline_m <= 0.5


def test_occlusion_mask_on_a_fronto_parallel_step():
    disp = np.full((2, 20), 2.0, np.float32)
    disp[:, 10:14] = 6.0  # a near box
    disp_r = np.full((2, 20), 2.0, np.float32)
    disp_r[:, 4:8] = 6.0  # the same box seen from the right camera
    m = occlusion_mask(disp, disp_r)
    assert not m[:, :2].any()  # x − d < 0: out of the right view
    assert m[:, 10:14].all()  # the box is visible in both views
    assert not m[:, 6:10].all()  # background behind the box's left edge is hidden in the right view


def test_underwater_model_per_channel_attenuation_and_backscatter():
    clean = np.full((4, 6, 3), 0.8, np.float32)
    depth = np.full((4, 6), 3.0, np.float32)
    np.testing.assert_allclose(underwater(clean, depth, 50.0, 0.0) / 255.0, 0.8, atol=1 / 255)  # k = 0: clear water
    imgs = [underwater(clean, depth, 50.0, k).astype(np.float32) for k in (1, 2, 3)]
    red = [im[..., 0].mean() for im in imgs]
    assert red[0] > red[1] > red[2]  # red is absorbed fastest ...
    assert imgs[2][..., 0].mean() < imgs[2][..., 2].mean()  # ... so turbid water looks blue
    far = underwater(clean, np.full((4, 6), 500.0, np.float32), 50.0, 3.0)  # far away: only veiling light
    np.testing.assert_allclose(far[0, 0] / 255.0, (0.05, 0.25, 0.35), atol=1 / 255)
    with pytest.raises(ValueError):
        underwater(clean, depth, 50.0, -1.0)
    with pytest.raises(ValueError):
        underwater(clean, depth[:2], 50.0, 1.0)
