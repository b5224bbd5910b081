"""Camera ↔ voxel geometry of UniLION's LSS view transform (spec lion.md §9.1), pure torch, device-clean.

Conventions (as :mod:`latentstack.sim.unilion_scenes`): OpenCV camera axes (x right, y down, z forward);
``intrinsics`` K maps camera coordinates to pixels, pixel (row i, col j) covering ``u ∈ [j, j+1)``,
``v ∈ [i, i+1)``; ``cam2ego`` maps camera to ego coordinates. A feature map at stride s has feature pixel (i, j)
covering image pixels ``[j·s, (j+1)·s)``; its ray goes through the centre ``((j+½)·s, (i+½)·s)``. Depth is the
camera z-depth; bin k covers ``[d_min + k·step, d_min + (k+1)·step)`` and is lifted at its centre.
"""
from __future__ import annotations

import torch

from ..lion.sparse import SparseVoxels, coords_key

__all__ = [
    "depth_bin_centres",
    "depth_bin_index",
    "downsample_min_depth",
    "lidar_depth_image",
    "lift_to_voxels",
    "pixel_centres",
    "project_to_image",
    "rigid_inverse",
    "voxelize_points",
]


def rigid_inverse(t: torch.Tensor) -> torch.Tensor:
    """Inverse of rigid 4×4 transforms (..., 4, 4): ``[Rᵀ, −Rᵀt]`` (exact up to rounding, no general inverse)."""
    r, tr = t[..., :3, :3], t[..., :3, 3:]
    out = torch.zeros_like(t)
    out[..., :3, :3] = r.transpose(-1, -2)
    out[..., :3, 3:] = -r.transpose(-1, -2) @ tr
    out[..., 3, 3] = 1.0
    return out


