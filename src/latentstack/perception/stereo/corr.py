"""1-D correlation pyramid along epipolar lines and its lookup (RAFT-Stereo ``CorrBlock1D``; spec §4).

    C⁰(b, y, x, x') = Σ_c f_L(b, c, y, x) f_R(b, c, y, x') / √D
    C^{l+1} = avgpool_{1×2}(C^l) along x'
    lookup at x_r = x + flow_x:  { C^l(x, x_r / 2^l + δ) | δ ∈ −r..r }, linear interpolation, 0 outside

``CorrBlock1D`` materialises C⁰; ``AltCorrBlock1D`` never does: avg-pooling is linear, so
``C^l(x, ·) = ⟨f_L(x), avgpool_l(f_R)(·)⟩`` and the taps are dot products with bilinearly
sampled, pooled right features (memory O(B·H·W·taps) instead of O(B·H·W²)).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["AltCorrBlock1D", "CorrBlock1D", "sample_1d"]


def sample_1d(vol: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of ``vol [N, C, W]`` at positions ``x [N, K]`` (pixels), zero outside."""
    n, c, w = vol.shape
    k = x.shape[1]
    gx = 2.0 * x / max(w - 1, 1) - 1.0  # align_corners=True normalisation
    grid = torch.stack([gx, torch.zeros_like(gx)], dim=-1).view(n, 1, k, 2)
    out = F.grid_sample(vol.view(n, c, 1, w), grid.to(vol.dtype), mode="bilinear", padding_mode="zeros",
                        align_corners=True)
    return out.view(n, c, k)


class CorrBlock1D:
    def __init__(self, fmap1: torch.Tensor, fmap2: torch.Tensor, num_levels: int = 4, radius: int = 4) -> None:
        if fmap1.shape != fmap2.shape:
            raise ValueError(f"feature maps differ: {tuple(fmap1.shape)} vs {tuple(fmap2.shape)}")
        self.num_levels, self.radius = num_levels, radius
        b, d, h, w = fmap1.shape
        self.shape = (b, h, w)
        corr = torch.einsum("bchx,bchy->bhxy", fmap1, fmap2) / d ** 0.5  # [B, H, W, W']
        corr = corr.reshape(b * h * w, 1, w)
        self.pyramid = [corr]
        for _ in range(num_levels - 1):
            corr = F.avg_pool1d(corr, 2, stride=2)
            self.pyramid.append(corr)

    @property
    def channels(self) -> int:
        return self.num_levels * (2 * self.radius + 1)

    def __call__(self, coords_x: torch.Tensor) -> torch.Tensor:
        """``coords_x [B, 1, H, W]`` (right-image x of each left pixel) → ``[B, levels·(2r+1), H, W]``."""
        b, h, w = self.shape
        dx = torch.arange(-self.radius, self.radius + 1, device=coords_x.device, dtype=coords_x.dtype)
        x = coords_x.permute(0, 2, 3, 1).reshape(b * h * w, 1)
        out = [sample_1d(c, x / 2 ** lvl + dx[None, :]) for lvl, c in enumerate(self.pyramid)]
        return torch.cat(out, dim=1).view(b, h, w, -1).permute(0, 3, 1, 2).contiguous()


class AltCorrBlock1D:
    """Same taps as :class:`CorrBlock1D` without materialising the volume."""

    def __init__(self, fmap1: torch.Tensor, fmap2: torch.Tensor, num_levels: int = 4, radius: int = 4) -> None:
        if fmap1.shape != fmap2.shape:
            raise ValueError(f"feature maps differ: {tuple(fmap1.shape)} vs {tuple(fmap2.shape)}")
        self.num_levels, self.radius = num_levels, radius
        b, d, h, w = fmap1.shape
        self.shape, self.dim = (b, h, w), d
        self.f1 = fmap1.permute(0, 2, 3, 1).reshape(b * h * w, d)  # one query vector per left pixel
        f2 = fmap2.permute(0, 2, 1, 3).reshape(b * h, d, w)  # one right row per (b, y)
        self.f2 = [f2]
        for _ in range(num_levels - 1):
            f2 = F.avg_pool1d(f2, 2, stride=2)
            self.f2.append(f2)

    @property
    def channels(self) -> int:
        return self.num_levels * (2 * self.radius + 1)

    def __call__(self, coords_x: torch.Tensor) -> torch.Tensor:
        b, h, w = self.shape
        dx = torch.arange(-self.radius, self.radius + 1, device=coords_x.device, dtype=coords_x.dtype)
        x = coords_x.permute(0, 2, 3, 1).reshape(b * h, w, 1)
        out = []
        for lvl, f2 in enumerate(self.f2):
            pos = (x / 2 ** lvl + dx).reshape(b * h, w * dx.numel())  # taps of every pixel of the row
            s = sample_1d(f2, pos).view(b * h, self.dim, w, dx.numel())  # [BH, D, W, taps]
            s = s.permute(0, 2, 3, 1).reshape(b * h * w, dx.numel(), self.dim)
            out.append(torch.einsum("nkd,nd->nk", s, self.f1) / self.dim ** 0.5)
        return torch.cat(out, dim=1).view(b, h, w, -1).permute(0, 3, 1, 2).contiguous()
