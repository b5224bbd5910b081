"""UniLION MuJoCo sequences: camera geometry against MuJoCo's own segmentation, labels, ego poses, splits."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from latentstack.sim import unilion_scenes as us


@pytest.fixture(scope="module")
def seq() -> list[us.UniFrame]:
    return us.generate_sequence(us.SPLIT_SEEDS["train"][0], num_frames=3)


def test_lidar_points_project_onto_their_object_in_the_rendered_camera() -> None:
    """A LiDAR point on object k, projected with (intrinsics, cam2ego), lands on a pixel MuJoCo's segmentation
    render assigns to object k's geom (checked away from silhouette edges)."""
    cfg = us.UniSceneConfig()
    s = us._Sequence(us.SPLIT_SEEDS["train"][0], cfg)
    try:
        f = s.frame(2)
        s.renderer.enable_segmentation_rendering()
        checked = 0
        for c in range(len(cfg.camera_yaws_deg)):
            s.renderer.update_scene(s.data, camera=c)
            seg = s.renderer.render()[..., 0]  # geom id per pixel (−1 background)
            uv, z = us.project_points(f.points[:, :3], s.intrinsics[c], s.cam2ego[c])
            h, w = cfg.image_size
            ok = (z > 0.5) & (uv[:, 0] >= 1) & (uv[:, 0] < w - 1) & (uv[:, 1] >= 1) & (uv[:, 1] < h - 1)
            sel = np.nonzero(ok & (f.point_instance >= 0))[0]
            j, i = np.floor(uv[sel, 0]).astype(int), np.floor(uv[sel, 1]).astype(int)
            geom = f.point_instance[sel] + 1
            # interior points: the 3x3 neighbourhood has the same geom (no silhouette edge)
            nb = np.stack([seg[i + di, j + dj] for di in (-1, 0, 1) for dj in (-1, 0, 1)], 1)
            interior = (nb == geom[:, None]).sum(1) >= 6
            hit = seg[i, j] == geom
            checked += int(interior.sum())
            assert hit[interior].mean() > 0.98, (c, hit[interior].mean())
        assert checked > 50
    finally:
        s.close()


def test_sequence_is_deterministic_and_poses_consistent(seq: list[us.UniFrame]) -> None:
    again = us.generate_sequence(us.SPLIT_SEEDS["train"][0], num_frames=3)
    for a, b in zip(seq, again, strict=True):
        np.testing.assert_array_equal(a.points, b.points)
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.bev_semantic, b.bev_semantic)
    np.testing.assert_allclose(seq[0].ego_pose, np.eye(4), atol=1e-12)
    # a static world point seen from two frames: ego_t^-1 · ego_s maps frame-s coordinates to frame t
    p_world = np.array([12.0, 3.0, -1.0, 1.0])
    p0 = np.linalg.inv(seq[0].ego_pose) @ p_world
    p2 = np.linalg.inv(seq[2].ego_pose) @ p_world
    np.testing.assert_allclose(np.linalg.inv(seq[2].ego_pose) @ seq[0].ego_pose @ p0, p2, atol=1e-12)
    assert np.linalg.norm(seq[2].ego_pose[:3, 3]) > 0.5  # the ego moved


def test_labels_match_points_and_tracks(seq: list[us.UniFrame]) -> None:
    f = seq[1]
    lab = f.point_instance >= 0
    inside = us.points_in_boxes(f.points[lab], f.boxes, margin=0.1)
    assert inside[np.arange(lab.sum()), f.point_instance[lab]].all()
    np.testing.assert_array_equal(np.bincount(f.point_instance[lab], minlength=len(f.boxes)), f.box_num_points)
    np.testing.assert_array_equal(seq[0].box_track, seq[2].box_track)
    # footprints: each class channel is set at the BEV cell containing each box centre inside the grid
    cfg = us.UniSceneConfig()
    ny, nx = cfg.bev_shape
    assert f.bev_semantic.shape == (4, ny, nx) and f.occupancy.shape == (cfg.occ_bins, ny, nx)
    for b, c in zip(f.boxes, f.box_class, strict=True):
        j = math.floor((b[0] - cfg.bev_range[0]) / cfg.bev_cell)
        i = math.floor((b[1] - cfg.bev_range[1]) / cfg.bev_cell)
        if 0 <= i < ny and 0 <= j < nx and min(b[3], b[4]) >= 2 * cfg.bev_cell:
            assert f.bev_semantic[1 + c, i, j] == 1
            assert f.occupancy[:, i, j].any()
    # the ego stands on the road: the drivable cell under the ego (x = 0.4 m, y = 0) is set
    assert f.bev_semantic[0, ny // 2, 0] == 1


def test_variants_and_disjoint_splits() -> None:
    cfg = us.UniSceneConfig()
    seeds = {k: set(v) for k, v in us.SPLIT_SEEDS.items()}
    assert not (seeds["train"] & seeds["val"]) and not (seeds["train"] & seeds["test"]) and not (
        seeds["val"] & seeds["test"])
    assert {us.variant_of(s, cfg) for s in range(4)} == set(us.VARIANTS)
    assert cfg.lidar_config("sparse").num_beams == 16 and cfg.lidar_config("far").place_x[0] == 25.0


def test_split_round_trip(tmp_path, seq: list[us.UniFrame]) -> None:
    cfg = us.UniSceneConfig()
    npz, js = us.save_split(tmp_path / "train", seq, cfg)
    meta = json.loads(js.read_text())
    assert meta["num_frames"] == len(seq) and meta["semantic_channels"] == list(us.SEMANTIC_CHANNELS)
    frames, cfg2 = us.load_split(tmp_path / "train")
    assert cfg2 == cfg and len(frames) == len(seq)
    for a, b in zip(seq, frames, strict=True):
        np.testing.assert_array_equal(a.points, b.points)
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.occupancy, b.occupancy)
        np.testing.assert_array_equal(a.box_track, b.box_track)
        np.testing.assert_allclose(a.ego_pose, b.ego_pose)
        assert a.variant == b.variant and a.frame_index == b.frame_index
    with np.load(npz, allow_pickle=False) as z:  # no object arrays anywhere
        assert all(z[k].dtype != object for k in z.files)
    npz.write_bytes(npz.read_bytes() + b"x")
    with pytest.raises(ValueError, match="sha256"):
        us.load_split(tmp_path / "train")


def test_lstack_unilion_gen_data_writes_loadable_splits(tmp_path) -> None:
    from latentstack.cli import main

    assert main(["unilion", "gen-data", "--data", str(tmp_path), "--train", "1", "--val", "1", "--test", "1",
                 "--frames", "2"]) == 0
    seeds = {}
    for split in ("train", "val", "test"):
        frames, cfg = us.load_split(tmp_path / split)
        assert len(frames) == 2 and cfg.num_frames == 2
        seeds[split] = {f.seq_seed for f in frames}
        assert seeds[split] <= set(us.SPLIT_SEEDS[split])
