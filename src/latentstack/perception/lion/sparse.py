"""Sparse voxel tensors in pure torch: container, submanifold conv, merging/expanding, generation.

Coordinates are int64 ``(b, z, y, x)`` rows (spconv / OpenPCDet order); ``spatial_shape`` is
``(Z, Y, X)``. Nothing here needs spconv or CUDA: neighbour lookup is a sorted-key
``searchsorted``. Spec lion.md §6.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "SparseVoxels",
    "SpatialFeatureDescriptor",
    "SubMConv3d",
    "coords_key",
    "voxel_expand",
    "voxel_generation",
    "voxel_merge",
]


@dataclass
class SparseVoxels:
    features: torch.Tensor  # (N, C)
    coords: torch.Tensor  # (N, 4) int64 (b, z, y, x)
    spatial_shape: tuple[int, int, int]  # (Z, Y, X)
    batch_size: int

    def __post_init__(self) -> None:
        if self.coords.dim() != 2 or self.coords.shape[1] != 4:
            raise ValueError(f"coords must be (N, 4) (b, z, y, x), got {tuple(self.coords.shape)}")
        if self.features.shape[0] != self.coords.shape[0]:
            raise ValueError(f"{self.features.shape[0]} feature rows for {self.coords.shape[0]} coords")

    def replace(self, features: torch.Tensor) -> SparseVoxels:
        return SparseVoxels(features, self.coords, self.spatial_shape, self.batch_size)

    def dense(self) -> torch.Tensor:
        """(B, C, Z, Y, X) dense tensor (tests, height compression)."""
        z, y, x = self.spatial_shape
        out = self.features.new_zeros(self.batch_size, z, y, x, self.features.shape[1])
        c = self.coords
        out[c[:, 0], c[:, 1], c[:, 2], c[:, 3]] = self.features
        return out.permute(0, 4, 1, 2, 3).contiguous()


def coords_key(coords: torch.Tensor, spatial_shape: tuple[int, int, int]) -> torch.Tensor:
    """Unique int64 key per (b, z, y, x); order = batch, z, y, x."""
    z, y, x = spatial_shape
    return ((coords[:, 0] * z + coords[:, 1]) * y + coords[:, 2]) * x + coords[:, 3]


def _neighbor_index(coords: torch.Tensor, spatial_shape: tuple[int, int, int], kernel: int = 3) -> torch.Tensor:
    """(K³, N) index of the active neighbour at each kernel offset (−1 where inactive/outside).

    Offsets enumerate (dz, dy, dx) in row-major order, matching ``weight[:, :, dz, dy, dx]`` of a
    dense ``conv3d`` (cross-correlation, padding k//2).
    """
    key = coords_key(coords, spatial_shape)
    sorted_key, order = torch.sort(key)
    r = kernel // 2
    rng = torch.arange(-r, r + 1, device=coords.device)
    dz, dy, dx = torch.meshgrid(rng, rng, rng, indexing="ij")
    offs = torch.stack([dz.reshape(-1), dy.reshape(-1), dx.reshape(-1)], 1)  # (K³, 3)
    nb = coords[None, :, 1:] + offs[:, None, :]  # (K³, N, 3)
    shape = torch.tensor(spatial_shape, device=coords.device)
    inside = ((nb >= 0) & (nb < shape)).all(-1)
    nb_coords = torch.cat([coords[None, :, :1].expand(len(offs), -1, -1), nb], -1).reshape(-1, 4)
    nkey = coords_key(nb_coords, spatial_shape).reshape(len(offs), -1)
    pos = torch.searchsorted(sorted_key, nkey).clamp_max(len(sorted_key) - 1)
    found = (sorted_key[pos] == nkey) & inside
    return torch.where(found, order[pos], torch.full_like(pos, -1))


class SubMConv3d(nn.Module):
    """Submanifold 3-D convolution: outputs only at active sites, inputs only from active sites.

    Weight layout ``(C_out, C_in, k, k, k)`` is that of ``nn.Conv3d`` so the result equals a dense
    conv3d (padding k//2) read at the active sites.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = False) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError("submanifold conv needs an odd kernel size")
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size, kernel_size))
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x: SparseVoxels) -> SparseVoxels:
        nbr = _neighbor_index(x.coords, x.spatial_shape, self.kernel_size)  # (K³, N)
        w = self.weight.flatten(2).permute(2, 1, 0)  # (K³, C_in, C_out)
        feats = x.features
        out = feats.new_zeros(feats.shape[0], w.shape[2])
        for k in range(nbr.shape[0]):
            idx = nbr[k]
            # an offset with no active neighbour adds an empty (0, C_out) block: same result, and no extra
            # ``bool(valid.any())`` host sync per offset (``nonzero`` is the one data-dependent step)
            rows = (idx >= 0).nonzero().squeeze(1)
            out = out.index_add(0, rows, feats[idx[rows]] @ w[k])
        if self.bias is not None:
            out = out + self.bias
        return x.replace(out)


