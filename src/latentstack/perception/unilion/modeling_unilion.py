"""UniLION-tiny: LiDAR, camera and temporal tokens → one LION backbone → one BEV map → detection, BEV
segmentation and BEV occupancy heads (spec lion.md §9–9.1; the configuration docstring has the design).

The LION parts are imported from :mod:`latentstack.perception.lion` (VFE, ``LION3DBackbone``, ``VoxelMerging``,
``HeightCompression``, BEV backbone, ``CenterHead`` and its targets / loss / decoding), never copied. Checkpoints
are artifacts of type ``"unilion"`` through :mod:`latentstack.core.pretrained`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from latentstack.core.device import processor_on
from latentstack.core.pretrained import load_pretrained, save_pretrained
from latentstack.latent import Site

from ..lion.backbone import HeightCompression, LION3DBackbone, VoxelMerging
from ..lion.heads import BEVBackbone, CenterHead, _conv_bn, build_targets, center_loss
from ..lion.sparse import SparseVoxels, coords_key
from ..lion.vfe import DynamicVoxelVFE
from .configuration_unilion import MODES, RUNTIME_FIELDS, UniLIONConfig
from .processor_unilion import UniLIONProcessor
from .temporal import TemporalMemory, warp_memory
from .view_transform import depth_bin_index, downsample_min_depth, lidar_depth_image, lift_to_voxels

__all__ = ["CameraBranch", "UniLION", "build_unilion_targets", "cat_voxels", "footprint_select", "load_unilion",
           "save_unilion", "unilion_loss"]


def cat_voxels(parts: list[SparseVoxels]) -> SparseVoxels:
    """Token concatenation (features and coords); duplicates stay until ``input_merge``."""
    first = parts[0]
    if any(p.spatial_shape != first.spatial_shape or p.batch_size != first.batch_size for p in parts):
        raise ValueError("token sets to concatenate must share spatial shape and batch size")
    return SparseVoxels(torch.cat([p.features for p in parts]), torch.cat([p.coords for p in parts]),
                        first.spatial_shape, first.batch_size)


def footprint_select(x: SparseVoxels, fine_coords: torch.Tensor, fine_z: int) -> SparseVoxels:
    """Rows of ``x`` (a z-coarsened grid, same x/y) lying under any of ``fine_coords`` (b, z, y, x) on the input
    grid of ``fine_z`` slices."""
    zf = fine_z // x.spatial_shape[0]
    coarse = torch.stack([fine_coords[:, 0], fine_coords[:, 1] // zf, fine_coords[:, 2], fine_coords[:, 3]], 1)
    keep = torch.isin(coords_key(x.coords, x.spatial_shape), coords_key(coarse, x.spatial_shape))
    return SparseVoxels(x.features[keep], x.coords[keep], x.spatial_shape, x.batch_size)


class CameraBackbone(nn.Module):
    """Small CNN (strides 2, 4, 8) + a two-level FPN fused at stride 4 (UniLION: Swin-T + FPN, 256 ch)."""

    def __init__(self, channels: tuple[int, int, int], out_channels: int) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.s2 = nn.Sequential(_conv_bn(3, c1, 2), _conv_bn(c1, c1))
        self.s4 = nn.Sequential(_conv_bn(c1, c2, 2), _conv_bn(c2, c2))
        self.s8 = nn.Sequential(_conv_bn(c2, c3, 2), _conv_bn(c3, c3))
        self.lat4 = nn.Conv2d(c2, out_channels, 1)
        self.lat8 = nn.Conv2d(c3, out_channels, 1)
        self.out = _conv_bn(out_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f4 = self.s4(self.s2(x))
        f8 = self.s8(f4)
        top = F.interpolate(self.lat8(f8), size=f4.shape[-2:], mode="bilinear", align_corners=False)
        return self.out(self.lat4(f4) + top)


class CameraBranch(nn.Module):
    """Image features + LSS depth distribution (taking the projected LiDAR depth) → voxel tokens.

    The depth net is BEVFusion/UniLION's ``DepthLSSTransform`` in small: ``dtransform`` encodes the sparse LiDAR
    depth image (depth / d_max and a hit mask) down to the feature stride; ``depthnet`` maps
    ``cat(image features, depth features)`` to D depth logits + C context channels."""

    def __init__(self, cfg: UniLIONConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = CameraBackbone(cfg.image_channels, cfg.fpn_channels)
        d_ch = 16 if cfg.lidar_depth_input else 0
        self.dtransform = nn.Sequential(_conv_bn(2, 8, 2), _conv_bn(8, d_ch, 2)) if cfg.lidar_depth_input else None
        self.depthnet = nn.Sequential(_conv_bn(cfg.fpn_channels + d_ch, cfg.fpn_channels),
                                      nn.Conv2d(cfg.fpn_channels, cfg.num_depth_bins + cfg.channels, 1))

    def forward(self, images: torch.Tensor, intrinsics: torch.Tensor, cam2ego: torch.Tensor,
                lidar_depth: torch.Tensor | None) -> tuple[SparseVoxels, torch.Tensor]:
        """``images`` (B, N, 3, H, W) normalised; ``lidar_depth`` (B, N, H, W) → (tokens, depth logits
        (B, N, D, h, w))."""
        cfg = self.cfg
        b, n = images.shape[:2]
        x = self.encoder(images.flatten(0, 1))
        if self.dtransform is not None:
            if lidar_depth is None:
                raise ValueError("this camera branch takes the projected LiDAR depth (lidar_depth_input=True)")
            d = lidar_depth.flatten(0, 1)[:, None]
            x = torch.cat([x, self.dtransform(torch.cat([d / cfg.depth_range[1], (d > 0).to(d.dtype)], 1))], 1)
        y = self.depthnet(x)
        nd = cfg.num_depth_bins
        logits = y[:, :nd].unflatten(0, (b, n))
        ctx = y[:, nd:].unflatten(0, (b, n))
        tokens = lift_to_voxels(ctx, logits.softmax(2), intrinsics, cam2ego, cfg.depth_range, cfg.feature_stride,
                                cfg.depth_topk, cfg.point_range, cfg.voxel_size)
        return tokens, logits


class DenseBEVHead(nn.Module):
    """conv-BN-ReLU → 1×1 conv to ``out`` logits per BEV cell (segmentation channels or occupancy z bins)."""

    def __init__(self, in_channels: int, head_channels: int, out: int, bias: float = -2.19) -> None:
        super().__init__()
        self.net = nn.Sequential(_conv_bn(in_channels, head_channels), nn.Conv2d(head_channels, out, 1))
        nn.init.constant_(self.net[-1].bias, bias)  # start near p = 0.1: most cells are empty

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class UniLION(nn.Module):
    def __init__(self, config: UniLIONConfig) -> None:
        super().__init__()
        self.config = config
        lcfg = config.lion_config()
        self.lion_config = lcfg
        c = config.channels
        self.vfe = DynamicVoxelVFE(config.num_point_features, config.vfe_filters, config.point_range,
                                   config.voxel_size)
        self.input_proj = nn.Identity() if config.vfe_filters[-1] == c else nn.Linear(config.vfe_filters[-1], c)
        self.camera = CameraBranch(config)
        self.temporal_fuser = nn.Linear(c, c)
        # input_merge: VoxelMerging (1,1,1) without conv (sums tokens sharing a voxel, then LN); dow0 with SFD
        self.input_merge = VoxelMerging(c, (1, 1, 1), sfd=False, generation_ratio=0.0)
        self.dow0 = VoxelMerging(c, (1, 1, 1), sfd=config.sfd, generation_ratio=0.0)
        self.backbone_3d = LION3DBackbone(lcfg)
        self.map_to_bev = HeightCompression()
        self.bev_backbone = BEVBackbone(c * config.out_z, config.bev_channels, config.out_stride)
        self.head = CenterHead(config.bev_channels, config.head_channels, len(config.classes))
        self.seg_head = DenseBEVHead(config.bev_channels, config.head_channels, len(config.seg_classes))
        self.occ_head = DenseBEVHead(config.bev_channels, config.head_channels, config.occ_bins)
        self._processor = UniLIONProcessor(config)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def processor(self) -> UniLIONProcessor:
        return processor_on(self._processor, self.device)

    def latent_sites(self) -> dict[str, Site]:
        return {
            "bev": Site("map_to_bev", description="BEV map after HeightCompression (B, C·Z, Y, X)"),
            "head_in": Site("bev_backbone", description="shared input of the three heads (B, bev_channels, Y/s, X/s)"),
        }

    @property
    def memory_voxel_size(self) -> tuple[float, float, float]:
        vx, vy, vz = self.config.voxel_size
        return (vx, vy, vz * self.config.grid_size[2] / self.config.out_z)

    def forward(self, points: torch.Tensor, batch_size: int, *, mode: str = "L", images: torch.Tensor | None = None,
                intrinsics: torch.Tensor | None = None, cam2ego: torch.Tensor | None = None,
                memory: TemporalMemory | None = None, ego_pose: torch.Tensor | None = None,
                time_s: torch.Tensor | None = None, scene_id: torch.Tensor | None = None
                ) -> tuple[dict[str, torch.Tensor], TemporalMemory | None]:
        """One frame in ``mode`` ∈ {L, LT, LC, LCT} → (head outputs, the memory for the next frame).

        ``points`` (P, 1 + F) with a batch column; ``images`` (B, N, 3, H, W) normalised, ``intrinsics``
        (B, N, 3, 3), ``cam2ego`` (B, N, 4, 4) for C; ``ego_pose`` (B, 4, 4) world←ego, ``time_s`` (B,),
        ``scene_id`` (B,) to warp ``memory`` (T) and to store the next one (returned whenever they are given)."""
        cfg = self.config
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if points.dim() != 2 or points.shape[1] != 1 + cfg.num_point_features:
            raise ValueError(f"points must be (P, {1 + cfg.num_point_features}) with a batch column, "
                             f"got {tuple(points.shape)}")
        out: dict[str, torch.Tensor] = {}
        x = self.vfe(points, batch_size)
        parts = [x.replace(self.input_proj(x.features))]
        counts = {"lidar": len(x.features), "camera": 0, "temporal": 0}
        if "C" in mode:
            if images is None or intrinsics is None or cam2ego is None:
                raise ValueError(f"mode {mode!r} needs images, intrinsics and cam2ego")
            depth = lidar_depth_image(points, batch_size, intrinsics, cam2ego, cfg.image_size) \
                if cfg.lidar_depth_input else None
            cam, logits = self.camera(images, intrinsics, cam2ego, depth)
            parts.append(cam)
            counts["camera"] = len(cam.features)
            out["depth_logits"] = logits
            if depth is not None:  # the depth loss target: nearest LiDAR depth per feature pixel, as a bin
                out["depth_target"] = depth_bin_index(downsample_min_depth(depth, cfg.feature_stride),
                                                      cfg.depth_range)
        if "T" in mode and memory is not None:
            if ego_pose is None or time_s is None or scene_id is None:
                raise ValueError(f"mode {mode!r} with a memory needs ego_pose, time_s and scene_id")
            warped = warp_memory(memory, ego_pose, time_s, scene_id, cfg.point_range, cfg.voxel_size,
                                 cfg.max_seq_time)
            parts.append(warped.replace(self.temporal_fuser(warped.features)))
            counts["temporal"] = len(warped.features)
        observed = parts[:2] if "C" in mode else parts[:1]  # this frame's own tokens (not the memory's)
        tokens = cat_voxels(parts)
        x, _ = self.input_merge(tokens)
        x, _ = self.dow0(x)
        x = self.backbone_3d(x)
        new_memory = None
        if ego_pose is not None and time_s is not None and scene_id is not None:
            stored = x.replace(x.features.detach())
            if cfg.memory_footprint:
                stored = footprint_select(stored, torch.cat([p.coords for p in observed]), cfg.grid_size[2])
            new_memory = TemporalMemory(stored, self.memory_voxel_size, ego_pose.detach(), time_s.detach(),
                                        scene_id.detach())
        bev = self.bev_backbone(self.map_to_bev(x))
        out.update(self.head(bev))
        out["seg"] = self.seg_head(bev)
        out["occ"] = self.occ_head(bev)
        out["num_tokens"] = torch.tensor([counts["lidar"], counts["camera"], counts["temporal"], len(x.features)],
                                         device=points.device)
        return out, new_memory

    @torch.no_grad()
    def detect(self, clouds: list[np.ndarray], mode: str = "L", **inputs: Any) -> list[dict[str, np.ndarray]]:
        """Single frames (no memory) → per frame boxes/scores/labels and BEV seg/occupancy probabilities."""
        was = self.training
        self.eval()
        batch = self.processor(clouds, **inputs)
        out, _ = self(mode=mode, **batch)
        self.train(was)
        return self.processor.postprocess(out)


def build_unilion_targets(cfg: UniLIONConfig, boxes: list[np.ndarray], classes: list[np.ndarray],
                          seg: list[np.ndarray], occ: list[np.ndarray]) -> dict[str, torch.Tensor]:
    """LION's heatmap / box targets plus BEV segmentation (B, S, Y, X) and occupancy (B, Z, Y, X) targets."""
    tgt = build_targets(cfg.lion_config(), boxes, classes)
    ny, nx = cfg.bev_size
    seg_t = torch.from_numpy(np.stack(seg).astype(np.float32))
    occ_t = torch.from_numpy(np.stack(occ).astype(np.float32))
    if seg_t.shape[1:] != (len(cfg.seg_classes), ny, nx) or occ_t.shape[1:] != (cfg.occ_bins, ny, nx):
        raise ValueError(f"label grids {tuple(seg_t.shape[1:])} / {tuple(occ_t.shape[1:])} do not match the model's "
                         f"BEV map ({len(cfg.seg_classes)} / {cfg.occ_bins}, {ny}, {nx})")
    tgt["seg"], tgt["occ"] = seg_t, occ_t
    return tgt


