"""Processor of the LION detector: point clouds (numpy / lists / tensors) -> the model's point tensor on its
device, and head outputs -> per-cloud numpy boxes.

``LionDetector.forward`` sees one ``(ΣP, 5)`` tensor (batch index, x, y, z, intensity) already on its device;
the host-side steps (numpy -> tensor, stacking the clouds with their batch column, decoding with the numpy
rotated NMS) live here. The point tensor is assembled on the host, exactly as before, then moved once.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .configuration_lion import LionConfig
from .heads import decode

__all__ = ["LionProcessor", "batch_points"]


def batch_points(clouds: Sequence[np.ndarray] | Sequence[torch.Tensor],
                 device: torch.device | str | None = None) -> torch.Tensor:
    """List of (P_i, 4) clouds → (ΣP, 5) float32 with the batch index in column 0 (on ``device``; CPU if None)."""
    host = torch.device("cpu")
    rows = []
    for i, c in enumerate(clouds):
        t = c.detach().to(host, torch.float32) if isinstance(c, torch.Tensor) else torch.as_tensor(
            np.asarray(c, dtype=np.float32), device=host)
        if t.dim() != 2 or t.shape[1] != 4:
            raise ValueError(f"cloud {i}: expected (P, 4) x, y, z, intensity, got {tuple(t.shape)}")
        rows.append(torch.cat([torch.full((len(t), 1), float(i), device=host), t], 1))
    pts = torch.cat(rows) if rows else torch.zeros(0, 5, device=host)
    return pts if device is None else pts.to(device)


class LionProcessor:
    """Clouds -> ``(points, batch_size)`` on ``device``; head outputs -> ``[{"boxes", "scores", "labels"}]``."""

    def __init__(self, config: LionConfig, device: torch.device | str = "cpu") -> None:
        self.config = config
        self.device = torch.device(device)

    def to(self, device: torch.device | str) -> LionProcessor:
        self.device = torch.device(device)
        return self

    def __call__(self, clouds: Sequence[Any]) -> tuple[torch.Tensor, int]:
        return batch_points(clouds, self.device), len(clouds)

    def postprocess(self, out: dict[str, torch.Tensor]) -> list[dict[str, np.ndarray]]:
        """Peak picking + class-wise rotated NMS on the host (``decode`` moves the maps to the CPU once)."""
        return decode(self.config, out)
