"""Spec-level geometry of UniLION: view transform (projection ↔ lift), top-k depth scatter, input_merge sums,
ego-pose warp round trip (lion.md §9.1)."""
from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest
import torch

from latentstack.perception.lion.sparse import SparseVoxels, voxel_merge
from latentstack.perception.unilion import UniLION, get_preset
from latentstack.perception.unilion.modeling_unilion import cat_voxels
from latentstack.perception.unilion.temporal import TemporalMemory, voxel_centres, warp_memory, warp_points
from latentstack.perception.unilion.view_transform import (
    depth_bin_centres,
    depth_bin_index,
    downsample_min_depth,
    lidar_depth_image,
    lift_to_voxels,
    project_to_image,
)
from latentstack.sim import unilion_scenes as us

PR = (0.0, -12.8, -3.0, 25.6, 12.8, 1.0)
VS = (0.4, 0.4, 0.25)
DR = (1.0, 27.0, 0.5)


def _calib(cfg: us.UniSceneConfig) -> tuple[torch.Tensor, torch.Tensor]:
    k, t = us.camera_calibration(cfg)
    return torch.tensor(k, dtype=torch.float32)[None], torch.tensor(t, dtype=torch.float32)[None]


@pytest.mark.parametrize("cam", [0, 1])
@pytest.mark.parametrize(("i", "j", "k"), [(3, 5, 20), (5, 8, 12), (1, 0, 4), (4, 0, 30)])
def test_point_projects_to_its_pixel_and_lifts_to_its_voxel(cam: int, i: int, j: int, k: int) -> None:
    """The 3-D point of feature pixel (i, j) at depth-bin k's centre projects back into pixel (i, j) and bin k,
    and a one-hot depth at (i, j, k) lifts the pixel's feature into exactly that point's voxel."""
    scfg = us.UniSceneConfig(image_size=(32, 48))
    intr, c2e = _calib(scfg)
    s = 4
    kk, t = intr[0, cam].double(), c2e[0, cam].double()
    d = float(depth_bin_centres(DR, dtype=torch.float64)[k])
    u, v = (j + 0.5) * s, (i + 0.5) * s
    p_cam = torch.tensor([(u - kk[0, 2]) / kk[0, 0] * d, (v - kk[1, 2]) / kk[1, 1] * d, d], dtype=torch.float64)
    p = (t[:3, :3] @ p_cam + t[:3, 3]).float()
    inside = all(PR[a] < float(p[a]) < PR[a + 3] for a in range(3))
    uv, z = project_to_image(p[None], intr[0, cam], c2e[0, cam])
    assert (math.floor(uv[0, 0] / s), math.floor(uv[0, 1] / s)) == (j, i)
    assert int(depth_bin_index(z, DR)[0]) == k
    # the numpy projection of the data generator agrees
    uv_np, z_np = us.project_points(p[None].numpy(), intr[0, cam].numpy(), c2e[0, cam].numpy())
    np.testing.assert_allclose(uv_np, uv.numpy(), atol=1e-3)
    np.testing.assert_allclose(z_np, z.numpy(), atol=1e-4)
    h, w = 32 // s, 48 // s
    nd = round((DR[1] - DR[0]) / DR[2])
    feats = torch.zeros(1, 2, 3, h, w)
    feats[0, cam, :, i, j] = torch.tensor([1.0, 2.0, 3.0])
    prob = torch.zeros(1, 2, nd, h, w)
    prob[0, :, 0] = 1.0  # every other pixel: all mass in bin 0
    prob[0, cam, :, i, j] = 0.0
    prob[0, cam, k, i, j] = 1.0
    vox = lift_to_voxels(feats, prob, intr, c2e, DR, s, 4, PR, VS)
    nz = vox.features.abs().sum(1) > 0
    assert int(nz.sum()) == int(inside)  # (4, 0, 30) leaves the grid for camera 0: then nothing is lifted
    if not inside:
        return
    expect = [math.floor((float(p[a]) - PR[a]) / VS[a]) for a in range(3)]
    assert vox.coords[nz][0].tolist() == [0, expect[2], expect[1], expect[0]]
    assert torch.equal(vox.features[nz][0], torch.tensor([1.0, 2.0, 3.0]))