def unilion_loss(cfg: UniLIONConfig, out: dict[str, torch.Tensor], tgt: dict[str, torch.Tensor]
                 ) -> tuple[torch.Tensor, dict[str, float]]:
    """Detection (LION CenterPoint loss) + ``seg_weight``·BCE(seg) + ``occ_weight``·BCE(occ) +
    ``depth_loss_weight``·CE(depth bins vs projected LiDAR depth; camera modes only)."""
    det, parts = center_loss(cfg.lion_config(), out, tgt)
    seg = F.binary_cross_entropy_with_logits(out["seg"], tgt["seg"])
    occ = F.binary_cross_entropy_with_logits(out["occ"], tgt["occ"])
    loss = det + cfg.seg_weight * seg + cfg.occ_weight * occ
    parts = {**parts, "det": float(det.detach()), "seg": float(seg.detach()), "occ": float(occ.detach())}
    if "depth_logits" in out and "depth_target" in out:
        logits = out["depth_logits"].movedim(2, -1).reshape(-1, cfg.num_depth_bins)
        target = out["depth_target"].reshape(-1)
        valid = target >= 0
        depth = (F.cross_entropy(logits[valid], target[valid]) if bool(valid.any())
                 else logits.sum() * 0.0)
        loss = loss + cfg.depth_loss_weight * depth
        parts["depth"] = float(depth.detach())
    return loss, parts


def save_unilion(model: UniLION, path: str | Path, extra: dict[str, Any] | None = None,
                 files: dict[str, bytes | str] | None = None) -> Path:
    """Write a ``"unilion"`` artifact (``model.safetensors`` + ``config.json``) through the one artifact format."""
    n = sum(p.numel() for p in model.parameters())
    return save_pretrained(model, path, model.config, files=files, extra={"num_parameters": n, **(extra or {})})


def load_unilion(path: str | Path, device: str | None = None) -> UniLION:
    """Load a ``"unilion"`` artifact; only ``RUNTIME_FIELDS`` may differ from the trained config."""
    model, _art = load_pretrained(path, UniLION, expect_type=UniLIONConfig.type, free_fields=RUNTIME_FIELDS,
                                  device=device)
    return model
