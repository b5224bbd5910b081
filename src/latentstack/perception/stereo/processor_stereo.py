"""Processor of the stereo models (SA2-tiny and its ConvGRU twin): uint8 image pairs -> model tensors on the
model's device, and the final disparity -> a numpy map of the input size.

``SA2Tiny.forward`` takes ``left, right [B, 3, H, W]`` in [0, 255] with ``H, W`` multiples of 16 and
``focal_baseline [B]``; images of any size are edge-padded here and the result is cropped back. The host-side
conversion (HWC uint8 -> CHW float) is done on the CPU in the same ops as before, then moved once.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["StereoProcessor", "model_device"]


def model_device(model: Any) -> torch.device:
    """The device of a model's weights (a ``device`` attribute if it has one, else its first parameter)."""
    dev = getattr(model, "device", None)
    if isinstance(dev, torch.device):
        return dev
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


class StereoProcessor:
    """``(left, right)`` uint8 (H, W, 3) + ``f·b`` -> keyword inputs of ``SA2Tiny.forward`` on ``device``."""

    def __init__(self, multiple: int = 16, device: torch.device | str = "cpu") -> None:
        self.multiple = int(multiple)
        self.device = torch.device(device)

    def to(self, device: torch.device | str) -> StereoProcessor:
        self.device = torch.device(device)
        return self

    def image(self, a: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 -> [1, 3, H', W'] float in [0, 255], edge-padded to multiples of ``multiple``."""
        h, w = a.shape[:2]
        ph, pw = -h % self.multiple, -w % self.multiple
        a = np.pad(a, ((0, ph), (0, pw), (0, 0)), mode="edge") if (ph or pw) else a
        return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float().to(self.device)

    def __call__(self, left: np.ndarray, right: np.ndarray, focal_baseline: float,
                 zero_init: bool = False) -> dict[str, torch.Tensor]:
        """Model inputs: ``left``, ``right``, ``focal_baseline`` and (``zero_init``) a zero ``disp_init``
        (the RAFT-Stereo start instead of the monocular prior)."""
        lt, rt = self.image(left), self.image(right)
        inputs = {"left": lt, "right": rt,
                  "focal_baseline": torch.tensor([float(focal_baseline)], device=self.device)}
        if zero_init:
            inputs["disp_init"] = torch.zeros(1, 1, *lt.shape[2:], device=self.device)
        return inputs

    @staticmethod
    def postprocess(out: dict[str, Any], size: tuple[int, int]) -> np.ndarray:
        """Last refinement's disparity of sample 0, cropped to ``size = (H, W)`` -> float32 numpy on the host."""
        h, w = size
        return out["disp_preds"][-1][0, 0, :h, :w].detach().cpu().numpy().astype(np.float32)
