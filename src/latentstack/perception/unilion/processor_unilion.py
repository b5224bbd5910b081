"""Processor of UniLION: host inputs (clouds, uint8 camera images, calibration, ego poses) → the model's tensors
on its device; head outputs → per-frame numpy detections and BEV segmentation / occupancy probabilities.

Images are scaled to [0, 1] and normalised with fixed mean / std (ImageNet's); everything is assembled on the
host and moved once, as LION's processor does.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..lion.heads import decode
from ..lion.processor_lion import batch_points
from .configuration_unilion import UniLIONConfig

__all__ = ["IMAGE_MEAN", "IMAGE_STD", "UniLIONProcessor"]

IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


class UniLIONProcessor:
    def __init__(self, config: UniLIONConfig, device: torch.device | str = "cpu") -> None:
        self.config = config
        self.device = torch.device(device)

    def to(self, device: torch.device | str) -> UniLIONProcessor:
        self.device = torch.device(device)
        return self

    def images(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Per frame (N, H, W, 3) uint8 → (B, N, 3, H, W) float32 normalised, on the host."""
        cfg = self.config
        arr = np.stack([np.asarray(im) for im in images])
        want = (cfg.num_cameras, *cfg.image_size, 3)
        if arr.shape[1:] != want or arr.dtype != np.uint8:
            raise ValueError(f"images must be uint8 {want} per frame, got {arr.dtype} {arr.shape[1:]}")
        t = torch.from_numpy(arr).permute(0, 1, 4, 2, 3).float() / 255.0
        mean = torch.tensor(IMAGE_MEAN, device=t.device).view(1, 1, 3, 1, 1)
        std = torch.tensor(IMAGE_STD, device=t.device).view(1, 1, 3, 1, 1)
        return (t - mean) / std

    def __call__(self, clouds: Sequence[Any], images: Sequence[np.ndarray] | None = None,
                 intrinsics: Sequence[np.ndarray] | None = None, cam2ego: Sequence[np.ndarray] | None = None,
                 ego_pose: Sequence[np.ndarray] | None = None, time_s: Sequence[float] | None = None,
                 scene_id: Sequence[int] | None = None) -> dict[str, Any]:
        """Keyword arguments of :meth:`UniLION.forward` (all but ``mode`` / ``memory``) on ``self.device``."""
        dev = self.device
        out: dict[str, Any] = {"points": batch_points(clouds, dev), "batch_size": len(clouds)}

        def f32(x: Any) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(dev)  # host, then moved once

        if images is not None:
            out["images"] = self.images(images).to(dev)
        if intrinsics is not None:
            out["intrinsics"] = f32(np.stack(intrinsics))
        if cam2ego is not None:
            out["cam2ego"] = f32(np.stack(cam2ego))
        if ego_pose is not None:
            out["ego_pose"] = f32(np.stack(ego_pose))
        if time_s is not None:
            out["time_s"] = f32(time_s)
        if scene_id is not None:
            out["scene_id"] = torch.from_numpy(np.ascontiguousarray(scene_id, dtype=np.int64)).to(dev)
        return out

    def postprocess(self, out: dict[str, torch.Tensor]) -> list[dict[str, np.ndarray]]:
        """LION's peak picking + rotated NMS, plus ``seg`` (S, Y, X) and ``occ`` (Z, Y, X) probabilities."""
        dets = decode(self.config.lion_config(), out)
        seg = torch.sigmoid(out["seg"].detach()).cpu().numpy()
        occ = torch.sigmoid(out["occ"].detach()).cpu().numpy()
        for i, d in enumerate(dets):
            d["seg"], d["occ"] = seg[i], occ[i]
        return dets
