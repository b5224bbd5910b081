"""Triton kernels of the integer linear layers (W8A8, W4A8) for CUDA; tested on CPU via ``TRITON_INTERPRET=1``.

One kernel does the whole layer (:func:`w8a8_linear_triton`, :func:`w4a8_linear_triton`)::

    pass 1  per row of the M-block: s_x = max(max_k |x|, eps) / 127                 (IEEE division)
    pass 2  K loop: q = clamp(round_half_even(x / s_x), −127, 127) as int8, acc += q @ W̃   (int32 tl.dot)
    store   y = acc · s_x · s_w (+ b), in the input's dtype

Why fused: on a GPU the torch path (abs, amax, clamp, div, round, clamp, cast, ``_int_mm``, cast, two muls, add)
is a dozen launches per layer and measured slower than bf16 (spec gpu.md §1); one launch per layer is the
point. Activation codes and scales are the same numbers :func:`~latentstack.kernels.int_linear.quantize_per_token`
gives (``div_rn`` is the IEEE division torch uses; round-half-even by the ``1.5·2²³`` add-subtract, exact
for |v| < 2²²), so the int32 accumulators are equal to ``_int_mm``'s; the epilogue may differ by the
rounding of a fused multiply-add (≤ 1 ulp). Each N-block recomputes its rows' scales (two passes over its
rows' K values, cheap at the project's widths); when many N-blocks would repeat that over many rows
(``M > 64`` and more than :data:`FUSE_MAX_N_BLOCKS` N-blocks, e.g. 1024²) the layer runs as two kernels instead,
:func:`quantize_per_token_triton` then the int8 GEMM with the same epilogue — the same codes, scales and
accumulators, so the same output.

W4A8 reads the packed ``[ceil(K/2), N]`` bytes inside the GEMM (row r: k = 2r low nibble, 2r + 1 high nibble,
as :func:`~latentstack.kernels.int_linear.pack_int4`), sign-extends the nibbles in registers and runs two
dots per K-block (even and odd activation columns), so no unpacked int8 copy of the weight exists.

Language subset: ``tl.load/store`` with masks, ``tl.dot`` int8 → int32, ``tl.math.div_rn``, integer bit ops,
``tl.max`` — accepted by triton 3.6 (the GPU machine) and 3.9 (here). Block sizes: ``tl.dot`` needs every
block dimension ≥ 16; the K-block is 64 (32 per nibble half).

The interpreter is read from ``TRITON_INTERPRET`` when this module is imported (``@triton.jit`` decides
then); set it before the first import (the tests do).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

__all__ = [
    "FUSE_MAX_N_BLOCKS",
    "INTERPRETED",
    "int4_matmul_triton",
    "int8_matmul_triton",
    "quantize_per_token_triton",
    "runs_on",
    "w4a8_linear_triton",
    "w8a8_linear_triton",
]

#: kernels were built for triton's CPU interpreter (``TRITON_INTERPRET`` set at import): they take CPU tensors
INTERPRETED: bool = os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")

_BLOCK_K = 64
#: above this many N-blocks (and M > 64) the activation quantisation runs once, as its own kernel
FUSE_MAX_N_BLOCKS = 4


def runs_on(device: torch.device | str) -> bool:
    """True if these kernels can take tensors on ``device`` here (CUDA compiled, or CPU when interpreted)."""
    dev = torch.device(device).type
    return (dev == "cpu" and INTERPRETED) or (dev == "cuda" and not INTERPRETED and torch.cuda.is_available())


# --------------------------------------------------------------------------- jit helpers
@triton.jit
def _quantize(a, sx):
    """int8 codes of fp32 ``a [BM, BK]`` with per-row scale ``sx [BM]``: clamp(rint(a / s), −127, 127)."""
    v = tl.math.div_rn(a, tl.zeros_like(a) + sx[:, None])  # operands of one shape (older div_rn does not broadcast)
    r = (v + 12582912.0) - 12582912.0
    r = tl.minimum(tl.maximum(r, -127.0), 127.0)
    return r.to(tl.int8)


@triton.jit
def _row_scales(A, offs_m, m_mask, K, stride_am, stride_ak, eps, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    """``max(max_k |A[m, k]|, eps) / 127`` (IEEE division) for the rows ``offs_m``."""
    amax = tl.zeros([BLOCK_M], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        a = tl.load(A + offs_m[:, None] * stride_am + offs_k[None, :] * stride_ak,
                    mask=m_mask[:, None] & (offs_k[None, :] < K), other=0.0).to(tl.float32)
        amax = tl.maximum(amax, tl.max(tl.abs(a), axis=1))
    return tl.math.div_rn(tl.maximum(amax, eps), tl.zeros_like(amax) + 127.0)


@triton.jit
def _load_a(A, offs_m, m_mask, cols, K, stride_am, stride_ak, sx, QUANT_A: tl.constexpr):
    """Activation block at columns ``cols`` as int8 codes (quantised here when ``A`` is float)."""
    ptrs = A + offs_m[:, None] * stride_am + cols[None, :] * stride_ak
    mask = m_mask[:, None] & (cols[None, :] < K)
    if QUANT_A:
        q = _quantize(tl.load(ptrs, mask=mask, other=0.0).to(tl.float32), sx)
    else:
        q = tl.load(ptrs, mask=mask, other=0)
    return q  # one return: the compiler type-checks every return of a function, constexpr branches included


@triton.jit
def _nibbles(p):
    """Sign-extended low / high nibbles of packed uint8 ``p`` as int8 (two's-complement int4)."""
    pi = p.to(tl.int32)
    lo = pi & 15
    hi = (pi >> 4) & 15
    lo = lo - (lo >= 8).to(tl.int32) * 16
    hi = hi - (hi >= 8).to(tl.int32) * 16
    return lo.to(tl.int8), hi.to(tl.int8)


# --------------------------------------------------------------------------- kernels
@triton.jit
def _quantize_rows_kernel(X, Q, S, M, K, stride_xm, stride_xk, stride_qm, stride_qk, eps,
                          BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    pid = tl.program_id(0)
    offs_m = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    m_mask = offs_m < M
    sx = _row_scales(X, offs_m, m_mask, K, stride_xm, stride_xk, eps, BLOCK_M, BLOCK_K)
    tl.store(S + offs_m, sx, mask=m_mask)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask = m_mask[:, None] & (offs_k[None, :] < K)
        a = tl.load(X + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk, mask=mask, other=0.0)
        q = _quantize(a.to(tl.float32), sx)
        tl.store(Q + offs_m[:, None] * stride_qm + offs_k[None, :] * stride_qk, q, mask=mask)


@triton.jit
def _int_gemm_kernel(A, W, SX, SW, BIAS, Y, M, N, K,
                     stride_am, stride_ak, stride_wk, stride_wn, stride_ym, stride_yn, eps,
                     QUANT_A: tl.constexpr, W4: tl.constexpr, EPILOGUE: tl.constexpr, HAS_BIAS: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """``Y = epilogue(Q(A) @ W̃)``: A float (``QUANT_A``: quantised per row here) or int8 codes with scales SX;
    W int8 ``[K, N]`` or (``W4``) packed int4 ``[ceil(K/2), N]``; ``EPILOGUE`` False stores the int32 acc."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_mask = offs_m < M
    n_mask = offs_n < N
    if QUANT_A:
        sx = _row_scales(A, offs_m, m_mask, K, stride_am, stride_ak, eps, BLOCK_M, BLOCK_K)
    else:
        sx = tl.zeros([BLOCK_M], dtype=tl.float32)
        if EPILOGUE:
            sx = tl.load(SX + offs_m, mask=m_mask, other=0.0)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.int32)
    for k0 in range(0, K, BLOCK_K):
        if W4:
            offs_r = k0 // 2 + tl.arange(0, BLOCK_K // 2)
            p = tl.load(W + offs_r[:, None] * stride_wk + offs_n[None, :] * stride_wn,
                        mask=(offs_r[:, None] < (K + 1) // 2) & n_mask[None, :], other=0)
            w_lo, w_hi = _nibbles(p)
            cols = k0 + 2 * tl.arange(0, BLOCK_K // 2)  # even columns pair with the low nibbles, odd with the high
            a_even = _load_a(A, offs_m, m_mask, cols, K, stride_am, stride_ak, sx, QUANT_A)
            a_odd = _load_a(A, offs_m, m_mask, cols + 1, K, stride_am, stride_ak, sx, QUANT_A)
            acc = tl.dot(a_even, w_lo, acc)
            acc = tl.dot(a_odd, w_hi, acc)
        else:
            offs_k = k0 + tl.arange(0, BLOCK_K)
            w = tl.load(W + offs_k[:, None] * stride_wk + offs_n[None, :] * stride_wn,
                        mask=(offs_k[:, None] < K) & n_mask[None, :], other=0)
            a = _load_a(A, offs_m, m_mask, offs_k, K, stride_am, stride_ak, sx, QUANT_A)
            acc = tl.dot(a, w, acc)
    y_ptrs = Y + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn
    y_mask = m_mask[:, None] & n_mask[None, :]
    if EPILOGUE:
        sw = tl.load(SW + offs_n, mask=n_mask, other=0.0)
        y = acc.to(tl.float32) * sx[:, None] * sw[None, :]
        if HAS_BIAS:
            y = y + tl.load(BIAS + offs_n, mask=n_mask, other=0.0)[None, :]
        tl.store(y_ptrs, y.to(Y.dtype.element_ty), mask=y_mask)
    else:
        tl.store(y_ptrs, acc, mask=y_mask)


# --------------------------------------------------------------------------- launchers
def _block_m(m: int) -> int:
    return 16 if m <= 16 else 32 if m <= 32 else 64


def _block_n(n: int) -> int:
    return 32 if n <= 32 else 64


def _check_device(*ts: torch.Tensor | None) -> None:
    for t in ts:
        if t is not None and not runs_on(t.device):
            mode = "interpreter (CPU tensors)" if INTERPRETED else "compiled (CUDA tensors)"
            raise RuntimeError(f"triton int kernels are built for the {mode}; got a {t.device} tensor")


def quantize_per_token_triton(x: torch.Tensor, eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row int8 codes and fp32 scales ``[M, 1]`` of ``x [M, K]`` (any float dtype), as ``quantize_per_token``."""
    _check_device(x)
    if x.ndim != 2:
        raise ValueError(f"x must be [M, K], got {tuple(x.shape)}")
    m, k = x.shape
    q = torch.empty((m, k), dtype=torch.int8, device=x.device)
    s = torch.empty((m,), dtype=torch.float32, device=x.device)
    if m:
        bm = _block_m(m)
        _quantize_rows_kernel[(triton.cdiv(m, bm),)](x, q, s, m, k, x.stride(0), x.stride(1), q.stride(0),
                                                     q.stride(1), eps, BLOCK_M=bm, BLOCK_K=_BLOCK_K)
    return q, s[:, None]


def _launch(a: torch.Tensor, w: torch.Tensor, k: int, n: int, *, quant_a: bool, w4: bool,
            sx: torch.Tensor | None, sw: torch.Tensor | None, bias: torch.Tensor | None,
            out_dtype: torch.dtype | None, eps: float) -> torch.Tensor:
    _check_device(a, w, sx, sw, bias)
    m = a.shape[0]
    epilogue = sw is not None
    y = torch.empty((m, n), dtype=(out_dtype or torch.float32) if epilogue else torch.int32, device=a.device)
    if m == 0 or n == 0:
        return y
    if k == 0:
        return y.zero_() if bias is None or not epilogue else y.copy_(bias.expand(m, n))
    dummy = y  # pointer placeholder for absent optional operands (never read: constexpr-guarded)
    bm, bn = _block_m(m), _block_n(n)
    grid = (triton.cdiv(m, bm), triton.cdiv(n, bn))
    _int_gemm_kernel[grid](
        a, w, dummy if sx is None else sx, dummy if sw is None else sw, dummy if bias is None else bias, y, m, n, k,
        a.stride(0), a.stride(1), w.stride(0), w.stride(1), y.stride(0), y.stride(1), eps,
        QUANT_A=quant_a, W4=w4, EPILOGUE=epilogue, HAS_BIAS=bias is not None,
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=_BLOCK_K,
    )
    return y


def _f32(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.to(torch.float32).contiguous()


def int8_matmul_triton(a_q: torch.Tensor, w_kn: torch.Tensor, scale_a: torch.Tensor | None = None,
                       scale_w: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                       out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """int8 ``a_q [M, K]`` @ int8 ``w_kn [K, N]`` (any strides): int32 when ``scale_w`` is None, else the
    dequantised ``acc · scale_a[m] · scale_w[n] (+ bias)`` in ``out_dtype`` (float32 default)."""
    if a_q.dtype != torch.int8 or w_kn.dtype != torch.int8:
        raise TypeError("int8_matmul_triton expects int8 operands")
    if a_q.shape[1] != w_kn.shape[0]:
        raise ValueError(f"shapes {tuple(a_q.shape)} @ {tuple(w_kn.shape)} do not chain")
    if scale_w is not None and scale_a is None:
        raise ValueError("the dequantising epilogue needs scale_a too")
    sa = None if scale_a is None else _f32(scale_a.reshape(-1))
    return _launch(a_q, w_kn, a_q.shape[1], w_kn.shape[1], quant_a=False, w4=False, sx=sa, sw=_f32(scale_w),
                   bias=_f32(bias), out_dtype=out_dtype, eps=0.0)


def int4_matmul_triton(a_q: torch.Tensor, packed: torch.Tensor, k: int) -> torch.Tensor:
    """int8 ``a_q [M, K]`` @ the int4 codes in ``packed [ceil(K/2), N]`` uint8 → int32 (unpacked in the kernel)."""
    if a_q.dtype != torch.int8 or packed.dtype != torch.uint8:
        raise TypeError("int4_matmul_triton expects int8 activations and uint8 packed weights")
    if a_q.shape[1] != k or packed.shape[0] != (k + 1) // 2:
        raise ValueError(f"a_q {tuple(a_q.shape)} / packed {tuple(packed.shape)} do not match K = {k}")
    return _launch(a_q, packed, k, packed.shape[1], quant_a=False, w4=True, sx=None, sw=None, bias=None,
                   out_dtype=None, eps=0.0)


def _fused(m: int, n: int, fuse: bool | None) -> bool:
    if fuse is not None:
        return fuse
    return m <= 64 or triton.cdiv(n, _block_n(n)) <= FUSE_MAX_N_BLOCKS


def _layer(x: torch.Tensor, w: torch.Tensor, k: int, n: int, w4: bool, w_scale: torch.Tensor,
           bias: torch.Tensor | None, eps: float, out_dtype: torch.dtype | None, fuse: bool | None) -> torch.Tensor:
    out_dtype = out_dtype or x.dtype
    if _fused(x.shape[0], n, fuse):
        return _launch(x, w, k, n, quant_a=True, w4=w4, sx=None, sw=_f32(w_scale), bias=_f32(bias),
                       out_dtype=out_dtype, eps=eps)
    q, s = quantize_per_token_triton(x, eps)
    return _launch(q, w, k, n, quant_a=False, w4=w4, sx=s.reshape(-1), sw=_f32(w_scale), bias=_f32(bias),
                   out_dtype=out_dtype, eps=eps)


def w8a8_linear_triton(x: torch.Tensor, w_kn: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None,
                       eps: float = 1e-8, out_dtype: torch.dtype | None = None,
                       fuse: bool | None = None) -> torch.Tensor:
    """The W8A8 layer on ``x [M, K]`` (float of any dtype): quantise rows, int8 GEMM, dequantise (+ bias); output
    in ``out_dtype`` (default ``x.dtype``). ``fuse``: one kernel (True) or quantise-then-GEMM (False); None picks."""
    if w_kn.dtype != torch.int8 or x.shape[1] != w_kn.shape[0]:
        raise ValueError("w_kn must be int8 [K, N] matching x [M, K]")
    return _layer(x, w_kn, x.shape[1], w_kn.shape[1], False, w_scale, bias, eps, out_dtype, fuse)


def w4a8_linear_triton(x: torch.Tensor, packed: torch.Tensor, k: int, w_scale: torch.Tensor,
                       bias: torch.Tensor | None, eps: float = 1e-8, out_dtype: torch.dtype | None = None,
                       fuse: bool | None = None) -> torch.Tensor:
    """The W4A8 layer: as :func:`w8a8_linear_triton` with the weight read as packed int4 nibbles in the GEMM."""
    if packed.dtype != torch.uint8 or x.shape[1] != k or packed.shape[0] != (k + 1) // 2:
        raise ValueError("packed must be uint8 [ceil(K/2), N] and x [M, K]")
    return _layer(x, packed, k, packed.shape[1], True, w_scale, bias, eps, out_dtype, fuse)
