"""Sparse parts (spec tests 7, 11, 12, 13): VFE, SFD = dense conv, merge/expand, voxel generation."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from latentstack.perception.lion.sparse import (
    SparseVoxels,
    SubMConv3d,
    coords_key,
    voxel_expand,
    voxel_generation,
    voxel_merge,
)
from latentstack.perception.lion.vfe import DynamicVoxelVFE


def _random_sparse(n: int = 120, c: int = 4, shape: tuple[int, int, int] = (6, 9, 11), batch: int = 2,
                   seed: int = 0) -> SparseVoxels:
    g = torch.Generator().manual_seed(seed)
    coords = torch.stack([torch.randint(0, batch, (n,), generator=g), torch.randint(0, shape[0], (n,), generator=g),
                          torch.randint(0, shape[1], (n,), generator=g), torch.randint(0, shape[2], (n,), generator=g)],
                         1)
    coords = torch.unique(coords, dim=0)
    coords = coords[torch.randperm(len(coords), generator=g)]
    return SparseVoxels(torch.randn(len(coords), c, generator=g, dtype=torch.float64), coords, shape, batch)


def test_submconv_equals_dense_conv_at_active_sites() -> None:
    x = _random_sparse()
    torch.manual_seed(0)
    conv = SubMConv3d(4, 3, 3, bias=True).double()
    with torch.no_grad():
        conv.bias.normal_()
    y = conv(x)
    assert torch.equal(y.coords, x.coords)
    dense = F.conv3d(x.dense(), conv.weight, conv.bias, padding=1)
    c = x.coords
    ref = dense[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]]
    torch.testing.assert_close(y.features, ref, rtol=1e-10, atol=1e-10)


def test_merge_sums_children_and_expand_restores_active_set() -> None:
    x = _random_sparse()
    m, inv = voxel_merge(x, (2, 2, 2))
    assert m.spatial_shape == (3, 5, 6)
    assert len(torch.unique(coords_key(m.coords, m.spatial_shape))) == len(m.coords)
    for j in range(len(m.coords)):
        kids = inv == j
        torch.testing.assert_close(m.features[j], x.features[kids].sum(0))
        parent = torch.stack([x.coords[kids, 0], x.coords[kids, 1] // 2, x.coords[kids, 2] // 2,
                              x.coords[kids, 3] // 2], 1)
        assert (parent == m.coords[j]).all()
    up = voxel_expand(x, m, inv)
    assert torch.equal(up.coords, x.coords)
    torch.testing.assert_close(up.features, x.features + m.features[inv])
    one, inv1 = voxel_merge(x, (1, 1, 1))
    torch.testing.assert_close(one.features[inv1], x.features)


def test_voxel_generation_counts_offsets_and_dedup() -> None:
    x = _random_sparse(n=200, c=3)
    x = x.replace(x.features.float())
    g = voxel_generation(x, 0.2)
    n_orig = len(x.coords)
    extra = 0
    for b in range(x.batch_size):
        nb = int((x.coords[:, 0] == b).sum())
        extra += 4 * int(0.2 * nb)
    assert len(g.coords) == n_orig + extra
    assert torch.equal(g.coords[:n_orig], x.coords)
    assert (g.features[n_orig:] == 0).all()
    # the generated voxels are the 4 clamped diagonal neighbours of the top-scoring voxels
    score = x.features.mean(1)
    gen = g.coords[n_orig:]
    off = 0
    for b in range(x.batch_size):
        rows = (x.coords[:, 0] == b).nonzero().squeeze(1)
        m = int(0.2 * len(rows))
        top = rows[torch.topk(score[rows], m).indices]
        for k, (ox, oy) in enumerate(((-1, 1), (1, 1), (-1, -1), (1, -1))):
            blk = gen[off + k * m: off + (k + 1) * m]
            assert torch.equal(blk[:, 3], (x.coords[top, 3] + ox).clamp(0, x.spatial_shape[2] - 1))
            assert torch.equal(blk[:, 2], (x.coords[top, 2] + oy).clamp(0, x.spatial_shape[1] - 1))
            assert torch.equal(blk[:, 1], x.coords[top, 1])
        off += 4 * m
    merged, _ = voxel_merge(g, (1, 1, 2))
    assert len(torch.unique(coords_key(merged.coords, merged.spatial_shape))) == len(merged.coords)
    assert voxel_generation(x, 0.0) is x


def test_vfe_matches_manual_features_on_three_voxels() -> None:
    pr, vs = (0.0, 0.0, 0.0, 4.0, 4.0, 4.0), (1.0, 1.0, 1.0)
    pts = torch.tensor([[0, 0.2, 0.3, 0.4, 0.5], [0, 0.6, 0.1, 0.9, 0.1],   # voxel (0,0,0)
                        [0, 2.5, 1.5, 0.5, 0.7],                            # voxel (2,1,0)
                        [1, 3.1, 3.2, 3.3, 0.9], [1, 3.9, 3.8, 3.7, 0.2],   # voxel (3,3,3), sample 1
                        [0, 9.0, 0.0, 0.0, 0.0]])                            # out of range: dropped
    torch.manual_seed(0)
    vfe = DynamicVoxelVFE(4, (8, 6), pr, vs).eval()
    out = vfe(pts, 2)
    assert out.coords.tolist() == [[0, 0, 0, 0], [0, 0, 1, 2], [1, 3, 3, 3]]
    groups = [[0, 1], [2], [3, 4]]
    centers = torch.tensor([[0.5, 0.5, 0.5], [2.5, 1.5, 0.5], [3.5, 3.5, 3.5]])
    l1, l2 = vfe.pfn
    expected = []
    for gi, idx in enumerate(groups):
        p = pts[idx, 1:]
        xyz = p[:, :3]
        f = torch.cat([p, xyz - xyz.mean(0), xyz - centers[gi]], 1)  # 10-d
        h = torch.relu(l1.norm(l1.linear(f)))
        h = torch.cat([h, h.max(0, keepdim=True).values.expand_as(h)], 1)
        h = torch.relu(l2.norm(l2.linear(h)))
        expected.append(h.max(0).values)
    torch.testing.assert_close(out.features, torch.stack(expected), rtol=1e-5, atol=1e-6)