def test_topk_depth_scatter_sums_exactly() -> None:
    """Only the top-4 bins of each pixel are lifted and voxels hold the exact sums (dyadic camera and
    probabilities, integer features: every value is exact, so the brute-force reference matches bit for bit)."""
    torch.manual_seed(0)
    b, n, c, h, w, s = 2, 1, 3, 4, 6, 4
    nd = round((DR[1] - DR[0]) / DR[2])
    k = torch.tensor([[[8.0, 0.0, 12.0], [0.0, 8.0, 8.0], [0.0, 0.0, 1.0]]]).expand(b, n, 3, 3)
    c2e = torch.eye(4).repeat(b, n, 1, 1)
    c2e[..., :3, :3] = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # z fwd → x, x → −y
    c2e[..., :3, 3] = torch.tensor([0.5, 0.0, -0.25])
    feats = torch.randint(-8, 9, (b, n, c, h, w)).float()
    # per pixel: 4 dyadic probabilities on random distinct bins, a smaller remainder spread on 4 more bins
    prob = torch.zeros(b, n, nd, h, w)
    bins = torch.stack([torch.randperm(nd)[:8] for _ in range(b * n * h * w)]).view(b, n, h, w, 8)
    vals = torch.tensor([0.5, 0.25, 0.125, 0.0625, 0.015625, 0.015625, 0.015625, 0.015625])
    prob.scatter_(2, bins.permute(0, 1, 4, 2, 3), vals.view(1, 1, 8, 1, 1).expand(b, n, 8, h, w).contiguous())
    vox = lift_to_voxels(feats, prob, k, c2e, DR, s, 4, PR, VS)
    ref: dict[tuple[int, ...], np.ndarray] = defaultdict(lambda: np.zeros(c))
    centres = depth_bin_centres(DR, dtype=torch.float64).numpy()
    for bi in range(b):
        for i in range(h):
            for j in range(w):
                for q in range(4):  # the top-4 (the first four values are the largest)
                    kb = int(bins[bi, 0, i, j, q])
                    d = centres[kb]
                    xc, yc = ((j + 0.5) * s - 12.0) / 8.0 * d, ((i + 0.5) * s - 8.0) / 8.0 * d
                    pe = (d + 0.5, -xc, -yc - 0.25)
                    vx = [math.floor((pe[a] - PR[a]) / VS[a]) for a in range(3)]
                    if all(0 <= vx[a] < round((PR[a + 3] - PR[a]) / VS[a]) for a in range(3)):
                        ref[(bi, vx[2], vx[1], vx[0])] += vals[q].item() * feats[bi, 0, :, i, j].double().numpy()
    assert len(ref) > 10
    got = {tuple(cc.tolist()): f for cc, f in zip(vox.coords, vox.features.double().numpy(), strict=True)}
    assert set(got) == set(ref)
    for key, f in ref.items():
        assert np.array_equal(got[key], f), key


def test_lidar_depth_image_keeps_the_nearest_point_per_pixel() -> None:
    scfg = us.UniSceneConfig(image_size=(32, 48))
    intr, c2e = _calib(scfg)
    # two points on one pixel ray of camera 0 (at 10 m and 20 m) and one behind the camera
    kk, t = intr[0, 0].double(), c2e[0, 0].double()
    u, v = 20.5, 9.5
    ray = torch.tensor([(u - kk[0, 2]) / kk[0, 0], (v - kk[1, 2]) / kk[1, 1], 1.0], dtype=torch.float64)
    pts = [(t[:3, :3] @ (ray * d) + t[:3, 3]).float() for d in (20.0, 10.0, -5.0)]
    cloud = torch.stack([torch.cat([torch.zeros(1), p, torch.zeros(1)]) for p in pts])
    depth = lidar_depth_image(cloud, 1, intr, c2e, (32, 48))
    assert depth.shape == (1, 2, 32, 48)
    assert depth[0, 0, 9, 20].item() == pytest.approx(10.0, abs=1e-4)
    assert int((depth[0, 0] > 0).sum()) == 1
    down = downsample_min_depth(depth, 4)
    assert down.shape == (1, 2, 8, 12) and down[0, 0, 2, 5].item() == pytest.approx(10.0, abs=1e-4)
    assert int((down > 0).sum()) == 1


def test_input_merge_sums_duplicate_coordinates_exactly() -> None:
    torch.manual_seed(1)
    shape, b, c = (4, 6, 6), 2, 5

    def rand_set(n: int) -> SparseVoxels:
        coords = torch.stack([torch.randint(0, b, (n,)), torch.randint(0, 4, (n,)), torch.randint(0, 6, (n,)),
                              torch.randint(0, 6, (n,))], 1)
        return SparseVoxels(torch.randint(-100, 100, (n, c)).float(), coords, shape, b)

    lidar, cam, temp = rand_set(40), rand_set(60), rand_set(30)
    tokens = cat_voxels([lidar, cam, temp])
    merged, inv = voxel_merge(tokens, (1, 1, 1))
    ref: dict[tuple[int, ...], torch.Tensor] = {}
    for cc, f in zip(tokens.coords.tolist(), tokens.features, strict=True):
        ref[tuple(cc)] = ref.get(tuple(cc), torch.zeros(c)) + f
    assert len(merged.features) == len(ref) < len(tokens.features)  # there were duplicates
    for cc, f in zip(merged.coords.tolist(), merged.features, strict=True):
        assert torch.equal(f, ref[tuple(cc)])
    assert torch.equal(merged.coords[inv], tokens.coords)
    # the model's input_merge = that sum, then LayerNorm
    model = UniLION(get_preset("unilion_test", channels=c, vfe_filters=(c, c)))
    out, _ = model.input_merge(tokens)
    torch.testing.assert_close(out.features, model.input_merge.norm(merged.features))
    with pytest.raises(ValueError, match="share spatial shape"):
        cat_voxels([lidar, SparseVoxels(cam.features, cam.coords, (8, 6, 6), b)])


