"""UniLION temporal tokens (spec lion.md §9.1, ``forward_temporal`` / ``store_temporal``), pure torch.

The memory is the previous frame's backbone output voxels (detached) with that frame's ego pose, time and scene
id per sample. At the next frame each memory voxel centre is moved by the relative ego motion
``T_cur⁻¹ · T_prev`` (both world←ego) and re-voxelised on the *input* grid, so the warped tokens can be
concatenated with the current LiDAR and camera tokens; rows that leave the grid are dropped, and a sample's
whole memory is dropped when its scene id changed, time went backwards or more than ``max_seq_time`` passed.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..lion.sparse import SparseVoxels
from .view_transform import rigid_inverse, voxelize_points

__all__ = ["TemporalMemory", "voxel_centres", "warp_memory", "warp_points"]


@dataclass
class TemporalMemory:
    voxels: SparseVoxels  # backbone output of the previous frame (features detached)
    voxel_size: tuple[float, float, float]  # metric size of its voxels (x, y, z)
    ego_pose: torch.Tensor  # (B, 4, 4) world <- ego of that frame
    time_s: torch.Tensor  # (B,)
    scene_id: torch.Tensor  # (B,) long


def voxel_centres(coords: torch.Tensor, point_range: tuple[float, ...], voxel_size: tuple[float, ...],
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N, 3) metric centres (x, y, z) of voxels with coords (b, z, y, x)."""
    idx = torch.stack([coords[:, 3], coords[:, 2], coords[:, 1]], 1).to(dtype)
    vs = torch.tensor(voxel_size, dtype=dtype, device=coords.device)
    return torch.tensor(point_range[:3], dtype=dtype, device=coords.device) + (idx + 0.5) * vs


def warp_points(xyz: torch.Tensor, batch: torch.Tensor, prev_pose: torch.Tensor, cur_pose: torch.Tensor
                ) -> torch.Tensor:
    """Points (N, 3) in their sample's previous ego frame → the current ego frame: ``T_cur⁻¹ T_prev p``."""
    rel = rigid_inverse(cur_pose) @ prev_pose  # (B, 4, 4)
    r = rel[batch]
    return (r[:, :3, :3] @ xyz[..., None]).squeeze(-1) + r[:, :3, 3]


def warp_memory(memory: TemporalMemory, cur_pose: torch.Tensor, cur_time: torch.Tensor, cur_scene: torch.Tensor,
                point_range: tuple[float, ...], voxel_size: tuple[float, ...], max_seq_time: float
                ) -> SparseVoxels:
    """The memory's tokens on the current input grid (features unchanged; duplicates kept for ``input_merge``)."""
    m = memory.voxels
    dt = cur_time - memory.time_s
    valid_sample = (cur_scene == memory.scene_id) & (dt >= 0) & (dt <= max_seq_time)
    b = m.coords[:, 0]
    keep = valid_sample[b]
    xyz = voxel_centres(m.coords, point_range, memory.voxel_size, m.features.dtype)
    warped = warp_points(xyz, b, memory.ego_pose.to(xyz.dtype), cur_pose.to(xyz.dtype))
    v, inside, (gx, gy, gz) = voxelize_points(warped, point_range, voxel_size)
    keep = keep & inside
    coords = torch.stack([b, v[:, 2], v[:, 1], v[:, 0]], 1)[keep]
    return SparseVoxels(m.features[keep], coords, (gz, gy, gx), m.batch_size)
