"""Triton chunked scalar-decay linear attention (RetNet / simple-GLA); backward by torch recompute.

Same semantics and signature as :func:`latentstack.kernels.linear_attention.chunked_linear_attention`
(``S_t = e^{g_t} S_{t−1} + k_tᵀ v_t``, ``o_t = scale · q_t S_t``; initial and final state).

Kernel design: one program per (batch·head, block of ``BLOCK_V`` value columns) walks the sequence
in chunks of ``BT`` steps (``block_t``, independent of ``chunk_size``) carrying ``S[K, BLOCK_V]`` in
registers. Per chunk, with ``G`` the in-chunk cumulative log-decay (an in-register triangular sum,
no scan primitive needed)::

    o      = scale · [(q kᵀ ⊙ M) v + (q ⊙ e^G) S]          M_ij = e^{G_i − G_j} [i ≥ j]
    S_next = e^{G_T} S + (k ⊙ e^{G_T − G})ᵀ v

four ``tl.dot`` products per chunk; the upper triangle is masked *before* ``exp`` so nothing
exceeds 1 for g ≤ 0 (as in the torch chunked form). Steps past the end load g = q = k = v = 0:
they neither decay nor write the state, so ``G_T`` of a partial chunk is that of its last step.
Every input is read once and ``o`` written once.

fp32 inputs use IEEE fp32 dot products (``input_precision="ieee"``) so the result matches the
torch path to fp32 rounding; pass ``precision="tf32"`` for tensor-core speed at ~1e-3 relative
error. fp64 inputs compute in fp64; bf16/fp16 inputs are upcast to fp32 in registers.

Backward: :class:`_TritonLAFn` recomputes with the torch chunked form under autograd.
``triton.jit`` reads ``TRITON_INTERPRET`` when this module is imported (CPU tensors in tests).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import torch
import triton
import triton.language as tl

from .linear_attention import _prep, linear_attention_chunked

__all__ = ["INTERPRETED", "TILES", "linear_attention_triton"]

LAOut = torch.Tensor | tuple[torch.Tensor, torch.Tensor]

# The mode the kernel below was decorated in (jit reads the variable at decoration time).
INTERPRETED: bool = os.environ.get("TRITON_INTERPRET", "0") == "1"

# Defaults for calls that do not pass them (``chunked_linear_attention(impl="auto")`` never does). Not timed
# (no GPU here) but checked by compiling for sm_90 with triton 3.6 and 3.9 (cuobjdump): with IEEE fp32 dots,
# 16 × K(≤128) × 16 tiles at 8 warps are the largest that do not spill registers (64-wide tiles spill KBs
# per thread). A GPU benchmark that sweeps them may set the winners here; "tf32" trades ~1e-3 relative
# error for tensor cores (32 × 64 × 32 at 8 warps is spill-free there).
TILES: dict[str, int | str] = {"block_t": 16, "block_v": 16, "num_warps": 8, "precision": "ieee"}


@triton.jit
def _la_fwd_kernel(
    q_ptr, k_ptr, v_ptr, g_ptr, h0_ptr, o_ptr, ht_ptr, scale_ptr,
    L, K, V,
    HAS_H0: tl.constexpr, STORE_FINAL: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr,
):
    pid_bh = tl.program_id(0)
    pid_v = tl.program_id(1)
    bh = pid_bh.to(tl.int64)
    scale = tl.load(scale_ptr)  # a tensor, not a float argument: those are passed as fp32
    offs_t = tl.arange(0, BT)
    offs_k = tl.arange(0, BK)
    offs_v = pid_v * BV + tl.arange(0, BV)
    mask_k = offs_k < K
    mask_v = offs_v < V
    mask_kv = mask_k[:, None] & mask_v[None, :]
    state_off = bh * K * V + offs_k[:, None] * V + offs_v[None, :]
    if HAS_H0:
        S = tl.load(h0_ptr + state_off, mask=mask_kv, other=0.0).to(ACC)
    else:
        S = tl.zeros([BK, BV], dtype=ACC)
    causal = offs_t[:, None] >= offs_t[None, :]
    qk_base = bh * L * K
    v_base = bh * L * V
    g_base = bh * L

    for start in range(0, L, BT):
        t = start + offs_t
        mask_t = t < L
        m_tk = mask_t[:, None] & mask_k[None, :]
        m_tv = mask_t[:, None] & mask_v[None, :]
        q = tl.load(q_ptr + qk_base + t[:, None] * K + offs_k[None, :], mask=m_tk, other=0.0).to(ACC)
        k = tl.load(k_ptr + qk_base + t[:, None] * K + offs_k[None, :], mask=m_tk, other=0.0).to(ACC)
        v = tl.load(v_ptr + v_base + t[:, None] * V + offs_v[None, :], mask=m_tv, other=0.0).to(ACC)
        g = tl.load(g_ptr + g_base + t, mask=mask_t, other=0.0).to(ACC)
        G = tl.sum(tl.where(causal, g[None, :], 0.0), axis=1)  # inclusive cumsum inside the chunk
        G_last = tl.sum(g, axis=0)
        M = tl.exp(tl.where(causal, G[:, None] - G[None, :], float("-inf")))
        A = tl.dot(q, tl.trans(k), input_precision=PRECISION) * M
        o = tl.dot(A, v, input_precision=PRECISION)
        o += tl.dot(q * tl.exp(G)[:, None], S, input_precision=PRECISION)
        tl.store(o_ptr + v_base + t[:, None] * V + offs_v[None, :], o * scale, mask=m_tv)
        k_end = k * tl.exp(G_last - G)[:, None]
        S = tl.exp(G_last) * S + tl.dot(tl.trans(k_end), v, input_precision=PRECISION)

    if STORE_FINAL:
        tl.store(ht_ptr + state_off, S, mask=mask_kv)


def _on_device(x: torch.Tensor) -> Any:
    """Launch on the tensor's GPU (Triton uses the current device), a no-op for CPU tensors (interpreter)."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def _launch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, scale: float,
            h0: torch.Tensor | None, final: bool, block_t: int, block_v: int, precision: str,
            num_warps: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    b, h, length, dk = q.shape
    dv = v.shape[-1]
    q, k, v, g = (x.contiguous() for x in (q, k, v, g))
    h0 = None if h0 is None else h0.contiguous()
    cd = torch.float64 if q.dtype == torch.float64 else torch.float32
    o = torch.empty(b, h, length, dv, device=q.device, dtype=q.dtype)
    ht = torch.empty(b, h, dk, dv, device=q.device, dtype=q.dtype) if final else None
    # tl.dot needs every dimension ≥ 16 on a GPU: pad the tiles (masked loads), never the tensors
    bt = max(16, triton.next_power_of_2(min(block_t, max(length, 1))))
    bk = max(16, triton.next_power_of_2(dk))
    bv = max(16, min(triton.next_power_of_2(dv), block_v))
    grid = (b * h, triton.cdiv(dv, bv))
    with _on_device(q):
        _la_fwd_kernel[grid](
            q, k, v, g, q if h0 is None else h0, o, o if ht is None else ht,
            torch.full((1,), float(scale), device=q.device, dtype=cd),
            length, dk, dv,
            HAS_H0=h0 is not None, STORE_FINAL=final, BT=bt, BK=bk, BV=bv,
            ACC=tl.float64 if cd == torch.float64 else tl.float32,
            PRECISION="ieee" if cd == torch.float64 else precision, num_warps=num_warps,
        )
    return o, ht


