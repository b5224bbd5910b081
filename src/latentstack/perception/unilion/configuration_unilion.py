"""UniLION configuration (a :class:`ModelConfig` of type ``"unilion"``) and presets (spec lion.md §9–9.1).

UniLION-tiny = the LION-tiny backbone (C = 32, one LION block at z 16, two z-halving merges, ``linear_out`` at
z 4, BiMamba d_state 8) over **three kinds of tokens in one sparse voxel grid**:

- LiDAR voxels (DynamicVoxelVFE, as LION);
- camera voxels: a small CNN + FPN (stride 4) and an LSS depth net over ``depth_range`` (UniLION: 1–60 m in
  0.5 m bins; here 1–52 m, the grid's reach) that also takes the LiDAR depth projected into each image; per
  feature pixel the **top-``depth_topk`` (4) depth bins** are lifted and their depth-weighted features are
  scatter-added into the LiDAR voxel grid; depth loss weight 0.05 against the projected LiDAR depth;
- temporal voxels: the previous frame's backbone output voxels, warped into the current ego frame by the ego
  poses, through one ``nn.Linear`` (``temporal_fuser``); the memory is dropped on a scene change or when more
  than ``max_seq_time`` (2 s) has passed. ``memory_footprint`` (default on, [inferred]) stores only the output
  voxels under the frame's own LiDAR/camera tokens, so voxel generation cannot grow the memory frame by frame.

They are concatenated, ``input_merge`` (VoxelMerging (1,1,1) without conv: sums tokens sharing a voxel, then
LayerNorm) and ``dow0`` ((1,1,1) with SFD) run before the LION blocks, and one BEV map (HeightCompression + the
LION BEV backbone) feeds three heads: CenterPoint-style detection (LION's head; UniLION uses TransFusion — too
heavy for the CPU), BEV segmentation (drivable area + one footprint channel per class, multi-label) and BEV
occupancy (``occ_bins`` height bins per BEV cell; UniLION's BEVOCCHead predicts 200×200×16).

**Modes.** Every forward takes ``mode`` ∈ {L, LT, LC, LCT}: which token kinds are present. **One model is
trained for all four by modality dropout**: each training step draws its mode uniformly (temporal steps run
the previous frame of the same sequence first, without gradient, to fill the memory). The released UniLION
instead stages training (det_map → seq_perception → seq_e2e, the last with the backbone frozen) with all
modalities present and reports that the one model then runs in any subset; we use dropout because a small model
trained only on LCT has no reason to keep an L-only path working, and it makes L / LT / LC / LCT of the same
weights a fair comparison. (Choice [inferred], stated here so the report can say it.)

Preset ``unilion_tiny``: grid x 0–51.2 m, |y| ≤ 25.6 m, z −3…1 m at 0.4 × 0.4 × 0.25 m → (128, 128, 16); BEV
map at stride 2 → 64 × 64 cells of 0.8 m (the label grid of :mod:`latentstack.sim.unilion_scenes`); 2 cameras
of 64 × 96 px. ``unilion_test``: a 25.6 m grid of 0.8 m voxels and 32 × 48 images, for unit tests.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from latentstack.core.config import PLACEMENT_FIELDS, ModelConfig, register_config

from ..lion.configuration_lion import LionConfig

__all__ = ["ARCH_FIELDS", "MODES", "PRESETS", "RUNTIME_FIELDS", "UniLIONConfig", "get_preset"]

MODES: tuple[str, ...] = ("L", "LT", "LC", "LCT")


@register_config("unilion")
@dataclass(frozen=True)
class UniLIONConfig(ModelConfig):
    name: str = "unilion_tiny"
    classes: tuple[str, ...] = ("Car", "Pedestrian", "Cyclist")
    # ---- LiDAR voxels + LION backbone (the fields of LionConfig; see lion_config())
    point_range: tuple[float, ...] = (0.0, -25.6, -3.0, 51.2, 25.6, 1.0)
    voxel_size: tuple[float, ...] = (0.4, 0.4, 0.25)
    num_point_features: int = 4
    vfe_filters: tuple[int, ...] = (32, 32)
    channels: int = 32
    block_windows: tuple[tuple[int, int, int], ...] = ((13, 13, 16),)
    block_group_sizes: tuple[int, ...] = (1024,)
    extra_z_downs: int = 1
    out_window: tuple[int, int, int] = (13, 13, 4)
    out_group_size: int = 256
    operator: str = "mamba"
    retnet_bidirectional: bool = False
    d_state: int = 8
    drop_path: float = 0.0
    sfd: bool = True
    generation_ratio: float = 0.2
    bev_channels: int = 64
    head_channels: int = 32
    out_stride: int = 2
    rot_code: str = "sincos2"
    gaussian_overlap: float = 0.1
    min_radius: int = 2
    loc_weight: float = 2.0
    score_threshold: float = 0.1
    max_detections: int = 100
    nms_iou: tuple[float, ...] = (0.7, 0.6, 0.55)
    # ---- camera branch
    num_cameras: int = 2
    image_size: tuple[int, int] = (64, 96)  # (H, W)
    image_channels: tuple[int, int, int] = (16, 32, 64)  # CNN stages at strides 2, 4, 8
    fpn_channels: int = 32
    feature_stride: int = 4  # the FPN output the depth net runs on
    depth_range: tuple[float, float, float] = (1.0, 52.0, 0.5)  # d_min, d_max, bin size (m)
    depth_topk: int = 4
    lidar_depth_input: bool = True
    depth_loss_weight: float = 0.05
    # ---- temporal
    max_seq_time: float = 2.0
    # keep in the memory only the output voxels under the frame's own LiDAR/camera tokens ([inferred]): storing
    # every output voxel let voxel generation diffuse the memory frame after frame (unilion_tiny, one 8-frame
    # sequence, LCT: 3.4k -> 25k tokens, measured); with the footprint it stays one frame's size
    memory_footprint: bool = True
    # ---- BEV heads
    seg_classes: tuple[str, ...] = ("drivable", "Car", "Pedestrian", "Cyclist")
    occ_bins: int = 8
    occ_z: tuple[float, float] = (-3.0, 1.0)
    seg_weight: float = 1.0
    occ_weight: float = 1.0

    BOUNDS: ClassVar[Mapping[str, tuple[float, float]]] = {
        **LionConfig.BOUNDS,  # the LiDAR/backbone fields are LION's, with LION's ranges
        "num_cameras": (1, 16), "image_size": (8, 4096),
        "image_channels": (1, 1024), "fpn_channels": (1, 1024), "feature_stride": (1, 64),
        "depth_range": (0.01, 1000.0), "depth_topk": (1, 64), "depth_loss_weight": (0.0, 1e6),
        "max_seq_time": (0.0, 1e6), "occ_bins": (1, 256), "occ_z": (-1e4, 1e4), "seg_weight": (0.0, 1e6),
        "occ_weight": (0.0, 1e6),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        self.lion_config()  # LION's own checks (operator, lengths, rot_code, ...)
        d0, d1, step = self.depth_range
        if not (d1 > d0 and step > 0):
            raise ValueError(f"depth_range must be (d_min, d_max > d_min, step > 0), got {self.depth_range}")
        if self.depth_topk > self.num_depth_bins:
            raise ValueError(f"depth_topk {self.depth_topk} > {self.num_depth_bins} depth bins")
        if self.feature_stride != 4:
            raise ValueError("the camera FPN outputs stride 4 (feature_stride must be 4)")
        if any(s % self.feature_stride for s in self.image_size):
            raise ValueError(f"image_size {self.image_size} must be divisible by feature_stride")
        if self.seg_classes[1:] != self.classes or not self.seg_classes:
            raise ValueError("seg_classes = (an area channel, *classes)")

    def lion_config(self) -> LionConfig:
        """The LION config of the shared parts (VFE, backbone, BEV backbone, detection head and its decoding)."""
        return LionConfig(**{k: getattr(self, k) for k in _LION_SHARED})

    @property
    def num_depth_bins(self) -> int:
        d0, d1, step = self.depth_range
        return round((d1 - d0) / step)

    @property
    def grid_size(self) -> tuple[int, int, int]:
        return self.lion_config().grid_size

    @property
    def bev_size(self) -> tuple[int, int]:
        return self.lion_config().bev_size

    @property
    def out_z(self) -> int:
        """z size of the backbone output (input z halved once per block and per extra merge)."""
        z = self.grid_size[2]
        for _ in range(len(self.block_windows) + self.extra_z_downs):
            z = -(-z // 2)
        return z


_LION_SHARED = tuple(sorted({f.name for f in dataclasses.fields(LionConfig)}
                            & {f.name for f in dataclasses.fields(UniLIONConfig)}))
RUNTIME_FIELDS = frozenset({"name", "score_threshold", "max_detections", "nms_iou", "max_seq_time"})
ARCH_FIELDS = frozenset(f.name for f in dataclasses.fields(UniLIONConfig)) - RUNTIME_FIELDS - PLACEMENT_FIELDS

PRESETS: dict[str, UniLIONConfig] = {
    "unilion_tiny": UniLIONConfig(),
    # unit tests only: 0.8 m voxels (32 x 32 x 8), BEV stride 1 (0.8 m cells), 32 x 48 images
    "unilion_test": UniLIONConfig(
        name="unilion_test", point_range=(0.0, -12.8, -3.0, 25.6, 12.8, 1.0), voxel_size=(0.8, 0.8, 0.5),
        channels=16, vfe_filters=(16, 16), block_windows=((13, 13, 8),), block_group_sizes=(256,),
        out_window=(13, 13, 2), out_group_size=128, d_state=4, bev_channels=16, head_channels=16, out_stride=1,
        image_size=(32, 48), image_channels=(8, 8, 16), fpn_channels=16, depth_range=(1.0, 27.0, 0.5)),
}


def get_preset(name: str, **overrides: Any) -> UniLIONConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown UniLION preset {name!r}; known: {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)
