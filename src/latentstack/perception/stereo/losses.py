"""Training losses: RAFT-Stereo sequence loss (spec §7) and the monocular pretraining loss."""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["mono_log_depth_loss", "sequence_loss", "sequence_weights"]


def sequence_weights(n: int, gamma: float = 0.9) -> list[float]:
    """``γ_adj^{n−i−1}`` with ``γ_adj = γ^{15/(n−1)}`` (the last prediction has weight 1)."""
    if n < 1:
        raise ValueError("need at least one prediction")
    g = gamma ** (15.0 / (n - 1)) if n > 1 else gamma
    return [g ** (n - i - 1) for i in range(n)]


def sequence_loss(preds: list[torch.Tensor], gt: torch.Tensor, valid: torch.Tensor, gamma: float = 0.9,
                  max_disp: float = 700.0) -> tuple[torch.Tensor, dict[str, float]]:
    """``Σ_i w_i · mean_valid |d_i − d_gt|``; valid = ``valid ≥ 0.5`` and ``|gt| < max_disp``."""
    mask = (valid >= 0.5) & (gt.abs() < max_disp) & torch.isfinite(gt)
    if not mask.any():
        raise ValueError("sequence_loss: no valid pixel in the batch")
    gt = torch.where(mask, gt, torch.zeros_like(gt))
    total = gt.new_zeros(())
    for w, p in zip(sequence_weights(len(preds), gamma), preds):
        total = total + w * (p - gt).abs()[mask].mean()
    with torch.no_grad():
        epe = (preds[-1] - gt).abs()[mask]
        info = {"epe": epe.mean().item(), "bad1": (epe > 1).float().mean().item()}
    return total, info


def mono_log_depth_loss(log_depth: torch.Tensor, depth_gt: torch.Tensor, min_depth: float = 0.1,
                        max_depth: float = 50.0) -> torch.Tensor:
    """L1 between predicted log-depth (1/4 res) and the area-pooled log of the ground truth."""
    f = depth_gt.shape[-1] // log_depth.shape[-1]
    gt = torch.log(depth_gt.clamp(min_depth, max_depth))
    gt = F.avg_pool2d(gt, f)
    return (log_depth - gt).abs().mean()
