"""Linear group RNN operators over (nG, K, C) groups (spec §5).

- :class:`BiMamba` — LION's default: shared in/out projections, separate forward/backward conv,
  x/dt projections, A and D; both directions run on the shared :func:`latentstack.kernels.selective_scan`.
- :class:`RetNetMSR` — multi-scale retention on :func:`latentstack.kernels.chunked_linear_attention`;
  ``bidirectional=False`` is the released code (causal only), ``True`` the paper's wording.
- ``identity`` — the ablation: the operator block returns its input unchanged.

Blocks: Mamba is post-norm ``h + DropPath(LN(op(h)))``; RetNet is pre-norm with an FFN.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from latentstack.kernels import chunked_linear_attention, selective_scan
from latentstack.kernels.linear_attention import retnet_log_decay

__all__ = ["BiMamba", "DropPath", "OperatorBlock", "RetNetMSR", "build_operator_block"]


class DropPath(nn.Module):
    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty(x.shape[0], *([1] * (x.dim() - 1))).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class _MambaDirection(nn.Module):
    """The per-direction parameters of BiMamba: causal depthwise conv, x_proj, dt_proj, A_log, D."""

    def __init__(self, d_inner: int, d_state: int, d_conv: int, dt_rank: int) -> None:
        super().__init__()
        self.d_conv = d_conv
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, bias=True)
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_inner, bias=True)
        self.dt_rank, self.d_state = dt_rank, d_state
        # mamba_simple init: W_dt ~ U(±dt_rank^-1/2); dt bias = inv-softplus(logU(1e-3, 0.1)), floor 1e-4
        nn.init.uniform_(self.dt_proj.weight, -dt_rank ** -0.5, dt_rank ** -0.5)
        dt = torch.exp(torch.rand(d_inner) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp(min=1e-4)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d_inner, 1))
        self.D = nn.Parameter(torch.ones(d_inner))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """x, z: (nG, d_inner, L) → (nG, d_inner, L)."""
        length = x.shape[-1]
        x = F.silu(self.conv1d(F.pad(x, (self.d_conv - 1, 0)))[..., :length])
        dbl = self.x_proj(x.transpose(1, 2))  # (nG, L, R + 2N)
        dt, b, c = torch.split(dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = (dt @ self.dt_proj.weight.t()).transpose(1, 2)  # (nG, d_inner, L)
        A = -torch.exp(self.A_log.float())
        return selective_scan(x.contiguous(), delta.contiguous(), A, b.transpose(1, 2).contiguous(),
                              c.transpose(1, 2).contiguous(), self.D.float(), z=z.contiguous(),
                              delta_bias=self.dt_proj.bias.float(), delta_softplus=True)


class BiMamba(nn.Module):
    """Bidirectional Mamba (LION ``mamba_simple`` bimamba): ``W_out(o_f + flip(o_b(flip ·)))``."""

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2) -> None:
        super().__init__()
        d_inner = expand * d_model
        dt_rank = math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.fwd = _MambaDirection(d_inner, d_state, d_conv, dt_rank)
        self.bwd = _MambaDirection(d_inner, d_state, d_conv, dt_rank)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        xz = self.in_proj(h).transpose(1, 2)  # (nG, 2·d_inner, L)
        x, z = xz.chunk(2, dim=1)
        o_f = self.fwd(x, z)
        o_b = self.bwd(x.flip(-1), z.flip(-1)).flip(-1)
        return self.out_proj((o_f + o_b).transpose(1, 2))


class RetNetMSR(nn.Module):
    """Multi-scale retention (LION retnet_attn, used_MLP ⇒ no gate): q, k width C·expand_k, v C·expand_v."""

    def __init__(self, d_model: int, num_heads: int = 2, expand_k: int = 1, expand_v: int = 2,
                 bidirectional: bool = False, chunk_size: int = 64) -> None:
        super().__init__()
        self.h = num_heads
        self.dk, self.dv = d_model * expand_k, d_model * expand_v
        if self.dk % num_heads or self.dv % num_heads:
            raise ValueError("key/value widths must divide by the number of heads")
        self.q_proj = nn.Linear(d_model, self.dk, bias=False)
        self.k_proj = nn.Linear(d_model, self.dk, bias=False)
        self.v_proj = nn.Linear(d_model, self.dv, bias=False)
        self.o_proj = nn.Linear(self.dv, d_model, bias=False)
        self.bidirectional = bidirectional
        self.chunk_size = chunk_size
        self.register_buffer("log_decay", retnet_log_decay(num_heads), persistent=False)

    def _heads(self, t: torch.Tensor, d: int) -> torch.Tensor:
        return t.view(t.shape[0], t.shape[1], self.h, d // self.h).transpose(1, 2)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        q = self._heads(self.q_proj(h), self.dk)
        k = self._heads(self.k_proj(h), self.dk)
        v = self._heads(self.v_proj(h), self.dv)
        o = chunked_linear_attention(q, k, v, self.log_decay, chunk_size=self.chunk_size)
        if self.bidirectional:
            o = o + chunked_linear_attention(q.flip(2), k.flip(2), v.flip(2), self.log_decay,
                                             chunk_size=self.chunk_size).flip(2)
        o = o.transpose(1, 2).reshape(h.shape[0], h.shape[1], self.dv)
        return self.o_proj(o)


class OperatorBlock(nn.Module):
    """One operator block over groups: Mamba post-norm, RetNet pre-norm + FFN, or identity."""

    def __init__(self, kind: str, d_model: int, drop_path: float = 0.0, d_state: int = 16,
                 retnet_bidirectional: bool = False) -> None:
        super().__init__()
        self.kind = kind
        self.drop_path = DropPath(drop_path)
        if kind == "mamba":
            self.op = BiMamba(d_model, d_state=d_state)
            self.norm = nn.LayerNorm(d_model)
        elif kind == "retnet":
            self.op = RetNetMSR(d_model, bidirectional=retnet_bidirectional)
            self.norm = nn.LayerNorm(d_model)
            self.norm2 = nn.LayerNorm(d_model)
            self.ffn = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))
        elif kind != "identity":
            raise ValueError(f"unknown operator {kind!r}; expected 'mamba', 'retnet' or 'identity'")

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.kind == "identity":
            return h
        if self.kind == "mamba":
            return h + self.drop_path(self.norm(self.op(h)))
        h = h + self.drop_path(self.op(self.norm(h)))
        return h + self.drop_path(self.ffn(self.norm2(h)))


def build_operator_block(kind: str, d_model: int, drop_path: float = 0.0, **kw: object) -> OperatorBlock:
    return OperatorBlock(kind, d_model, drop_path, **kw)  # type: ignore[arg-type]
