"""CenterPoint-style BEV head: small 2-D BEV backbone, heatmap + box regression, targets, loss, decoding.

Box code per positive cell (CenterPoint / OpenPCDet ``CenterHead``): centre offset (2), z (1),
log dims (3), sin/cos yaw (2) — or sin/cos of 2·yaw (``rot_code="sincos2"``, heading mod π). Heatmap targets are Gaussians with CenterPoint's
``gaussian_radius(min_overlap)`` (min radius 2); loss = CenterNet focal loss + ``loc_weight``·L1.
Decoding: 3×3 max-pool peak picking, top-K, score threshold, class-wise rotated BEV NMS.
"""
from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .configuration_lion import LionConfig

__all__ = ["BEVBackbone", "CenterHead", "build_targets", "center_loss", "decode"]


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01),
                         nn.ReLU())


class BEVBackbone(nn.Module):
    """Conv stride ``out_stride`` then one 3×3 conv (a much smaller SECOND-style BaseBEVBackbone, for CPU)."""

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.net = nn.Sequential(_conv_bn(in_channels, channels, stride), _conv_bn(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CenterHead(nn.Module):
    HEADS: ClassVar[dict[str, int]] = {"center": 2, "center_z": 1, "dim": 3, "rot": 2}

    def __init__(self, in_channels: int, head_channels: int, num_classes: int) -> None:
        super().__init__()
        self.shared = _conv_bn(in_channels, head_channels)

        def sep(out: int, bias: float = 0.0) -> nn.Sequential:
            s = nn.Sequential(_conv_bn(head_channels, head_channels), nn.Conv2d(head_channels, out, 3, 1, 1))
            nn.init.constant_(s[-1].bias, bias)
            return s

        self.hm = sep(num_classes, -2.19)  # CenterPoint prior: sigmoid(−2.19) ≈ 0.1
        self.reg = nn.ModuleDict({k: sep(v) for k, v in self.HEADS.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.shared(x)
        out = {"hm": self.hm(x)}
        out.update({k: m(x) for k, m in self.reg.items()})
        return out


def gaussian_radius(height: float, width: float, min_overlap: float) -> float:
    """CenterNet/CenterPoint ``gaussian_radius`` (the min of the three quadratic cases)."""
    a1, b1 = 1, height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1 ** 2 - 4 * a1 * c1)) / 2
    a2, b2 = 4, 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(b2 ** 2 - 4 * a2 * c2)) / 2
    a3, b3 = 4 * min_overlap, -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def _draw_gaussian(hm: np.ndarray, cx: int, cy: int, radius: int) -> None:
    d = 2 * radius + 1
    sigma = d / 6
    ys, xs = np.ogrid[-radius:radius + 1, -radius:radius + 1]
    g = np.exp(-(xs * xs + ys * ys) / (2 * sigma * sigma))
    h, w = hm.shape
    left, right = min(cx, radius), min(w - cx, radius + 1)
    top, bottom = min(cy, radius), min(h - cy, radius + 1)
    region = hm[cy - top:cy + bottom, cx - left:cx + right]
    patch = g[radius - top:radius + bottom, radius - left:radius + right]
    np.maximum(region, patch, out=region)


def build_targets(cfg: LionConfig, boxes: list[np.ndarray], classes: list[np.ndarray], max_objs: int = 64
                  ) -> dict[str, torch.Tensor]:
    """Heatmaps (B, K, H, W), regression targets (B, M, 8), cell index (B, M), mask (B, M)."""
    ny, nx = cfg.bev_size
    cell = cfg.voxel_size[0] * cfg.out_stride
    x0, y0 = cfg.point_range[0], cfg.point_range[1]
    bsz = len(boxes)
    hm = np.zeros((bsz, len(cfg.classes), ny, nx), np.float32)
    reg = np.zeros((bsz, max_objs, 8), np.float32)
    ind = np.zeros((bsz, max_objs), np.int64)
    mask = np.zeros((bsz, max_objs), np.float32)
    for b in range(bsz):
        k = 0
        for box, c in zip(boxes[b], classes[b], strict=True):
            fx, fy = (box[0] - x0) / cell, (box[1] - y0) / cell
            ix, iy = int(fx), int(fy)
            if not (0 <= ix < nx and 0 <= iy < ny) or k >= max_objs:
                continue
            r = max(cfg.min_radius, int(gaussian_radius(box[3] / cell, box[4] / cell, cfg.gaussian_overlap)))
            _draw_gaussian(hm[b, int(c)], ix, iy, r)
            ang = 2 * box[6] if cfg.rot_code == "sincos2" else box[6]
            reg[b, k] = [fx - ix, fy - iy, box[2], math.log(box[3]), math.log(box[4]), math.log(box[5]),
                         math.sin(ang), math.cos(ang)]
            ind[b, k] = iy * nx + ix
            mask[b, k] = 1.0
            k += 1
    return {"hm": torch.from_numpy(hm), "reg": torch.from_numpy(reg), "ind": torch.from_numpy(ind),
            "mask": torch.from_numpy(mask)}


def _focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterNet focal loss (α 2, β 4), normalised by the number of peaks."""
    pred = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).float()
    neg = 1 - pos
    pos_loss = torch.log(pred) * (1 - pred) ** 2 * pos
    neg_loss = torch.log(1 - pred) * pred ** 2 * (1 - target) ** 4 * neg
    num_pos = pos.sum().clamp_min(1.0)
    return -(pos_loss.sum() + neg_loss.sum()) / num_pos


def center_loss(cfg: LionConfig, out: dict[str, torch.Tensor], tgt: dict[str, torch.Tensor]
                ) -> tuple[torch.Tensor, dict[str, float]]:
    hm_loss = _focal_loss(out["hm"], tgt["hm"])
    pred = torch.cat([out["center"], out["center_z"], out["dim"], out["rot"]], 1)  # (B, 8, H, W)
    b, c = pred.shape[:2]
    pred = pred.view(b, c, -1).gather(2, tgt["ind"][:, None, :].expand(-1, c, -1)).transpose(1, 2)  # (B, M, 8)
    m = tgt["mask"][..., None]
    reg_loss = (torch.abs(pred - tgt["reg"]) * m).sum() / m.sum().clamp_min(1.0)
    loss = hm_loss + cfg.loc_weight * reg_loss
    return loss, {"hm": float(hm_loss.detach()), "loc": float(reg_loss.detach())}


@torch.no_grad()
def decode(cfg: LionConfig, out: dict[str, torch.Tensor]) -> list[dict[str, np.ndarray]]:
    """Per sample ``{"boxes": (n, 7), "scores": (n,), "labels": (n,)}`` after peak picking and rotated NMS."""
    from .eval import rotated_nms

    # decoding (peak picking, numpy NMS) is host-side post-processing: bring the head outputs to the CPU once
    out = {k: v.detach().cpu() for k, v in out.items()}
    heat = torch.sigmoid(out["hm"])
    peaks = (F.max_pool2d(heat, 3, 1, 1) == heat).float() * heat
    bsz, ncls, ny, nx = heat.shape
    cell = cfg.voxel_size[0] * cfg.out_stride
    results = []
    for b in range(bsz):
        scores, idx = peaks[b].reshape(-1).topk(min(cfg.max_detections, peaks[b].numel()))
        keep = scores >= cfg.score_threshold
        scores, idx = scores[keep], idx[keep]
        cls = idx // (ny * nx)
        pix = idx % (ny * nx)
        iy, ix = pix // nx, pix % nx
        ctr = out["center"][b].reshape(2, -1)[:, pix]
        z = out["center_z"][b].reshape(-1)[pix]
        dim = torch.exp(out["dim"][b].reshape(3, -1)[:, pix].clamp(max=3.0))
        rot = out["rot"][b].reshape(2, -1)[:, pix]
        x = (ix.float() + ctr[0]) * cell + cfg.point_range[0]
        y = (iy.float() + ctr[1]) * cell + cfg.point_range[1]
        yaw = torch.atan2(rot[0], rot[1])
        if cfg.rot_code == "sincos2":
            yaw = yaw / 2
        boxes = torch.stack([x, y, z, dim[0], dim[1], dim[2], yaw], 1).numpy()
        s, c = scores.numpy(), cls.numpy()
        keep_all = []
        for k in range(ncls):
            sel = np.nonzero(c == k)[0]
            if len(sel):
                keep_all.append(sel[rotated_nms(boxes[sel], s[sel], cfg.nms_iou[k])])
        kept = np.concatenate(keep_all) if keep_all else np.zeros(0, np.int64)
        kept = kept[np.argsort(-s[kept], kind="stable")]
        results.append({"boxes": boxes[kept].astype(np.float32), "scores": s[kept].astype(np.float32),
                        "labels": c[kept].astype(np.int64)})
    return results
