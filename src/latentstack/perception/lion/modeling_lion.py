"""LION detector: DynamicVoxelVFE → LION 3-D backbone → HeightCompression → BEV backbone → CenterHead.

Checkpoints are artifacts of type ``"lion"`` (:mod:`latentstack.core.artifacts`; no pickle). Loading
refuses a wrong type or version, a tampered file, missing/unexpected tensors, shape/dtype mismatches, and any
architecture field of ``config.json`` that differs from the config the weights were saved with.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from latentstack.core.device import processor_on
from latentstack.core.pretrained import load_pretrained, save_pretrained
from latentstack.latent import Site

from .backbone import HeightCompression, LION3DBackbone
from .configuration_lion import RUNTIME_FIELDS, LionConfig
from .heads import BEVBackbone, CenterHead
from .processor_lion import LionProcessor, batch_points
from .vfe import DynamicVoxelVFE

__all__ = ["LionDetector", "batch_points", "load_detector", "save_detector"]


class LionDetector(nn.Module):
    def __init__(self, config: LionConfig) -> None:
        super().__init__()
        self.config = config
        self.vfe = DynamicVoxelVFE(config.num_point_features, config.vfe_filters, config.point_range,
                                   config.voxel_size)
        self.input_proj = (nn.Identity() if config.vfe_filters[-1] == config.channels
                           else nn.Linear(config.vfe_filters[-1], config.channels))
        self.backbone_3d = LION3DBackbone(config)
        self.map_to_bev = HeightCompression()
        z_out = config.grid_size[2]
        for _ in range(len(config.block_windows) + config.extra_z_downs):
            z_out = -(-z_out // 2)
        self.bev_in_channels = config.channels * z_out
        self.bev_backbone = BEVBackbone(self.bev_in_channels, config.bev_channels, config.out_stride)
        self.head = CenterHead(config.bev_channels, config.head_channels, len(config.classes))
        self._processor = LionProcessor(config)

    @property
    def device(self) -> torch.device:
        """Where the weights live (``.to(device)`` moves them; the processor follows)."""
        return next(self.parameters()).device

    @property
    def processor(self) -> LionProcessor:
        """Clouds -> point tensor on the model's current device; head outputs -> numpy boxes."""
        return processor_on(self._processor, self.device)

    def latent_sites(self) -> dict[str, Site]:
        return {
            "bev": Site("map_to_bev", description="BEV map after HeightCompression (B, C·Z, Y, X)"),
            "head_in": Site("bev_backbone", description="head input (B, bev_channels, Y/s, X/s)"),
        }

    def forward(self, points: torch.Tensor, batch_size: int) -> dict[str, torch.Tensor]:
        """``points``: (P, 5) = batch index, x, y, z, intensity → head outputs at BEV stride ``out_stride``."""
        if points.dim() != 2 or points.shape[1] != 1 + self.config.num_point_features:
            raise ValueError(f"points must be (P, {1 + self.config.num_point_features}) with a batch column, "
                             f"got {tuple(points.shape)}")
        x = self.vfe(points, batch_size)
        x = x.replace(self.input_proj(x.features))
        x = self.backbone_3d(x)
        bev = self.map_to_bev(x)
        return self.head(self.bev_backbone(bev))

    @torch.no_grad()
    def detect(self, clouds: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """Clouds (P, 4) → per cloud boxes (n, 7), scores, labels (class indices)."""
        was = self.training
        self.eval()
        proc = self.processor
        out = self(*proc(clouds))
        self.train(was)
        return proc.postprocess(out)


def save_detector(model: LionDetector, path: str | Path, extra: dict[str, Any] | None = None,
                  files: dict[str, bytes | str] | None = None) -> Path:
    """Write a ``"lion"`` artifact (``model.safetensors`` + ``config.json``; ``files``: side files such as the
    training log, hashed with the weights)."""
    n = sum(p.numel() for p in model.parameters())
    return save_pretrained(model, path, model.config, files=files,
                           extra={"num_parameters": n, **(extra or {})})


def load_detector(path: str | Path, device: str | None = None) -> LionDetector:
    """Load a ``"lion"`` artifact on ``device`` (default: its config's). Decoding fields (``RUNTIME_FIELDS``)
    may be edited in ``config.json``; any other difference from the trained weights is refused."""
    model, _art = load_pretrained(path, LionDetector, expect_type=LionConfig.type, free_fields=RUNTIME_FIELDS,
                                  device=device)
    return model
