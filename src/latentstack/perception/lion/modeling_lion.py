"""LION detector: DynamicVoxelVFE → LION 3-D backbone → HeightCompression → BEV backbone → CenterHead.

Checkpoints are a directory with ``model.safetensors`` + ``config.json`` (no pickle). Loading
refuses a wrong format, missing/unexpected tensors, shape mismatches, and any architecture
field of ``config.json`` that differs from the one stored in the safetensors metadata.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from latentstack.latent import Site

from .backbone import HeightCompression, LION3DBackbone
from .configuration_lion import ARCH_FIELDS, LionConfig
from .heads import BEVBackbone, CenterHead
from .processor_lion import LionProcessor, batch_points
from .vfe import DynamicVoxelVFE

__all__ = ["FORMAT", "LionDetector", "batch_points", "load_detector", "save_detector"]

FORMAT = "latentstack.lion"
FORMAT_VERSION = 1


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
        dev = self.device
        if self._processor.device != dev:
            self._processor.to(dev)
        return self._processor

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


def save_detector(model: LionDetector, path: str | Path, extra: dict[str, Any] | None = None) -> None:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = model.config.to_dict()
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION),
            "arch": json.dumps({k: v for k, v in cfg.items() if k in ARCH_FIELDS}, sort_keys=True)}
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path / "model.safetensors"), metadata=meta)
    n = sum(p.numel() for p in model.parameters())
    (path / "config.json").write_text(json.dumps(
        {"format": FORMAT, "format_version": FORMAT_VERSION, "class": "LionDetector", "config": cfg,
         "num_parameters": n, "extra": extra or {}}, indent=2, sort_keys=True) + "\n")


def load_detector(path: str | Path) -> LionDetector:
    path = Path(path)
    cfg_file, w_file = path / "config.json", path / "model.safetensors"
    if not cfg_file.is_file() or not w_file.is_file():
        raise FileNotFoundError(f"{path}: expected config.json and model.safetensors")
    meta_json = json.loads(cfg_file.read_text())
    if meta_json.get("format") != FORMAT or meta_json.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: not a {FORMAT} v{FORMAT_VERSION} checkpoint "
                         f"(format={meta_json.get('format')!r}, version={meta_json.get('format_version')!r})")
    cfg = LionConfig.from_dict(meta_json["config"])
    with safe_open(str(w_file), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            raise ValueError(f"{w_file}: safetensors metadata format {meta.get('format')!r} != {FORMAT!r}")
        arch = json.loads(meta.get("arch", "{}"))
        mine = json.loads(json.dumps({k: v for k, v in cfg.to_dict().items() if k in ARCH_FIELDS}))
        diff = sorted(k for k in set(arch) | set(mine) if arch.get(k) != mine.get(k))
        if diff:
            raise ValueError(f"{path}: config.json architecture fields {diff} differ from the trained weights")
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    model = LionDetector(cfg)
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    bad = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or bad:
        raise ValueError(f"{path}: checkpoint mismatch: missing {missing[:8]}, unexpected {unexpected[:8]}, "
                         f"shape mismatch {bad[:8]}")
    model.load_state_dict(state)
    model.eval()
    return model
