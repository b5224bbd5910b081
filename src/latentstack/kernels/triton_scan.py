"""Triton selective scan (Mamba-1 / SS2D) forward; backward by recomputing the torch form.

Same semantics and signature as :func:`latentstack.kernels.scan.selective_scan` (Δ softplus and
bias, D skip, silu(z) gate, ``reverse``, groups G, initial and last state).

Kernel design: one program per (batch row, block of ``BLOCK_D`` channels) walks the sequence in
tiles of ``BLOCK_L`` steps, carrying the state ``h[BLOCK_D, N]`` in registers from tile to tile.
Each tile loads ``u, Δ, z [BLOCK_D, BLOCK_L]`` and ``B, C [N, BLOCK_L]`` once (contiguous along L,
so the loads coalesce), solves the recurrence inside the tile with an associative scan of the
pairs ``(exp(Δ A), Δ B u)`` along L — only products of decays in (0, 1] appear, so it is stable at
any step size, unlike the log-cumsum form — adds the carried state, contracts with C and writes
``y`` once. HBM traffic is therefore one read of every input and one write of ``y`` (the floor);
the sequential part per tile is a single multiply-add of the carry. ``BLOCK_L = 1`` degenerates to
a plain step-by-step loop. ``reverse`` walks the time index backwards (no flipped copies).

Backward: :class:`_TritonScanFn` saves the inputs and, on ``backward``, recomputes the scan with the
torch ``chunked`` form under autograd and differentiates that (O(B·D·L·N) memory in backward only).
It makes LION / stereo trainable on a GPU; a fused Triton backward is future work.

``triton.jit`` reads ``TRITON_INTERPRET`` when this module is imported: with it set to 1 the
kernel runs on CPU tensors (slowly) — that is how the tests check it without a GPU.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import torch
import triton
import triton.language as tl

from .scan import _as_groups, _check, _compute_dtype, selective_scan_chunked

__all__ = ["INTERPRETED", "TILES", "selective_scan_triton"]

ScanOut = torch.Tensor | tuple[torch.Tensor, torch.Tensor]

# The mode the kernels below were decorated in (jit reads the variable at decoration time).
INTERPRETED: bool = os.environ.get("TRITON_INTERPRET", "0") == "1"

# Tile sizes used when a call does not pass them (calls through ``selective_scan(impl="auto")`` never do):
# untuned defaults that keep a [block_d, N, block_l] tile in registers; a benchmark that sweeps them on a GPU
# may set the winners here for the whole process.
TILES: dict[str, int] = {"block_d": 8, "block_l": 16, "num_warps": 4}


@triton.jit
def _pair_combine(a1, b1, a2, b2):
    # (a1, b1) then (a2, b2):  h ↦ a2 (a1 h + b1) + b2
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _scan_fwd_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, h0_ptr, y_ptr, hl_ptr,
    DCH, L, N, G, DG,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr,
    SOFTPLUS: tl.constexpr, REVERSE: tl.constexpr, ONE_GROUP: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr, ACC: tl.constexpr,
):
    pid_b = tl.program_id(0)
    pid_d = tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    offs_l = tl.arange(0, BLOCK_L)
    mask_d = offs_d < DCH
    mask_n = offs_n < N
    mask_dn = mask_d[:, None] & mask_n[None, :]
    b64 = pid_b.to(tl.int64)

    A = tl.load(A_ptr + offs_d[:, None] * N + offs_n[None, :], mask=mask_dn, other=0.0).to(ACC)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(ACC)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(ACC)
    state_off = b64 * DCH * N + offs_d[:, None] * N + offs_n[None, :]
    if HAS_H0:
        h = tl.load(h0_ptr + state_off, mask=mask_dn, other=0.0).to(ACC)
    else:
        h = tl.zeros([BLOCK_D, BLOCK_N], dtype=ACC)

    row = b64 * DCH * L + offs_d.to(tl.int64)[:, None] * L  # [BLOCK_D, 1] start of each channel's sequence
    if ONE_GROUP:  # the whole channel block reads one group's B, C: load [N, BLOCK_L] once
        grp = (pid_d * BLOCK_D) // DG
        bc_row = (b64 * G + grp) * N * L + offs_n[:, None] * L  # [BLOCK_N, 1]
    else:  # channels of the block span groups: gather per channel (served from cache)
        grp_d = offs_d // DG
        bc_row = (b64 * G + grp_d[:, None, None]) * N * L + offs_n[None, :, None] * L
    last = (offs_l == BLOCK_L - 1)[None, None, :]

    for start in range(0, L, BLOCK_L):
        step = start + offs_l
        mask_l = step < L
        if REVERSE:
            t = L - 1 - step
        else:
            t = step
        m_dl = mask_d[:, None] & mask_l[None, :]
        u = tl.load(u_ptr + row + t[None, :], mask=m_dl, other=0.0).to(ACC)
        dt = tl.load(dt_ptr + row + t[None, :], mask=m_dl, other=0.0).to(ACC)
        if HAS_BIAS:
            dt = dt + bias[:, None]
        if SOFTPLUS:  # torch's softplus (threshold 20), written in an overflow-free form
            sp = tl.maximum(dt, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(dt)))
            dt = tl.where(dt > 20.0, dt, sp)
        dt = tl.where(m_dl, dt, 0.0)  # steps past the end: decay 1, drive 0 → state unchanged
        if ONE_GROUP:
            m_nl = mask_n[:, None] & mask_l[None, :]
            Bt = tl.load(B_ptr + bc_row + t[None, :], mask=m_nl, other=0.0).to(ACC)[None, :, :]
            Ct = tl.load(C_ptr + bc_row + t[None, :], mask=m_nl, other=0.0).to(ACC)[None, :, :]
        else:
            m3 = mask_dn[:, :, None] & mask_l[None, None, :]
            Bt = tl.load(B_ptr + bc_row + t[None, None, :], mask=m3, other=0.0).to(ACC)
            Ct = tl.load(C_ptr + bc_row + t[None, None, :], mask=m3, other=0.0).to(ACC)
        a = tl.exp(dt[:, None, :] * A[:, :, None])  # [BLOCK_D, BLOCK_N, BLOCK_L]
        bx = (dt * u)[:, None, :] * Bt
        a_cum, b_cum = tl.associative_scan((a, bx), 2, _pair_combine)
        hs = a_cum * h[:, :, None] + b_cum  # state after every step of the tile
        y = tl.sum(hs * Ct, axis=1)  # [BLOCK_D, BLOCK_L]
        if HAS_D:
            y = y + Dv[:, None] * u
        if HAS_Z:
            z = tl.load(z_ptr + row + t[None, :], mask=m_dl, other=0.0).to(ACC)
            y = y * (z / (1.0 + tl.exp(-z)))
        tl.store(y_ptr + row + t[None, :], y, mask=m_dl)
        h = tl.sum(tl.where(last, hs, 0.0), axis=2)  # padded steps kept it, so the last column is it

    tl.store(hl_ptr + state_off, h, mask=mask_dn)


def _on_device(x: torch.Tensor) -> Any:
    """Launch on the tensor's GPU (Triton uses the current device), a no-op for CPU tensors (interpreter)."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def _launch(
    u: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    D: torch.Tensor | None, z: torch.Tensor | None, bias: torch.Tensor | None, h0: torch.Tensor | None,
    softplus: bool, reverse: bool, block_d: int, block_l: int, num_warps: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    bt, dch, length = u.shape
    g, n = B.shape[1], A.shape[1]
    dg = dch // g
    cd = _compute_dtype(u)
    u, dt, A, B, C = (x.contiguous() for x in (u, dt, A, B, C))
    D, z, bias, h0 = (None if x is None else x.contiguous() for x in (D, z, bias, h0))
    y = torch.empty_like(u)
    h_last = torch.empty(bt, dch, n, device=u.device, dtype=cd)
    block_d = max(1, min(triton.next_power_of_2(dch), block_d))
    block_l = max(1, min(triton.next_power_of_2(max(length, 1)), block_l))
    grid = (bt, triton.cdiv(dch, block_d))
    dummy = u  # never read: the HAS_* flags are False for absent inputs
    with _on_device(u):
        _scan_fwd_kernel[grid](
            u, dt, A, B, C,
            dummy if D is None else D, dummy if z is None else z, dummy if bias is None else bias,
            dummy if h0 is None else h0, y, h_last,
            dch, length, n, g, dg,
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=bias is not None, HAS_H0=h0 is not None,
            SOFTPLUS=softplus, REVERSE=reverse, ONE_GROUP=g == 1 or dg % block_d == 0,
            BLOCK_D=block_d, BLOCK_N=triton.next_power_of_2(n), BLOCK_L=block_l,
            ACC=tl.float64 if cd == torch.float64 else tl.float32, num_warps=num_warps,
        )
    return y, h_last


