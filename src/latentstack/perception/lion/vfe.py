"""Voxelization and DynamicVoxelVFE (OpenPCDet/LION ``dynamic_voxel_vfe.py``, spec §2)."""
from __future__ import annotations

import torch
from torch import nn

from .sparse import SparseVoxels

__all__ = ["DynamicVoxelVFE", "PFNLayerV2", "voxelize"]


def voxelize(points: torch.Tensor, point_range: tuple[float, ...], voxel_size: tuple[float, ...]
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[int, int, int]]:
    """Points (P, 1 + F) with a leading batch column → (kept points, voxel ids (X,Y,Z), unq_inv, grid (X,Y,Z)).

    ``unq_inv`` maps each kept point to its voxel; voxel order is that of the key
    ``b·X·Y·Z + vx·Y·Z + vy·Z + vz`` (``torch.unique`` sorts it).
    """
    if points.dim() != 2 or points.shape[1] < 4:
        raise ValueError(f"points must be (P, 1 + F>=3) with a batch column, got {tuple(points.shape)}")
    pmin = points.new_tensor(point_range[:3])
    vs = points.new_tensor(voxel_size)
    grid = tuple(round((point_range[i + 3] - point_range[i]) / voxel_size[i]) for i in range(3))
    v = torch.floor((points[:, 1:4] - pmin) / vs).long()
    g = torch.tensor(grid, device=v.device)
    keep = ((v >= 0) & (v < g)).all(1)
    points, v = points[keep], v[keep]
    b = points[:, 0].long()
    key = ((b * grid[0] + v[:, 0]) * grid[1] + v[:, 1]) * grid[2] + v[:, 2]
    unq, inv = torch.unique(key, return_inverse=True)
    return points, unq, inv, grid  # type: ignore[return-value]


class PFNLayerV2(nn.Module):
    """Linear(no bias) → BN1d(eps 1e-3, momentum 0.01) → ReLU; non-last layers concat the voxel max."""

    def __init__(self, in_channels: int, out_channels: int, last_layer: bool) -> None:
        super().__init__()
        self.last = last_layer
        out = out_channels if last_layer else out_channels // 2
        self.linear = nn.Linear(in_channels, out, bias=False)
        self.norm = nn.BatchNorm1d(out, eps=1e-3, momentum=0.01)

    def forward(self, x: torch.Tensor, inv: torch.Tensor, num_voxels: int) -> torch.Tensor:
        x = torch.relu(self.norm(self.linear(x)))
        x_max = x.new_zeros(num_voxels, x.shape[1]).scatter_reduce(
            0, inv[:, None].expand(-1, x.shape[1]), x, reduce="amax", include_self=False)
        return x_max if self.last else torch.cat([x, x_max[inv]], dim=1)


class DynamicVoxelVFE(nn.Module):
    """Point feature ``[x, y, z, i, xyz − mean_voxel(xyz), xyz − voxel_center]`` → PFN layers → voxel features."""

    def __init__(self, num_point_features: int, filters: tuple[int, ...], point_range: tuple[float, ...],
                 voxel_size: tuple[float, ...]) -> None:
        super().__init__()
        self.point_range, self.voxel_size = tuple(point_range), tuple(voxel_size)
        chans = [num_point_features + 6, *filters]
        self.pfn = nn.ModuleList(
            PFNLayerV2(chans[i], chans[i + 1], last_layer=i == len(filters) - 1) for i in range(len(filters)))

    def forward(self, points: torch.Tensor, batch_size: int) -> SparseVoxels:
        points, unq, inv, grid = voxelize(points, self.point_range, self.voxel_size)
        nv = len(unq)
        xyz = points[:, 1:4]
        cnt = torch.bincount(inv, minlength=nv).clamp_min(1).to(xyz.dtype)
        mean = xyz.new_zeros(nv, 3).index_add(0, inv, xyz) / cnt[:, None]
        X, Y, Z = grid
        vz = unq % Z
        vy = (unq // Z) % Y
        vx = (unq // (Z * Y)) % X
        vb = unq // (Z * Y * X)
        vcoord = torch.stack([vx, vy, vz], 1)
        center = (vcoord.to(xyz.dtype) + 0.5) * xyz.new_tensor(self.voxel_size) + xyz.new_tensor(self.point_range[:3])
        feats = torch.cat([points[:, 1:], xyz - mean[inv], xyz - center[inv]], dim=1)
        for layer in self.pfn:
            feats = layer(feats, inv, nv)
        coords = torch.stack([vb, vz, vy, vx], 1)  # (b, z, y, x)
        return SparseVoxels(feats, coords, (Z, Y, X), batch_size)
