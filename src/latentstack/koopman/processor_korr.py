"""Processor of the KORR models (residual actor-critics and the chunk-MLP base): numpy states/actions ->
float32 tensors on the model's device, and tensors -> float32 numpy.

The residual heads and the base take tensors only; the Policy-protocol wrappers (``ResidualPolicy``,
``ChunkBasePolicy``) convert through this. Conversion happens on the host first (same ops as before), then one
move, so CPU outputs are bit-identical.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["KorrProcessor", "module_device"]


def module_device(module: torch.nn.Module) -> torch.device:
    """Device of a module's first parameter or buffer (CPU for a module without any)."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


class KorrProcessor:
    """Vectors in (state ``(obs_dim,)``, action ``(action_dim,)``, or batches of them) -> tensors on ``device``."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)

    def to(self, device: torch.device | str) -> KorrProcessor:
        self.device = torch.device(device)
        return self

    def tensor(self, x: Any) -> torch.Tensor:
        """float32 tensor on ``device`` (numpy / list / tensor)."""
        if isinstance(x, torch.Tensor):
            return x.to(device=self.device, dtype=torch.float32)
        return torch.as_tensor(np.asarray(x, dtype=np.float32), device=self.device)

    @staticmethod
    def numpy(t: torch.Tensor) -> np.ndarray:
        """Tensor on any device -> float32 numpy on the host."""
        return t.detach().cpu().numpy().astype(np.float32)