class _TritonScanFn(torch.autograd.Function):
    """Triton forward; backward recomputes through the torch ``chunked`` scan and differentiates it."""

    @staticmethod
    def forward(ctx: Any, u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                C: torch.Tensor, D: torch.Tensor | None, z: torch.Tensor | None, bias: torch.Tensor | None,
                h0: torch.Tensor | None, softplus: bool, reverse: bool, block_d: int, block_l: int,
                num_warps: int) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.save_for_backward(u, delta, A, B, C, D, z, bias, h0)
        ctx.softplus, ctx.reverse = softplus, reverse
        ctx.set_materialize_grads(False)
        return _launch(u, delta, A, B, C, D, z, bias, h0, softplus, reverse, block_d, block_l, num_warps)

    @staticmethod
    def backward(ctx: Any, gy: torch.Tensor | None, gh: torch.Tensor | None) -> tuple[Any, ...]:
        saved = ctx.saved_tensors
        need = ctx.needs_input_grad[:9]
        with torch.enable_grad():
            leaves = [None if x is None else x.detach().requires_grad_(bool(r)) for x, r in zip(saved, need)]
            u, delta, A, B, C, D, z, bias, h0 = leaves
            y, h = selective_scan_chunked(u, delta, A, B, C, D, z, bias, ctx.softplus, ctx.reverse, h0, True)
            outs, grads_out = [], []
            for o, go in ((y, gy), (h, gh)):
                if go is not None:
                    outs.append(o)
                    grads_out.append(go)
            wanted = [x for x, r in zip(leaves, need) if x is not None and r]
            got = list(torch.autograd.grad(outs, wanted, grads_out, allow_unused=True)) if outs and wanted else []
        result: list[torch.Tensor | None] = []
        for x, r in zip(leaves, need):
            result.append(got.pop(0) if x is not None and r else None)
        return (*result, None, None, None, None, None)


