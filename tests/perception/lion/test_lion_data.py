"""MuJoCo LiDAR scene generator: determinism, exact labels, split disjointness, on-disk round trip."""
from __future__ import annotations

import numpy as np
import pytest

from latentstack.sim.lidar_scenes import (
    SPLIT_SEEDS,
    LidarSceneConfig,
    generate_scan,
    load_split,
    points_in_boxes,
    save_split,
    scan_rays,
)


def test_rays_are_64_beams_over_hdl64_elevations() -> None:
    cfg = LidarSceneConfig()
    rays = scan_rays(cfg)
    assert rays.shape == (64 * 225, 3)
    np.testing.assert_allclose(np.linalg.norm(rays, axis=1), 1.0, atol=1e-12)
    elev = np.rad2deg(np.arcsin(rays[:, 2]))
    assert elev.min() == pytest.approx(-24.9) and elev.max() == pytest.approx(2.0)
    assert len(np.unique(np.round(elev, 6))) == 64


def test_scan_is_deterministic_and_seed_dependent() -> None:
    a, b, c = generate_scan(3), generate_scan(3), generate_scan(4)
    np.testing.assert_array_equal(a.points, b.points)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    assert a.points.shape != c.points.shape or not np.array_equal(a.points, c.points)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_labelled_points_lie_in_their_box_and_counts_match(seed: int) -> None:
    s = generate_scan(seed)
    assert s.points.dtype == np.float32 and s.points.shape[1] == 4
    inside = points_in_boxes(s.points, s.boxes, margin=0.1)
    lab = np.nonzero(s.point_instance >= 0)[0]
    assert len(lab) > 0
    assert inside[lab, s.point_instance[lab]].all()
    np.testing.assert_array_equal(np.bincount(s.point_instance[lab], minlength=len(s.boxes)), s.box_num_points)
    # ground is at −sensor height in the sensor frame; objects stand on it
    np.testing.assert_allclose(s.boxes[:, 2] - s.boxes[:, 5] / 2, -1.73, atol=1e-5)
    pr = LidarSceneConfig().point_range
    assert (s.points[:, 0] >= pr[0]).all() and (s.points[:, 0] < pr[3]).all()
    assert ((s.points[:, 3] >= 0) & (s.points[:, 3] <= 1)).all()


def test_splits_are_disjoint() -> None:
    names = list(SPLIT_SEEDS)
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            assert not set(SPLIT_SEEDS[names[i]]) & set(SPLIT_SEEDS[names[j]])


def test_npz_round_trip_without_pickle(tmp_path) -> None:
    cfg = LidarSceneConfig()
    scans = [generate_scan(s) for s in (0, 1)]
    save_split(tmp_path / "x.npz", scans, cfg)
    back, cfg2 = load_split(tmp_path / "x.npz")
    assert cfg2 == cfg
    for a, b in zip(scans, back, strict=True):
        np.testing.assert_array_equal(a.points, b.points)
        np.testing.assert_array_equal(a.point_instance, b.point_instance)
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.box_num_points, b.box_num_points)
        assert a.seed == b.seed
    np.savez(tmp_path / "bad.npz", points=np.zeros((1, 4)))
    with pytest.raises(ValueError, match="missing keys"):
        load_split(tmp_path / "bad.npz")


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError):
        LidarSceneConfig(dropout=1.5)
    with pytest.raises(ValueError):
        LidarSceneConfig(point_range=(1, 0, 0, 0, 1, 1))
