"""Iterative updaters: ConvSS2D (StereoAdapter-2) and its ConvGRU twin (RAFT-Stereo / StereoAdapter v1).

SS2D follows VMamba ``SS2Dv2`` ``forward_type="v3"`` (spec §6), channel-first:

    x, z = split(in_proj(h));  z = SiLU(z);  x = SiLU(DWConv3×3(x))
    xs = CrossScan(x)   k=0 row-major (along epipolar lines), k=1 column-major, k=2/3 their reverses
    [δ̃_k, B_k, C_k] = x_proj_k(xs_k);  Δ_k = dt_proj_k(δ̃_k) (+ bias, softplus in the scan)
    y_k = selective_scan(xs_k, Δ_k, −exp(A_log_k), B_k, C_k, D_k)   — ONE call, G = K groups
    y = CrossMerge(y) ;  out = out_proj(LayerNorm(y) ⊙ z)

Scan modes: ``cross2d`` (K = 4, VMamba v3), ``bidi`` (K = 2: row-major forward and reverse, v052d),
``unidi`` (K = 1: row-major forward, v051d). The scan is :func:`latentstack.kernels.selective_scan`
(C++ kernel with backward on CPU).

``ConvSS2D(h; x…)``: ``hx = Conv1×1([h, x…]); h ← h + tanh(SS2D(hx))`` (SA2 ``ss2d_update``).
``ConvGRU``: ``z = σ(Conv[h,x] + c_z), r = σ(Conv[h,x] + c_r), q = tanh(Conv[r⊙h, x] + c_q), h ← (1−z)h + zq``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from latentstack.kernels import selective_scan

__all__ = [
    "SCAN_MODES",
    "SS2D",
    "ConvGRU",
    "ConvSS2D",
    "FlowHead",
    "MotionEncoder",
    "MultiLevelUpdate",
    "cross_merge",
    "cross_scan",
    "interp",
    "pool2x",
]

SCAN_MODES = {"cross2d": 4, "bidi": 2, "unidi": 1}


def pool2x(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 3, stride=2, padding=1)


def interp(x: torch.Tensor, dest: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, dest.shape[2:], mode="bilinear", align_corners=True)


def cross_scan(x: torch.Tensor, mode: str = "cross2d") -> torch.Tensor:
    """``[B, C, H, W]`` → ``[B, K, C, H·W]`` sequences (index permutations only)."""
    if mode not in SCAN_MODES:
        raise ValueError(f"unknown scan mode {mode!r}; choose one of {sorted(SCAN_MODES)}")
    row = x.flatten(2)
    if mode == "unidi":
        return row.unsqueeze(1)
    if mode == "bidi":
        return torch.stack([row, row.flip(-1)], dim=1)
    col = x.transpose(2, 3).flatten(2)
    return torch.stack([row, col, row.flip(-1), col.flip(-1)], dim=1)


def cross_merge(y: torch.Tensor, h: int, w: int, mode: str = "cross2d") -> torch.Tensor:
    """``[B, K, C, H·W]`` → ``[B, C, H, W]``: every direction mapped back to its pixel and summed."""
    b, k, c, length = y.shape
    if k != SCAN_MODES[mode] or length != h * w:
        raise ValueError(f"cross_merge: got K={k}, L={length} for mode {mode!r} and {h}×{w}")
    out = y[:, 0]
    if mode == "unidi":
        return out.view(b, c, h, w)
    if mode == "bidi":
        return (out + y[:, 1].flip(-1)).view(b, c, h, w)
    out = out + y[:, 2].flip(-1)
    col = y[:, 1] + y[:, 3].flip(-1)
    out = out.view(b, c, h, w) + col.view(b, c, w, h).transpose(2, 3)
    return out


class SS2D(nn.Module):
    """VMamba 2-D selective scan block (channel-first, see module docstring)."""

    def __init__(self, d_model: int, d_state: int = 8, ssm_ratio: float = 1.0, d_conv: int = 3,
                 scan_mode: str = "cross2d", dt_min: float = 1e-3, dt_max: float = 0.1) -> None:
        super().__init__()
        if scan_mode not in SCAN_MODES:
            raise ValueError(f"unknown scan mode {scan_mode!r}; choose one of {sorted(SCAN_MODES)}")
        self.scan_mode, self.K = scan_mode, SCAN_MODES[scan_mode]
        d_inner = int(ssm_ratio * d_model)
        self.d_inner, self.d_state = d_inner, d_state
        self.dt_rank = math.ceil(d_model / 16)
        k = self.K
        self.in_proj = nn.Conv2d(d_model, 2 * d_inner, 1, bias=False)
        self.conv2d = nn.Conv2d(d_inner, d_inner, d_conv, padding=d_conv // 2, groups=d_inner)
        # per-direction projections (grouped 1×1): x → [dt_rank + 2N]; dt_rank → d_inner
        self.x_proj_weight = nn.Parameter(torch.randn(k, self.dt_rank + 2 * d_state, d_inner) * d_inner ** -0.5)
        dt_std = self.dt_rank ** -0.5
        self.dt_projs_weight = nn.Parameter(torch.empty(k, d_inner, self.dt_rank).uniform_(-dt_std, dt_std))
        # Mamba init: dt bias = softplus⁻¹(logU(dt_min, dt_max)), A_log = log(1..N), D = 1
        dt = torch.exp(torch.rand(k, d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=1e-4)
        self.dt_projs_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        a = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(k * d_inner, 1)
        self.A_logs = nn.Parameter(torch.log(a))
        self.Ds = nn.Parameter(torch.ones(k * d_inner))
        self.out_norm = nn.LayerNorm(d_inner)
        self.out_proj = nn.Conv2d(d_inner, d_model, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        x, z = self.in_proj(x).chunk(2, dim=1)
        z = F.silu(z)
        x = F.silu(self.conv2d(x))
        xs = cross_scan(x, self.scan_mode)  # [B, K, D, L]
        x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, self.x_proj_weight)
        dts, Bs, Cs = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=2)
        dts = torch.einsum("bkrl,kdr->bkdl", dts, self.dt_projs_weight)
        length = h * w
        y = selective_scan(
            xs.reshape(b, -1, length).contiguous(), dts.reshape(b, -1, length).contiguous(),
            -torch.exp(self.A_logs.float()), Bs.contiguous(), Cs.contiguous(), self.Ds.float(),
            delta_bias=self.dt_projs_bias.reshape(-1).float(), delta_softplus=True,
        )
        y = cross_merge(y.view(b, self.K, self.d_inner, length), h, w, self.scan_mode)
        y = self.out_norm(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.out_proj(y * z)


class ConvSS2D(nn.Module):
    """``hx = Conv1×1([h, x…]); h ← h + tanh(SS2D(hx))``."""

    def __init__(self, hidden: int, input_dim: int, d_state: int = 8, ssm_ratio: float = 1.0,
                 scan_mode: str = "cross2d") -> None:
        super().__init__()
        self.proj = nn.Conv2d(hidden + input_dim, hidden, 1)
        self.ss2d = SS2D(hidden, d_state=d_state, ssm_ratio=ssm_ratio, scan_mode=scan_mode)

    def forward(self, h: torch.Tensor, *x: torch.Tensor, context: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
        hx = self.proj(torch.cat([h, *x], dim=1))
        return h + torch.tanh(self.ss2d(hx))


class ConvGRU(nn.Module):
    """RAFT-Stereo ConvGRU with context biases ``c_z, c_r, c_q``."""

    def __init__(self, hidden: int, input_dim: int, kernel: int = 3) -> None:
        super().__init__()
        p = kernel // 2
        self.convz = nn.Conv2d(hidden + input_dim, hidden, kernel, padding=p)
        self.convr = nn.Conv2d(hidden + input_dim, hidden, kernel, padding=p)
        self.convq = nn.Conv2d(hidden + input_dim, hidden, kernel, padding=p)

    def forward(self, h: torch.Tensor, *x: torch.Tensor, context: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
        cz, cr, cq = context if context is not None else (0.0, 0.0, 0.0)
        xx = torch.cat(x, dim=1)
        hx = torch.cat([h, xx], dim=1)
        z = torch.sigmoid(self.convz(hx) + cz)
        r = torch.sigmoid(self.convr(hx) + cr)
        q = torch.tanh(self.convq(torch.cat([r * h, xx], dim=1)) + cq)
        return (1 - z) * h + z * q


class MotionEncoder(nn.Module):
    """RAFT-Stereo ``BasicMotionEncoder``, shrunk: corr (36 ch) and flow (2 ch) → ``hidden`` ch (flow appended)."""

    def __init__(self, corr_channels: int, hidden: int) -> None:
        super().__init__()
        c = hidden
        self.convc1 = nn.Conv2d(corr_channels, c, 1)
        self.convc2 = nn.Conv2d(c, c, 3, padding=1)
        self.convf1 = nn.Conv2d(2, c, 7, padding=3)
        self.convf2 = nn.Conv2d(c, c // 2, 3, padding=1)
        self.conv = nn.Conv2d(c + c // 2, hidden - 2, 3, padding=1)

    def forward(self, flow: torch.Tensor, corr: torch.Tensor) -> torch.Tensor:
        cor = F.relu(self.convc2(F.relu(self.convc1(corr))))
        flo = F.relu(self.convf2(F.relu(self.convf1(flow))))
        out = F.relu(self.conv(torch.cat([cor, flo], dim=1)))
        return torch.cat([out, flow], dim=1)


class FlowHead(nn.Module):
    def __init__(self, hidden: int, mid: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(hidden, mid, 3, padding=1)
        self.conv2 = nn.Conv2d(mid, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.conv1(x)))


class MultiLevelUpdate(nn.Module):
    """Three-level update at 1/4, 1/8, 1/16 cross-connected by pool2x / interp (SA2 and RAFT-Stereo).

    ``updater="ss2d"`` builds ConvSS2D cells (no context: SA2 "without_inp_list"); ``"gru"`` builds
    the ConvGRU twin, which takes context biases.
    """

    def __init__(self, hidden: int, corr_channels: int, updater: str = "ss2d", scan_mode: str = "cross2d",
                 d_state: int = 8, ssm_ratio: float = 1.0, factor: int = 4) -> None:
        super().__init__()
        if updater not in ("ss2d", "gru"):
            raise ValueError(f"updater must be 'ss2d' or 'gru', got {updater!r}")
        self.updater, self.factor = updater, factor
        self.encoder = MotionEncoder(corr_channels, hidden)

        def cell(input_dim: int) -> nn.Module:
            if updater == "gru":
                return ConvGRU(hidden, input_dim)
            return ConvSS2D(hidden, input_dim, d_state=d_state, ssm_ratio=ssm_ratio, scan_mode=scan_mode)

        self.cell04 = cell(hidden + hidden)  # motion features + interp(net[1])
        self.cell08 = cell(hidden + hidden)  # pool2x(net[0]) + interp(net[2])
        self.cell16 = cell(hidden)  # pool2x(net[1])
        self.flow_head = FlowHead(hidden, 2 * hidden)
        self.mask = nn.Sequential(nn.Conv2d(hidden, 2 * hidden, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(2 * hidden, 9 * factor * factor, 1))

    def forward(self, net: list[torch.Tensor], context: list[tuple[torch.Tensor, ...]] | None, corr: torch.Tensor,
                flow: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        ctx = context if context is not None else [None, None, None]
        net = list(net)
        net[2] = self.cell16(net[2], pool2x(net[1]), context=ctx[2])
        net[1] = self.cell08(net[1], pool2x(net[0]), interp(net[2], net[1]), context=ctx[1])
        motion = self.encoder(flow, corr)
        net[0] = self.cell04(net[0], motion, interp(net[1], net[0]), context=ctx[0])
        delta = self.flow_head(net[0])
        mask = 0.25 * self.mask(net[0])  # scale as RAFT: balances the mask gradients
        return net, mask, delta