def selective_scan_triton(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = True,
    reverse: bool = False,
    initial_state: torch.Tensor | None = None,
    return_last_state: bool = False,
    chunk_size: int = 64,
    *,
    block_d: int | None = None,
    block_l: int | None = None,
    num_warps: int | None = None,
) -> ScanOut:
    """Triton selective scan (CUDA, or CPU under ``TRITON_INTERPRET=1``); differentiable.

    ``chunk_size`` is accepted for signature parity with the other paths and unused (the Triton
    tile along L is ``block_l``). Computes in fp32 (fp64 for fp64 inputs) like the reference;
    ``y`` has the input dtype, the last state the compute dtype. ``block_d × N × block_l`` values per
    live tile (8 × 16 × 16 = 2048 by default, ~16 registers a thread at 4 warps); ``None`` takes
    :data:`TILES` (untuned defaults a GPU benchmark can sweep and overwrite).
    """
    del chunk_size
    B, C = _as_groups(B), _as_groups(C)
    _check(u, delta, A, B, C)
    y, h = _TritonScanFn.apply(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, reverse,
                               TILES["block_d"] if block_d is None else block_d,
                               TILES["block_l"] if block_l is None else block_l,
                               TILES["num_warps"] if num_warps is None else num_warps)
    return (y, h) if return_last_state else y
