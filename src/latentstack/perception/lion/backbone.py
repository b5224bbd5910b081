"""LION 3-D backbone, one stride (LION ``lion_backbone_one_stride.py``, spec §1, §3, §6).

``LIONLayer`` = X-ordered then Y-ordered operator block over equal-size window groups;
``LIONBlock`` = a small sparse U-Net of four LION layers (enc0, enc1 shifted, dec0, dec1 shifted)
with (2,2,2) merging/expanding; between blocks ``VoxelMerging`` halves z (SFD + voxel generation).
``HeightCompression`` stacks the remaining z slices into BEV channels.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .configuration_lion import LionConfig
from .operators import OperatorBlock
from .sparse import SparseVoxels, SpatialFeatureDescriptor, voxel_expand, voxel_generation, voxel_merge
from .window import group_mapping

__all__ = ["HeightCompression", "LION3DBackbone", "LIONBlock", "LIONLayer", "PositionEmbedding", "VoxelMerging"]


class PositionEmbedding(nn.Module):
    """``Linear(3, C) → BN1d → ReLU → Linear(C, C)`` on ``2π·(xyz − S/2)/S`` (2-D if z size is 1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(3, channels), nn.BatchNorm1d(channels), nn.ReLU(),
                                 nn.Linear(channels, channels))

    def forward(self, x: SparseVoxels) -> torch.Tensor:
        z, y, xx = x.spatial_shape
        s = x.features.new_tensor([xx, y, z])
        p = torch.stack([x.coords[:, 3], x.coords[:, 2], x.coords[:, 1]], 1).to(x.features.dtype)
        p = 2 * math.pi * (p - s / 2) / s
        if z == 1:
            p = p * p.new_tensor([1.0, 1.0, 0.0])
        return self.mlp(p)


class LIONLayer(nn.Module):
    """Two operator blocks with separate weights: X-order groups, then Y-order groups."""

    def __init__(self, cfg: LionConfig, window: tuple[int, int, int], group_size: int, shift: bool) -> None:
        super().__init__()
        self.window, self.group_size, self.shift = tuple(window), int(group_size), shift
        kw = {"d_state": cfg.d_state} if cfg.operator == "mamba" else (
            {"retnet_bidirectional": cfg.retnet_bidirectional} if cfg.operator == "retnet" else {})
        self.blocks = nn.ModuleList(OperatorBlock(cfg.operator, cfg.channels, cfg.drop_path, **kw) for _ in range(2))

    def forward(self, x: SparseVoxels) -> SparseVoxels:
        if all(b.kind == "identity" for b in self.blocks):
            return x
        z, y, xx = x.spatial_shape
        maps = group_mapping(x.coords, x.batch_size, (xx, y, z), self.window, self.group_size, self.shift)
        feats = x.features
        for direction, block in zip(("x", "y"), self.blocks, strict=True):
            m = maps[direction]
            feats = m.scatter(block(m.gather(feats)), feats.shape[0])
        return x.replace(feats)


class VoxelMerging(nn.Module):
    """SFD → optional voxel generation → merge by ``scale`` (scatter_add) → LayerNorm."""

    def __init__(self, channels: int, scale: tuple[int, int, int], sfd: bool, generation_ratio: float) -> None:
        super().__init__()
        self.scale = tuple(scale)
        self.sfd = SpatialFeatureDescriptor(channels) if sfd else None
        self.ratio = generation_ratio
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: SparseVoxels) -> tuple[SparseVoxels, torch.Tensor]:
        if self.sfd is not None:
            x = self.sfd(x)
        if self.ratio > 0:
            x = voxel_generation(x, self.ratio)
        merged, inv = voxel_merge(x, self.scale)  # type: ignore[arg-type]
        return merged.replace(self.norm(merged.features)), inv


class LIONBlock(nn.Module):
    """enc0 → merge(2,2,2) → enc1(shift) → merge → dec0 → expand+LN → dec1(shift) → expand+LN."""

    def __init__(self, cfg: LionConfig, window: tuple[int, int, int], group_size: int) -> None:
        super().__init__()
        c = cfg.channels
        self.pos = nn.ModuleList(PositionEmbedding(c) for _ in range(2))
        self.enc = nn.ModuleList([LIONLayer(cfg, window, group_size, False), LIONLayer(cfg, window, group_size, True)])
        self.down = nn.ModuleList(VoxelMerging(c, (2, 2, 2), cfg.sfd, 0.0) for _ in range(2))
        self.dec = nn.ModuleList([LIONLayer(cfg, window, group_size, False), LIONLayer(cfg, window, group_size, True)])
        self.dec_norm = nn.ModuleList(nn.LayerNorm(c) for _ in range(2))

    def forward(self, x: SparseVoxels) -> SparseVoxels:
        skips, invs = [], []
        for pos, enc, down in zip(self.pos, self.enc, self.down, strict=True):
            x = x.replace(x.features + pos(x))
            x = enc(x)
            skips.append(x)
            x, inv = down(x)
            invs.append(inv)
        for dec, norm in zip(self.dec, self.dec_norm, strict=True):
            x = dec(x)
            skip, inv = skips.pop(), invs.pop()
            x = voxel_expand(skip, x, inv)
            x = x.replace(norm(x.features))
        return x


class LION3DBackbone(nn.Module):
    """Blocks with z-halving ``VoxelMerging`` (SFD + generation) between them, then ``linear_out``."""

    def __init__(self, cfg: LionConfig) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(LIONBlock(cfg, w, k) for w, k in zip(cfg.block_windows, cfg.block_group_sizes,
                                                                          strict=True))
        self.downs = nn.ModuleList(VoxelMerging(cfg.channels, (1, 1, 2), cfg.sfd, cfg.generation_ratio)
                                   for _ in range(len(cfg.block_windows) + cfg.extra_z_downs))
        self.linear_out = LIONLayer(cfg, cfg.out_window, cfg.out_group_size, shift=False)

    def forward(self, x: SparseVoxels, record: dict[str, SparseVoxels] | None = None) -> SparseVoxels:
        for i, (block, down) in enumerate(zip(self.blocks, self.downs[:len(self.blocks)], strict=True)):
            x = block(x)
            if record is not None:
                record[f"block{i}"] = x
            x, _ = down(x)
        for down in self.downs[len(self.blocks):]:
            x, _ = down(x)
        x = self.linear_out(x)
        if record is not None:
            record["linear_out"] = x
        return x


class HeightCompression(nn.Module):
    """Sparse (B, C, Z, Y, X) → dense BEV (B, C·Z, Y, X) (OpenPCDet ``HeightCompression``)."""

    def forward(self, x: SparseVoxels) -> torch.Tensor:
        d = x.dense()
        b, c, z, y, xx = d.shape
        return d.view(b, c * z, y, xx)
