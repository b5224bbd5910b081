"""SA2-tiny: StereoAdapter-2 (spec §3) at CPU scale, and its ConvGRU twin.

    I_L, I_R → TinyEncoder (frozen, CoDyRA-adapted) → maps at 1/4, 1/8, 1/16 + mono log-depth
    fmap_{L,R} = Conv3×3(ResidualBlock_instnorm(feat[0]))                (shared weights)
    net_i = tanh(Conv3×3(ResidualBlock(feat_L[i])))                       hidden states
    corr  = CorrBlock1D(fmap_L, fmap_R) (4 levels, r = 4 ⇒ 36 taps)
    MDE init: disp = f·b / depth_mono;  coords1.x = coords0.x − disp/4    (flow = −disparity)
    repeat iters: corr lookup → motion → 3-level update → Δflow (Δflow_y := 0) → convex ×4 upsampling

Differences from the released model, by design of the tiny variant: the encoder is a small CNN
(not DA3 ViT-B), the mono depth comes from the same (left) encoder pass instead of a third
backbone pass, and the MDE init uses each pair's own ``f·b`` (the SA2 code uses the constant
0.25·320 of TartanAir). The init is detached (no gradient into the prior through the refiner).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from latentstack.core.pretrained import load_pretrained, save_pretrained
from latentstack.latent import Site

from .codyra import add_codyra, codyra_modules
from .configuration_stereo import RUNTIME_FIELDS, StereoConfig
from .corr import AltCorrBlock1D, CorrBlock1D
from .encoder import ResidualBlock, TinyEncoder, normalize_images
from .update import MultiLevelUpdate
from .upsample import convex_upsample

__all__ = ["SA2Tiny", "load_stereo_model", "save_stereo_model"]

TRAINING = "training.json"  # the training recipe and summary, a hashed side file of the artifact


class SA2Tiny(nn.Module):
    def __init__(self, config: StereoConfig | None = None) -> None:
        super().__init__()
        self.config = c = config if config is not None else StereoConfig()
        self.encoder = TinyEncoder(c.enc_channels, c.feat_dim)
        self.fnet = nn.Sequential(ResidualBlock(c.feat_dim, c.feat_dim, norm="instance"),
                                  nn.Conv2d(c.feat_dim, c.fmap_dim, 3, padding=1))
        self.cnet = nn.ModuleList([nn.Sequential(ResidualBlock(c.feat_dim, c.feat_dim, norm="group"),
                                                 nn.Conv2d(c.feat_dim, c.hidden, 3, padding=1)) for _ in range(3)])
        # the ConvGRU twin gets RAFT-Stereo context biases (c_z, c_r, c_q); SA2 uses none ("without_inp_list")
        self.context = None
        if c.updater == "gru":
            self.context = nn.ModuleList([nn.Conv2d(c.feat_dim, 3 * c.hidden, 3, padding=1) for _ in range(3)])
        corr_ch = c.corr_levels * (2 * c.corr_radius + 1)
        self.update = MultiLevelUpdate(c.hidden, corr_ch, updater=c.updater, scan_mode=c.scan_mode,
                                       d_state=c.d_state, ssm_ratio=c.ssm_ratio, factor=2 ** c.n_downsample)
        self.adapted = False

    @property
    def device(self) -> torch.device:
        """Where the weights live; inputs built by ``StereoProcessor(device=model.device)`` land there."""
        return next(self.parameters()).device

    def latent_sites(self) -> dict[str, Site]:
        """Tap-only sites (spec §12); the updater sites fire once per refinement iteration."""
        kind = "ConvSS2D" if self.config.updater == "ss2d" else "ConvGRU"
        return {
            "hidden_1_4": Site("update.cell04", description=f"{kind} hidden state net[0] (B, hidden, H/4, W/4)"),
            "hidden_1_8": Site("update.cell08", description=f"{kind} hidden state net[1] (B, hidden, H/8, W/8)"),
            "hidden_1_16": Site("update.cell16", description=f"{kind} hidden state net[2] (B, hidden, H/16, W/16)"),
            "corr": Site("update.encoder", kind="input", index=1,
                         description="correlation lookup (B, levels·(2r+1), H/4, W/4)"),
            "encoder_1_4": Site("encoder.fuse.0", description="fused encoder map at 1/4 (left and right stacked)"),
        }

    # ------------------------------------------------------------------ adapters / freezing
    def add_adapters(self) -> int:
        """Freezes the encoder and wraps its convs with CoDyRA (rank ``config.codyra_rank``)."""
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        n = add_codyra(self.encoder, self.config.codyra_rank) if self.config.codyra_rank > 0 else 0
        self.adapted = True
        return n

    def codyra(self) -> list[nn.Module]:
        return list(codyra_modules(self))

    # ------------------------------------------------------------------ forward
    def encode(self, left: torch.Tensor, right: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        b = left.shape[0]
        feats, log_depth = self.encoder(normalize_images(torch.cat([left, right], dim=0)))
        feats_l = [f[:b] for f in feats]
        fmap = self.fnet(feats[0])
        return feats_l, fmap, log_depth[:b]

    def forward(self, left: torch.Tensor, right: torch.Tensor, focal_baseline: torch.Tensor,
                iters: int | None = None, disp_init: torch.Tensor | None = None,
                depth_init: torch.Tensor | None = None) -> dict[str, Any]:
        """``left, right [B, 3, H, W]`` in [0, 255]; ``focal_baseline [B]`` = f·b (px·m).

        Returns ``disp_preds`` (one ``[B, 1, H, W]`` disparity per iteration, positive = left
        pixel x matches right x − d), ``disp_init`` (the MDE initialisation at full size),
        ``mono_depth`` (``[B, 1, H/4, W/4]`` metres), ``flows`` (1/4-res (x, y) flow per iteration)
        and ``net`` (final hidden states at 1/4, 1/8, 1/16). ``disp_init`` / ``depth_init``
        override the mono prior (full-size disparity / metric depth).
        """
        c = self.config
        if left.shape != right.shape or left.dim() != 4 or left.shape[1] != 3:
            raise ValueError(f"left/right must both be [B, 3, H, W]; got {tuple(left.shape)}, {tuple(right.shape)}")
        b, _, h, w = left.shape
        if h % 16 or w % 16:
            raise ValueError(f"image size must be a multiple of 16, got {h}×{w}")
        iters = c.valid_iters if iters is None and not self.training else (iters or c.train_iters)
        f = 2 ** c.n_downsample
        feats, fmap, log_depth = self.encode(left.float(), right.float())
        fmap_l, fmap_r = fmap[:b], fmap[b:]
        net = [torch.tanh(cn(ft)) for cn, ft in zip(self.cnet, feats)]
        context = None
        if self.context is not None:
            context = [tuple(cx(ft).chunk(3, dim=1)) for cx, ft in zip(self.context, feats)]
        corr_cls = CorrBlock1D if c.corr_impl == "reg" else AltCorrBlock1D
        corr_fn = corr_cls(fmap_l.float(), fmap_r.float(), c.corr_levels, c.corr_radius)
        hq, wq = fmap_l.shape[2:]
        ys, xs = torch.meshgrid(torch.arange(hq, device=left.device, dtype=torch.float32),
                                torch.arange(wq, device=left.device, dtype=torch.float32), indexing="ij")
        coords0 = torch.stack([xs, ys]).unsqueeze(0).expand(b, 2, hq, wq)  # (x, y) at 1/4 resolution
        mono_depth = torch.exp(log_depth)
        fb = focal_baseline.to(left.device, torch.float32).view(b, 1, 1, 1)
        if disp_init is not None:
            d0 = F.interpolate(disp_init.float(), (hq, wq), mode="bilinear", align_corners=True) / f
        elif depth_init is not None:  # an external metric depth prior (e.g. a perfect one in tests)
            d0 = fb / F.interpolate(depth_init.float(), (hq, wq), mode="bilinear", align_corners=True).clamp(min=1e-3) / f
        elif c.mono_init:
            d0 = (fb / mono_depth.clamp(min=1e-3)).detach() / f  # disparity in 1/4-resolution pixels
        else:
            d0 = torch.zeros(b, 1, hq, wq, device=left.device, dtype=torch.float32)
        coords1 = coords0 - torch.cat([d0, torch.zeros_like(d0)], dim=1)  # RAFT-Stereo: flow = −disparity
        preds, flows = [], []
        for _ in range(iters):
            coords1 = coords1.detach()  # RAFT: no gradient through the coordinates across iterations
            corr = corr_fn(coords1[:, :1])
            flow = coords1 - coords0
            net, mask, delta = self.update(net, context, corr, flow)
            delta = torch.cat([delta[:, :1], torch.zeros_like(delta[:, 1:])], dim=1)  # Δflow_y := 0 (epipolar)
            coords1 = coords1 + delta
            flows.append(coords1 - coords0)
            up = convex_upsample(coords1 - coords0, mask, f)
            preds.append(-up[:, :1])
        disp0_up = F.interpolate(d0 * f, (h, w), mode="bilinear", align_corners=True)
        return {"disp_preds": preds, "disp_init": disp0_up, "mono_depth": mono_depth, "net": net, "flows": flows}


def save_stereo_model(model: SA2Tiny, out_dir: Path | str, extra: dict[str, Any] | None = None,
                      provenance: dict[str, Any] | None = None) -> Path:
    """A ``"stereo"`` artifact: weights + config (+ ``extra`` as the hashed side file ``training.json``;
    ``provenance``: e.g. the pretrained encoder by repo-relative path and sha256)."""
    files = {TRAINING: json.dumps(extra, indent=2) + "\n"} if extra is not None else None
    return save_pretrained(model, out_dir, model.config, files=files, extra={"adapted": bool(model.adapted)},
                           provenance=provenance)


def load_stereo_model(path: Path | str, device: str | None = None) -> SA2Tiny:
    """Load a ``"stereo"`` artifact on ``device`` (default: its config's); refuses mismatched checkpoints."""

    def prepare(model: SA2Tiny, art: Any) -> None:
        if art.extra.get("adapted"):  # CoDyRA adapters change the module structure: add them before loading
            model.add_adapters()

    model, _art = load_pretrained(path, SA2Tiny, expect_type=StereoConfig.type, free_fields=RUNTIME_FIELDS,
                                  device=device, prepare=prepare)
    return model