class SpatialFeatureDescriptor(nn.Module):
    """SFD: SubMConv3d(C, C, 3, no bias) → LayerNorm → GELU on the same active set (spec §6)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = SubMConv3d(channels, channels, 3, bias=False)
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: SparseVoxels) -> SparseVoxels:
        return x.replace(F.gelu(self.norm(self.conv(x).features)))


def voxel_merge(x: SparseVoxels, scale: tuple[int, int, int]) -> tuple[SparseVoxels, torch.Tensor]:
    """Merge by ``scale = (sx, sy, sz)``: coords // s, unique, scatter_add features.

    Returns the coarse tensor (shape ``ceil(S/s)``) and ``unq_inv`` (fine row → coarse row).
    """
    sx, sy, sz = scale
    c = x.coords
    new = torch.stack([c[:, 0], c[:, 1] // sz, c[:, 2] // sy, c[:, 3] // sx], 1)
    z, y, xx = x.spatial_shape
    shape = (-(-z // sz), -(-y // sy), -(-xx // sx))
    unq, inv = torch.unique(coords_key(new, shape), return_inverse=True)
    # decode keys back to coords (keys are ordered b, z, y, x)
    xs = unq % shape[2]
    ys = (unq // shape[2]) % shape[1]
    zs = (unq // (shape[2] * shape[1])) % shape[0]
    bs = unq // (shape[2] * shape[1] * shape[0])
    coords = torch.stack([bs, zs, ys, xs], 1)
    feats = x.features.new_zeros(len(unq), x.features.shape[1]).index_add(0, inv, x.features)
    return SparseVoxels(feats, coords, shape, x.batch_size), inv


def voxel_expand(fine: SparseVoxels, coarse: SparseVoxels, inv: torch.Tensor) -> SparseVoxels:
    """VoxelExpanding: ``F_fine + F_coarse[inv]`` (the decoder then applies LayerNorm)."""
    return fine.replace(fine.features + coarse.features[inv])


# diagonal xy neighbours used by LION's voxel generation (spec §6)
_GEN_OFFSETS = ((-1, 1), (1, 1), (-1, -1), (1, -1))


def voxel_generation(x: SparseVoxels, ratio: float) -> SparseVoxels:
    """Add 4 zero-feature voxels around the top ``floor(ratio·n_b)`` voxels (by mean feature) per sample.

    Duplicates of existing coordinates are allowed here; the following merge deduplicates them.
    """
    if ratio <= 0:
        return x
    score = x.features.mean(1)
    _z, y, xx = x.spatial_shape
    new_coords = []
    for b in range(x.batch_size):
        rows = (x.coords[:, 0] == b).nonzero().squeeze(1)
        m = int(ratio * len(rows))
        if m == 0:
            continue
        top = rows[torch.topk(score[rows], m).indices]
        c = x.coords[top]
        for ox, oy in _GEN_OFFSETS:
            g = c.clone()
            g[:, 3] = (g[:, 3] + ox).clamp(0, xx - 1)
            g[:, 2] = (g[:, 2] + oy).clamp(0, y - 1)
            new_coords.append(g)
    if not new_coords:
        return x
    gen = torch.cat(new_coords)
    feats = torch.cat([x.features, x.features.new_zeros(len(gen), x.features.shape[1])])
    return SparseVoxels(feats, torch.cat([x.coords, gen]), x.spatial_shape, x.batch_size)