def depth_bin_centres(depth_range: tuple[float, float, float], device: torch.device | str | None = None,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    d0, d1, step = depth_range
    n = round((d1 - d0) / step)
    return d0 + (torch.arange(n, device=device, dtype=dtype) + 0.5) * step


def depth_bin_index(depth: torch.Tensor, depth_range: tuple[float, float, float]) -> torch.Tensor:
    """Bin of each depth (long), −1 for 0 (no depth) or outside the range."""
    d0, d1, step = depth_range
    n = round((d1 - d0) / step)
    k = torch.floor((depth - d0) / step).long()
    return torch.where((depth > 0) & (k >= 0) & (k < n), k, torch.full_like(k, -1))


def pixel_centres(h: int, w: int, stride: int, device: torch.device | str | None = None,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(h, w, 2) image coordinates (u, v) of the centres of the feature pixels of a stride-``stride`` map."""
    v = (torch.arange(h, device=device, dtype=dtype) + 0.5) * stride
    u = (torch.arange(w, device=device, dtype=dtype) + 0.5) * stride
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    return torch.stack([uu, vv], -1)


def project_to_image(points: torch.Tensor, intrinsics: torch.Tensor, cam2ego: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Ego points (P, 3) → (u, v) pixel coordinates (P, 2) and z-depth (P,) in one camera (K (3,3), (4,4))."""
    e2c = rigid_inverse(cam2ego)
    pc = points @ e2c[:3, :3].T + e2c[:3, 3]
    z = pc[:, 2]
    uv = (pc @ intrinsics.T)[:, :2] / z.clamp_min(1e-6)[:, None]
    return uv, z


def lidar_depth_image(points: torch.Tensor, batch_size: int, intrinsics: torch.Tensor, cam2ego: torch.Tensor,
                      image_size: tuple[int, int], min_depth: float = 0.1) -> torch.Tensor:
    """Sparse depth images (B, N, H, W): the nearest LiDAR z-depth per pixel, 0 where no point projects.

    ``points`` (P, 1 + F) with the batch index in column 0 (the model's point tensor)."""
    h, w = image_size
    n_cam = intrinsics.shape[1]
    flat = points.new_full((batch_size * n_cam * h * w,), float("inf"))
    b = points[:, 0].long()
    for c in range(n_cam):
        # per-point camera parameters of its own sample
        e2c = rigid_inverse(cam2ego[:, c])[b]  # (P, 4, 4)
        pc = (e2c[:, :3, :3] @ points[:, 1:4, None]).squeeze(-1) + e2c[:, :3, 3]
        z = pc[:, 2]
        uvw = (intrinsics[:, c][b] @ pc[..., None]).squeeze(-1)
        u = torch.floor(uvw[:, 0] / z.clamp_min(1e-6)).long()
        v = torch.floor(uvw[:, 1] / z.clamp_min(1e-6)).long()
        ok = (z > min_depth) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
        idx = ((b * n_cam + c) * h + v) * w + u
        flat = flat.scatter_reduce(0, idx[ok], z[ok], reduce="amin")
    flat = torch.where(torch.isinf(flat), torch.zeros_like(flat), flat)
    return flat.view(batch_size, n_cam, h, w)


def downsample_min_depth(depth: torch.Tensor, stride: int) -> torch.Tensor:
    """(…, H, W) sparse depth → (…, H/s, W/s): the nearest positive depth in each s×s patch, 0 if none."""
    big = torch.where(depth > 0, depth, torch.full_like(depth, float("inf")))
    lead = depth.shape[:-2]
    m = -torch.nn.functional.max_pool2d(-big.reshape(-1, 1, *depth.shape[-2:]), stride)
    m = torch.where(torch.isinf(m), torch.zeros_like(m), m)
    return m.reshape(*lead, *m.shape[-2:])


def voxelize_points(xyz: torch.Tensor, point_range: tuple[float, ...], voxel_size: tuple[float, ...]
                    ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int, int]]:
    """Metric points (P, 3) → voxel indices (P, 3) as (x, y, z), inside mask (P,), grid (X, Y, Z)."""
    pmin = xyz.new_tensor(point_range[:3])
    vs = xyz.new_tensor(voxel_size)
    grid = tuple(round((point_range[i + 3] - point_range[i]) / voxel_size[i]) for i in range(3))
    v = torch.floor((xyz - pmin) / vs).long()
    inside = ((v >= 0) & (v < torch.tensor(grid, device=v.device))).all(1)
    return v, inside, grid  # type: ignore[return-value]


def lift_to_voxels(feats: torch.Tensor, depth_prob: torch.Tensor, intrinsics: torch.Tensor, cam2ego: torch.Tensor,
                   depth_range: tuple[float, float, float], stride: int, topk: int, point_range: tuple[float, ...],
                   voxel_size: tuple[float, ...]) -> SparseVoxels:
    """LSS lift, UniLION style: per feature pixel keep the ``topk`` most probable depth bins, place the feature
    weighted by each bin's probability at that bin's 3-D point, and **scatter-add** into the voxel grid.

    ``feats`` (B, N, C, h, w), ``depth_prob`` (B, N, D, h, w) (a distribution over bins; not renormalised after
    top-k), ``intrinsics`` (B, N, 3, 3), ``cam2ego`` (B, N, 4, 4). Returns sparse voxels ``(b, z, y, x)`` sorted by
    key, each the sum of every lifted feature that falls in it; points outside the grid are dropped."""
    bsz, _n_cam, c, h, w = feats.shape
    dev, dt = feats.device, feats.dtype
    bins = depth_bin_centres(depth_range, dev, dt)
    prob, idx = depth_prob.topk(topk, dim=2)  # (B, N, k, h, w)
    d = bins[idx]
    uv = pixel_centres(h, w, stride, dev, dt)
    uv1 = torch.cat([uv, torch.ones_like(uv[..., :1])], -1)  # (h, w, 3)
    k_inv = torch.linalg.inv(intrinsics.to(dt))  # (B, N, 3, 3)
    rays = torch.einsum("bnij,hwj->bnhwi", k_inv, uv1)  # z = 1 rays
    pc = d[..., None] * rays[:, :, None]  # (B, N, k, h, w, 3)
    r, t = cam2ego[..., :3, :3], cam2ego[..., :3, 3]
    pe = torch.einsum("bnij,bnkhwj->bnkhwi", r, pc) + t[:, :, None, None, None, :]
    vf = prob[..., None] * feats.permute(0, 1, 3, 4, 2)[:, :, None]  # (B, N, k, h, w, C)
    bidx = torch.arange(bsz, device=dev).view(bsz, 1, 1, 1, 1).expand(prob.shape)
    v, inside, (gx, gy, gz) = voxelize_points(pe.reshape(-1, 3), point_range, voxel_size)
    coords = torch.stack([bidx.reshape(-1), v[:, 2], v[:, 1], v[:, 0]], 1)[inside]
    shape = (gz, gy, gx)
    unq, inv = torch.unique(coords_key(coords, shape), return_inverse=True)
    out = vf.reshape(-1, c)[inside]
    summed = out.new_zeros(len(unq), c).index_add(0, inv, out)
    xs = unq % gx
    ys = (unq // gx) % gy
    zs = (unq // (gx * gy)) % gz
    bs = unq // (gx * gy * gz)
    return SparseVoxels(summed, torch.stack([bs, zs, ys, xs], 1), shape, bsz)
