"""SA2-tiny encoder: a small CNN with DPT-style fusion and a monocular depth head.

Stands in for Depth-Anything-3 ViT-B + DPT (spec §3, §10): four stages (32/64/96/128 ch at
strides 2/4/8/16), per-stage 1×1 projections to ``feat_dim`` (DPT ``layer_rn``), top-down
fusion, maps at 1/4, 1/8, 1/16 and a monocular head predicting metric depth at 1/4 resolution
(``exp`` of a log-depth map). It is pretrained in-repo on the synthetic renders (monocular
loss), then frozen and adapted with CoDyRA for stereo.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ResidualBlock", "TinyEncoder", "normalize_images"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_images(img: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` in [0, 255] → ImageNet mean/std normalised."""
    mean = img.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0
    std = img.new_tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0
    return (img - mean) / std


def _norm(kind: str, ch: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(ch)
    if kind == "group":
        return nn.GroupNorm(min(8, ch), ch)
    return nn.Identity()


class ResidualBlock(nn.Module):
    def __init__(self, cin: int, cout: int, norm: str = "group", stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, stride=stride)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.norm1, self.norm2 = _norm(norm, cout), _norm(norm, cout)
        self.skip = None
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride), _norm(norm, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        return F.relu((x if self.skip is None else self.skip(x)) + y)


class TinyEncoder(nn.Module):
    def __init__(self, channels: tuple[int, ...] = (32, 64, 96, 128), feat_dim: int = 64) -> None:
        super().__init__()
        c1, c2, c3, c4 = channels
        self.stem = nn.Sequential(nn.Conv2d(3, c1, 5, stride=2, padding=2), nn.GroupNorm(8, c1), nn.ReLU())
        self.layer1 = ResidualBlock(c1, c1)  # 1/2
        self.layer2 = ResidualBlock(c1, c2, stride=2)  # 1/4
        self.layer3 = ResidualBlock(c2, c3, stride=2)  # 1/8
        self.layer4 = ResidualBlock(c3, c4, stride=2)  # 1/16
        self.rn = nn.ModuleList([nn.Conv2d(c, feat_dim, 1) for c in (c2, c3, c4)])  # DPT layer_rn
        self.fuse = nn.ModuleList([ResidualBlock(feat_dim, feat_dim) for _ in range(3)])
        self.mono_head = nn.Sequential(nn.Conv2d(feat_dim, feat_dim, 3, padding=1), nn.ReLU(),
                                       nn.Conv2d(feat_dim, 1, 1))

    def forward(self, img: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Normalised ``[B, 3, H, W]`` → ([1/4, 1/8, 1/16] maps of ``feat_dim`` ch, log-depth at 1/4)."""
        x = self.layer1(self.stem(img))
        x4 = self.layer2(x)
        x8 = self.layer3(x4)
        x16 = self.layer4(x8)
        p4, p8, p16 = (rn(t) for rn, t in zip(self.rn, (x4, x8, x16)))
        f16 = self.fuse[2](p16)
        f8 = self.fuse[1](p8 + F.interpolate(f16, p8.shape[2:], mode="bilinear", align_corners=True))
        f4 = self.fuse[0](p4 + F.interpolate(f8, p4.shape[2:], mode="bilinear", align_corners=True))
        log_depth = self.mono_head(f4) + 1.0  # offset: exp(1) ≈ 2.7 m, the middle of the scenes
        return [f4, f8, f16], log_depth
