"""LION detector configuration (a :class:`ModelConfig` of type ``"lion"``) and named presets.

Presets:

- ``lion_tiny`` — the model this project trains on CPU: C = 32, one LION block (win (13,13,16),
  K 1024) at z 16, two z-halving VoxelMerging layers (SFD + generation r = 0.2), ``linear_out``
  at z 4 (KITTI: 4 blocks, z 32→2), BiMamba operators with expand 2 and **d_state 8** (LION: 16;
  halved to fit the shared 2-core CPU — measured 2.7 s vs 5.0 s per batch-4 training step),
  CenterPoint-style head at BEV stride 2 (0.64 m cells); voxels 0.32 × 0.32 × 0.25 m, grid
  (128, 128, 16). ``lion_tiny_n16`` restores d_state 16.
- ``lion_tiny_identity`` — the ablation: identical except every operator block is the identity.
- ``lion_tiny_retnet`` — RetNet operator (code-faithful causal, ``retnet_bidirectional=False``).
- ``lion_kitti_mamba`` — the shapes of KITTI ``second_with_lion_mamba_64dim.yaml`` (backbone
  only: grid (352, 400, 32), C = 64, K 4096…256); for shape tests, far too big to train here.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from latentstack.core.config import PLACEMENT_FIELDS, ModelConfig, register_config

__all__ = ["ARCH_FIELDS", "PRESETS", "RUNTIME_FIELDS", "LionConfig", "get_preset"]


@register_config("lion")
@dataclass(frozen=True)
class LionConfig(ModelConfig):
    name: str = "lion_tiny"
    classes: tuple[str, ...] = ("Car", "Pedestrian", "Cyclist")
    point_range: tuple[float, ...] = (0.0, -20.48, -3.0, 40.96, 20.48, 1.0)
    voxel_size: tuple[float, ...] = (0.32, 0.32, 0.25)  # xy as LION's Waymo config
    num_point_features: int = 4
    vfe_filters: tuple[int, ...] = (32, 32)
    channels: int = 32
    # one (window (wx, wy, wz), group size K) per LION block; between blocks z is halved
    block_windows: tuple[tuple[int, int, int], ...] = ((13, 13, 16),)
    block_group_sizes: tuple[int, ...] = (1024,)
    extra_z_downs: int = 1  # z-halving VoxelMerging layers (SFD + generation) after the last block
    out_window: tuple[int, int, int] = (13, 13, 4)
    out_group_size: int = 256
    operator: str = "mamba"  # mamba | retnet | identity
    retnet_bidirectional: bool = False
    d_state: int = 8
    drop_path: float = 0.0
    sfd: bool = True
    generation_ratio: float = 0.2
    # BEV part
    bev_channels: int = 64
    head_channels: int = 32
    out_stride: int = 2
    # targets / losses (CenterPoint)
    # "sincos": CenterPoint's (sin yaw, cos yaw); "sincos2": (sin 2yaw, cos 2yaw), heading mod π —
    # the synthetic objects are boxes with no front/back, so yaw is only observable mod π
    rot_code: str = "sincos2"
    gaussian_overlap: float = 0.1
    min_radius: int = 2
    loc_weight: float = 2.0
    # decoding
    score_threshold: float = 0.1
    max_detections: int = 100
    nms_iou: tuple[float, ...] = (0.7, 0.6, 0.55)
    backbone_only: bool = field(default=False)

    # ranges checked before anything is built (issue 14: a config.json may be hostile); wide for this project
    BOUNDS: ClassVar[Mapping[str, tuple[float, float]]] = {
        "point_range": (-1e4, 1e4), "voxel_size": (1e-3, 100.0), "num_point_features": (1, 64),
        "vfe_filters": (1, 1024), "channels": (1, 1024), "block_windows": (1, 1024),
        "block_group_sizes": (1, 65536), "extra_z_downs": (0, 8), "out_window": (1, 1024),
        "out_group_size": (1, 65536), "d_state": (1, 256), "drop_path": (0.0, 1.0), "generation_ratio": (0.0, 1.0),
        "bev_channels": (1, 2048), "head_channels": (1, 2048), "out_stride": (1, 16), "gaussian_overlap": (0.0, 1.0),
        "min_radius": (0, 1024), "loc_weight": (0.0, 1e6), "score_threshold": (0.0, 1.0),
        "max_detections": (1, 100_000), "nms_iou": (0.0, 1.0),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.operator not in ("mamba", "retnet", "identity"):
            raise ValueError(f"operator must be mamba|retnet|identity, got {self.operator!r}")
        if len(self.block_windows) != len(self.block_group_sizes):
            raise ValueError("block_windows and block_group_sizes must have the same length")
        if len(self.point_range) != 6 or len(self.voxel_size) != 3:
            raise ValueError("point_range has 6 numbers, voxel_size 3")
        if len(self.nms_iou) != len(self.classes):
            raise ValueError("one NMS IoU per class")
        if self.rot_code not in ("sincos", "sincos2"):
            raise ValueError(f"rot_code must be sincos|sincos2, got {self.rot_code!r}")
        if not 0.0 <= self.generation_ratio < 1.0:
            raise ValueError("generation_ratio must be in [0, 1)")

    @property
    def grid_size(self) -> tuple[int, int, int]:
        """(X, Y, Z) voxels."""
        pr, vs = self.point_range, self.voxel_size
        return tuple(round((pr[i + 3] - pr[i]) / vs[i]) for i in range(3))  # type: ignore[return-value]

    @property
    def bev_size(self) -> tuple[int, int]:
        """(Y, X) cells of the head output."""
        x, y, _ = self.grid_size
        return (y // self.out_stride, x // self.out_stride)


# fields that only affect decoding may be edited in a checkpoint's config.json
RUNTIME_FIELDS = frozenset({"name", "score_threshold", "max_detections", "nms_iou"})
ARCH_FIELDS = frozenset(f.name for f in dataclasses.fields(LionConfig)) - RUNTIME_FIELDS - PLACEMENT_FIELDS

PRESETS: dict[str, LionConfig] = {
    "lion_tiny": LionConfig(),
    "lion_tiny_identity": LionConfig(name="lion_tiny_identity", operator="identity"),
    "lion_tiny_n16": LionConfig(name="lion_tiny_n16", d_state=16),
    "lion_tiny_retnet": LionConfig(name="lion_tiny_retnet", operator="retnet"),
    "lion_kitti_mamba": LionConfig(
        name="lion_kitti_mamba", point_range=(0.0, -40.0, -3.0, 70.4, 40.0, 1.0), voxel_size=(0.2, 0.2, 0.125),
        vfe_filters=(64, 64), channels=64, block_windows=((13, 13, 32), (13, 13, 16), (13, 13, 8), (13, 13, 4)),
        block_group_sizes=(4096, 2048, 1024, 512), extra_z_downs=0, out_window=(13, 13, 2), out_group_size=256,
        d_state=16, drop_path=0.2, rot_code="sincos", backbone_only=True),
}


def get_preset(name: str, **overrides: Any) -> LionConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown LION preset {name!r}; known: {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)
