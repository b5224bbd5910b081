"""Convex upsampling (RAFT / RAFT-Stereo; spec stereo.md §5)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["convex_upsample"]


def convex_upsample(flow: torch.Tensor, mask: torch.Tensor, factor: int) -> torch.Tensor:
    """``[B, D, H, W]`` flow + ``[B, 9·f², H, W]`` mask logits → ``[B, D, f·H, f·W]``.

    Each fine pixel is a softmax-weighted (convex) combination of the 3×3 coarse neighbours of
    its parent, times ``f`` (the flow is measured in coarse pixels). Zero padding at the border.
    """
    b, d, h, w = flow.shape
    if mask.shape != (b, 9 * factor * factor, h, w):
        raise ValueError(f"mask must be [B, 9·{factor}², H, W] = {(b, 9 * factor * factor, h, w)}, got {tuple(mask.shape)}")
    mask = torch.softmax(mask.view(b, 1, 9, factor, factor, h, w), dim=2)
    up = F.unfold(factor * flow, [3, 3], padding=1).view(b, d, 9, 1, 1, h, w)
    up = torch.sum(mask * up, dim=2)  # [B, D, f, f, H, W]
    return up.permute(0, 1, 4, 2, 5, 3).reshape(b, d, factor * h, factor * w)