class _TritonLAFn(torch.autograd.Function):
    """Triton forward; backward recomputes through the torch chunked form and differentiates it."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor,
                h0: torch.Tensor | None, scale: float, final: bool, chunk_size: int, block_t: int, block_v: int,
                precision: str, num_warps: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        ctx.save_for_backward(q, k, v, g, h0)
        ctx.scale, ctx.final, ctx.chunk_size = scale, final, chunk_size
        ctx.set_materialize_grads(False)
        return _launch(q, k, v, g, scale, h0, final, block_t, block_v, precision, num_warps)

    @staticmethod
    def backward(ctx: Any, go: torch.Tensor | None, ght: torch.Tensor | None) -> tuple[Any, ...]:
        saved = ctx.saved_tensors
        need = ctx.needs_input_grad[:5]
        with torch.enable_grad():
            leaves = [None if x is None else x.detach().requires_grad_(bool(r)) for x, r in zip(saved, need)]
            q, k, v, g, h0 = leaves
            o, ht = linear_attention_chunked(q, k, v, g, ctx.scale, h0, True, ctx.chunk_size)
            outs, grads_out = [], []
            for x, gx in ((o, go), (ht, ght)):
                if gx is not None:
                    outs.append(x)
                    grads_out.append(gx)
            wanted = [x for x, r in zip(leaves, need) if x is not None and r]
            got = list(torch.autograd.grad(outs, wanted, grads_out, allow_unused=True)) if outs and wanted else []
        result: list[torch.Tensor | None] = [got.pop(0) if x is not None and r else None for x, r in zip(leaves, need)]
        return (*result, None, None, None, None, None, None, None)


def linear_attention_triton(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, scale: float | None = None,
    initial_state: torch.Tensor | None = None, output_final_state: bool = False, chunk_size: int = 64,
    *, block_t: int | None = None, block_v: int | None = None, precision: str | None = None,
    num_warps: int | None = None,
) -> LAOut:
    """Triton chunked linear attention (CUDA, or CPU under ``TRITON_INTERPRET=1``); differentiable.

    ``g``: ``[B, H, L]`` log-decays or ``[H]`` per head. ``precision``: ``"ieee"`` (default) or
    ``"tf32"`` for fp32 inputs; ``None`` arguments take :data:`TILES`. The kernel's chunk is ``block_t``
    (the chunked math is exact for any chunk, so it is a tiling choice); ``chunk_size`` is the chunk of
    the torch recompute in backward. Returns ``o`` or ``(o, S_final)``.
    """
    # the per-head [H] decay is expanded here so the kernel sees one [B, H, L] layout (and autograd
    # maps its gradient back to [H] through the expand)
    g_full, scale_f = _prep(q, k, v, g, scale)
    o, ht = _TritonLAFn.apply(q, k, v, g_full, initial_state, scale_f, output_final_state, chunk_size,
                              int(TILES["block_t"] if block_t is None else block_t),
                              int(TILES["block_v"] if block_v is None else block_v),
                              str(TILES["precision"] if precision is None else precision),
                              int(TILES["num_warps"] if num_warps is None else num_warps))
    return (o, ht) if output_final_state else o