def _pose(x: float, y: float, yaw: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    t = torch.eye(4, dtype=dtype)
    t[0, 0], t[0, 1], t[1, 0], t[1, 1] = math.cos(yaw), -math.sin(yaw), math.sin(yaw), math.cos(yaw)
    t[0, 3], t[1, 3] = x, y
    return t


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ego_warp_round_trip_is_identity_on_voxel_centres(dtype: torch.dtype) -> None:
    coords = torch.stack([torch.randint(0, 2, (200,)), torch.randint(0, 16, (200,)), torch.randint(0, 64, (200,)),
                          torch.randint(0, 64, (200,))], 1)
    xyz = voxel_centres(coords, PR, VS, dtype)
    prev = torch.stack([_pose(3.0, -1.0, 0.3, dtype), _pose(-7.5, 2.0, -1.2, dtype)])
    cur = torch.stack([_pose(5.2, 0.4, 0.45, dtype), _pose(1.0, 1.0, 2.0, dtype)])
    b = coords[:, 0]
    fwd = warp_points(xyz, b, prev, cur)
    assert (fwd - xyz).abs().max() > 1.0  # it moved
    back = warp_points(fwd, b, cur, prev)
    tol = 1e-12 if dtype == torch.float64 else 2e-5  # fp32: a few ulps of ~40 m coordinates
    assert (back - xyz).abs().max() <= tol
    # a rigid motion keeps distances between the centres
    def dist(p: torch.Tensor) -> torch.Tensor:
        return (p[:, None] - p[None]).norm(dim=-1)

    torch.testing.assert_close(dist(fwd[b == 0]), dist(xyz[b == 0]), atol=50 * tol, rtol=0)


def test_warp_memory_voxel_round_trip_and_resets() -> None:
    """Whole-voxel motions (4 voxels forward, 90° turn about a voxel corner) map voxels onto voxels: warping the
    memory to the current frame and back restores every coordinate that stayed in the grid; a scene change or a
    gap over max_seq_time drops the sample's memory."""
    torch.manual_seed(2)
    n = 300
    coords = torch.stack([torch.zeros(n, dtype=torch.long), torch.randint(0, 16, (n,)), torch.randint(0, 64, (n,)),
                          torch.randint(0, 64, (n,))], 1)
    feats = torch.arange(n, dtype=torch.float32)[:, None]
    shape = (16, 64, 64)
    prev = _pose(0.0, 0.0, 0.0)[None]
    for cur in (_pose(4 * 0.4, 0.0, 0.0)[None], _pose(12.8, 0.0, math.pi / 2)[None]):
        mem = TemporalMemory(SparseVoxels(feats, coords, shape, 1), VS, prev, torch.zeros(1),
                             torch.zeros(1, dtype=torch.long))
        w = warp_memory(mem, cur, torch.full((1,), 0.5), torch.zeros(1, dtype=torch.long), PR, VS, 2.0)
        assert 0 < len(w.features) <= n
        back = warp_memory(TemporalMemory(w, VS, cur, torch.zeros(1), torch.zeros(1, dtype=torch.long)), prev,
                           torch.full((1,), 0.5), torch.zeros(1, dtype=torch.long), PR, VS, 2.0)
        idx = back.features[:, 0].long()
        assert torch.equal(back.coords, coords[idx])
    mem = TemporalMemory(SparseVoxels(feats, coords, shape, 1), VS, prev, torch.zeros(1), torch.zeros(1, dtype=torch.long))
    same = (prev, torch.zeros(1, dtype=torch.long))
    assert len(warp_memory(mem, same[0], torch.full((1,), 1.9), same[1], PR, VS, 2.0).features) == n
    assert len(warp_memory(mem, same[0], torch.full((1,), 2.1), same[1], PR, VS, 2.0).features) == 0
    assert len(warp_memory(mem, same[0], torch.full((1,), 0.2), torch.ones(1, dtype=torch.long), PR, VS, 2.0
                           ).features) == 0
    assert len(warp_memory(mem, same[0], torch.full((1,), -0.2), same[1], PR, VS, 2.0).features) == 0


def test_warp_matches_the_simulated_ego_motion(small_frames) -> None:
    """A static world point expressed in frame 0 and warped with the recorded ego poses lands where frame 1
    sees it."""
    frames, _ = small_frames
    p_world = np.array([[14.0, 2.0, -1.2, 1.0], [6.0, -3.0, 0.0, 1.0]])
    in0 = (np.linalg.inv(frames[0].ego_pose) @ p_world.T).T[:, :3]
    in1 = (np.linalg.inv(frames[1].ego_pose) @ p_world.T).T[:, :3]
    poses = [torch.tensor(f.ego_pose, dtype=torch.float32)[None] for f in frames]
    got = warp_points(torch.tensor(in0, dtype=torch.float32), torch.zeros(2, dtype=torch.long), poses[0], poses[1])
    np.testing.assert_allclose(got.numpy(), in1, atol=1e-4)
    assert np.abs(in1 - in0).max() > 0.2
