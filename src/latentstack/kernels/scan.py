"""Selective scan (Mamba-1 / SS2D): a diagonal, input-dependent linear recurrence.

    Δ = softplus(delta + delta_bias)
    h_t = exp(Δ_t A) ⊙ h_{t−1} + Δ_t B_t u_t
    y_t = ⟨C_t, h_t⟩ + D ⊙ u_t ;   y *= silu(z) if z is given
    reverse=True ≡ flip(scan(flip(inputs)))

Shapes follow ``mamba_ssm.selective_scan_fn`` / VMamba: ``u, delta: [Bt, Dch, L]``,
``A: [Dch, N]`` (negative real), ``B, C: [Bt, G, N, L]`` (or ``[Bt, N, L]`` for G = 1) with
channel ``d`` using group ``d // (Dch // G)``; ``D, delta_bias: [Dch]``; ``z: [Bt, Dch, L]``;
``initial_state`` / ``h_last``: ``[Bt, Dch, N]``.

Paths (all registered in :mod:`latentstack.kernels.dispatch`, compared to the reference in
tests and in ``benchmarks/kernels.py``):

- ``reference`` — the equation, a Python loop over time (mamba_ssm's ``selective_scan_ref``
  style); differentiable through autograd.
- ``cpp`` — sequential C++ kernel (``_scan_cpp``), SIMD over channels, custom autograd with a
  reverse-time C++ backward. Default on CPU when it builds.
- ``chunked`` — two-level products-only scan in torch (Hillis–Steele doubling inside chunks,
  sequential carry across chunks). Never the log-space cumsum form (it overflows).
- ``compiled`` — ``torch.compile``d unrolled loop over one chunk, called per chunk (inference).
- ``triton`` — Triton kernel (:mod:`.triton_scan`): tiles along L, state in registers, each input
  read once; backward recomputes through ``chunked``. First choice on CUDA; on CPU tensors only
  under ``TRITON_INTERPRET=1`` (tests), never picked by ``auto`` on CPU.
- ``mamba_ssm`` — the CUDA kernel of the ``mamba-ssm`` package when it imports (GPU only).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from . import _scan_cpp
from .dispatch import register, resolve, set_preference, triton_runs_on

__all__ = [
    "cpp_available",
    "selective_scan",
    "selective_scan_chunked",
    "selective_scan_compiled",
    "selective_scan_cpp",
    "selective_scan_ref",
    "selective_scan_triton",
]

ScanOut = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


# --------------------------------------------------------------------------- shared helpers
def _compute_dtype(u: torch.Tensor) -> torch.dtype:
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def _as_groups(B: torch.Tensor) -> torch.Tensor:
    """Accept ``[Bt, N, L]`` (G = 1) or ``[Bt, G, N, L]``."""
    if B.dim() == 3:
        return B.unsqueeze(1)
    if B.dim() != 4:
        raise ValueError(f"B/C must be [Bt, G, N, L] or [Bt, N, L], got {tuple(B.shape)}")
    return B


def _check(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor) -> None:
    if u.dim() != 3 or delta.shape != u.shape:
        raise ValueError(f"u and delta must be [Bt, Dch, L]; got {tuple(u.shape)}, {tuple(delta.shape)}")
    bt, dch, length = u.shape
    if A.shape[0] != dch or A.dim() != 2:
        raise ValueError(f"A must be [Dch, N] = [{dch}, N]; got {tuple(A.shape)}")
    if B.shape != C.shape or B.shape[0] != bt or B.shape[2] != A.shape[1] or B.shape[3] != length:
        raise ValueError(f"B, C must be [Bt, G, N, L]; got {tuple(B.shape)}, {tuple(C.shape)}")
    if dch % B.shape[1]:
        raise ValueError(f"Dch={dch} must be divisible by the number of groups G={B.shape[1]}")


def _delta_to_dt(delta: torch.Tensor, delta_bias: torch.Tensor | None, softplus: bool) -> torch.Tensor:
    dt = delta if delta_bias is None else delta + delta_bias.to(delta.dtype)[:, None]
    return F.softplus(dt) if softplus else dt


def _finish(
    y: torch.Tensor,
    u: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """Skip connection and gate, in the compute dtype, then cast back to the input dtype."""
    if D is not None:
        y = y + D.to(y.dtype)[:, None] * u
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y.to(out_dtype)


def _flip_inputs(
    u: torch.Tensor, delta: torch.Tensor, B: torch.Tensor, C: torch.Tensor, z: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    return u.flip(-1), delta.flip(-1), B.flip(-1), C.flip(-1), None if z is None else z.flip(-1)


# --------------------------------------------------------------------------- reference
def selective_scan_ref(
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
) -> ScanOut:
    """Reference scan: the recurrence written out, one Python step per time index.

    Why it exists: it is the oracle every fast path is tested against, and the baseline the
    benchmark ratios are quoted against. Differentiable through autograd.
    """
    B, C = _as_groups(B), _as_groups(C)
    _check(u, delta, A, B, C)
    if reverse:
        u, delta, B, C, z = _flip_inputs(u, delta, B, C, z)
        out = selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, False, initial_state, True)
        y, h = out  # type: ignore[misc]
        return (y.flip(-1), h) if return_last_state else y.flip(-1)
    out_dtype, cd = u.dtype, _compute_dtype(u)
    u, delta, A, B, C = (x.to(cd) for x in (u, delta, A, B, C))
    bt, dch, length = u.shape
    g, n = B.shape[1], A.shape[1]
    dg = dch // g
    dt = _delta_to_dt(delta, delta_bias, delta_softplus)
    decay = torch.exp(dt.unsqueeze(-1) * A[None, :, None, :])  # exp(Δ_t A)   [Bt, Dch, L, N]
    drive = (dt * u).view(bt, g, dg, length, 1) * B.transpose(-1, -2).view(bt, g, 1, length, n)
    drive = drive.reshape(bt, dch, length, n)  # Δ_t B_t u_t             [Bt, Dch, L, N]
    # unbind (not indexing) so autograd's backward stays O(L) instead of one full-size zero grad per step
    decay_t, drive_t, C_t = decay.unbind(2), drive.unbind(2), C.unbind(3)  # per time step
    h = u.new_zeros(bt, dch, n) if initial_state is None else initial_state.to(cd)
    ys = []
    for t in range(length):
        h = decay_t[t] * h + drive_t[t]
        ys.append(torch.einsum("bgdn,bgn->bgd", h.view(bt, g, dg, n), C_t[t]).reshape(bt, dch))
    y = torch.stack(ys, dim=-1) if ys else u.new_zeros(bt, dch, 0)
    y = _finish(y, u, D, z, out_dtype)
    return (y, h) if return_last_state else y


# --------------------------------------------------------------------------- chunked (torch)
def _chunked_core(
    u: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    h0: torch.Tensor | None, chunk: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward-direction two-level scan; only products of decays in (0, 1] appear (stable)."""
    bt, dch, length = u.shape
    g, n = B.shape[1], A.shape[1]
    dg = dch // g
    T = max(1, min(chunk, length))
    nc = -(-length // T)
    pad = nc * T - length
    if pad:  # Δ = 0 ⇒ decay 1, drive 0: padding steps leave the state untouched
        u, dt, B, C = F.pad(u, (0, pad)), F.pad(dt, (0, pad)), F.pad(B, (0, pad)), F.pad(C, (0, pad))
    a = torch.exp(dt.view(bt, g, dg, nc, T, 1) * A.view(1, g, dg, 1, 1, n))
    Bc = B.view(bt, g, n, nc, T).permute(0, 1, 3, 4, 2).unsqueeze(2)  # [Bt, G, 1, nc, T, N]
    b = (dt * u).view(bt, g, dg, nc, T, 1) * Bc
    s = 1
    while s < T:  # Hillis–Steele inclusive scan of (a, b) pairs along T
        a_prev = F.pad(a[..., :-s, :], (0, 0, s, 0), value=1.0)
        b_prev = F.pad(b[..., :-s, :], (0, 0, s, 0), value=0.0)
        b = a * b_prev + b
        a = a * a_prev
        s *= 2
    carry = u.new_zeros(bt, g, dg, n) if h0 is None else h0.view(bt, g, dg, n)
    carries = []
    for c in range(nc):  # sequential across chunks
        carries.append(carry)
        carry = a[:, :, :, c, -1] * carry + b[:, :, :, c, -1]
    h = b + a * torch.stack(carries, dim=3).unsqueeze(-2)
    y = torch.einsum("bgdctn,bgnct->bgdct", h, C.view(bt, g, n, nc, T))
    return y.reshape(bt, dch, nc * T)[..., :length], carry.reshape(bt, dch, n)


def selective_scan_chunked(
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
) -> ScanOut:
    """Two-level products-only scan in torch; differentiable by autograd; O(B·D·L·N) memory."""
    B, C = _as_groups(B), _as_groups(C)
    _check(u, delta, A, B, C)
    if reverse:
        u, delta, B, C, z = _flip_inputs(u, delta, B, C, z)
    out_dtype, cd = u.dtype, _compute_dtype(u)
    u, delta, A, B, C = (x.to(cd) for x in (u, delta, A, B, C))
    dt = _delta_to_dt(delta, delta_bias, delta_softplus)
    h0 = None if initial_state is None else initial_state.to(cd)
    y, h = _chunked_core(u, dt, A, B, C, h0, chunk_size)
    y = _finish(y, u, D, z, out_dtype)
    if reverse:
        y = y.flip(-1)
    return (y, h) if return_last_state else y


# --------------------------------------------------------------------------- compiled chunk loop
_COMPILED: dict[int, Callable[..., Any]] = {}


def _chunk_loop(h: torch.Tensor, dt: torch.Tensor, u: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """T sequential steps on one chunk; ``torch.compile`` unrolls and fuses them."""
    bt, dch, T = u.shape
    g, n = B.shape[1], B.shape[2]
    Bx = B.unsqueeze(2).expand(bt, g, dch // g, n, T).reshape(bt, dch, n, T)
    Cx = C.unsqueeze(2).expand(bt, g, dch // g, n, T).reshape(bt, dch, n, T)
    ys = []
    for t in range(T):
        h = torch.exp(dt[:, :, t, None] * A) * h + (dt[:, :, t] * u[:, :, t])[..., None] * Bx[..., t]
        ys.append((h * Cx[..., t]).sum(-1))
    return torch.stack(ys, -1), h


def selective_scan_compiled(
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
) -> ScanOut:
    """``torch.compile``d T-step loop called per chunk (inference path; cold compile ~15–20 s).

    L is padded to a multiple of T (Δ = 0 steps are exact no-ops) so one compiled graph serves
    every length at a given (Bt, Dch, N, G).
    """
    B, C = _as_groups(B), _as_groups(C)
    _check(u, delta, A, B, C)
    if reverse:
        u, delta, B, C, z = _flip_inputs(u, delta, B, C, z)
    out_dtype, cd = u.dtype, _compute_dtype(u)
    u, delta, A, B, C = (x.to(cd) for x in (u, delta, A, B, C))
    dt = _delta_to_dt(delta, delta_bias, delta_softplus)
    bt, dch, length = u.shape
    T = chunk_size
    fn = _COMPILED.get(T)
    if fn is None:
        fn = _COMPILED[T] = torch.compile(_chunk_loop, dynamic=False, fullgraph=True)
    nc = -(-length // T)
    pad = nc * T - length
    up, dtp, Bp, Cp = (F.pad(x, (0, pad)) if pad else x for x in (u, dt, B, C))
    h = u.new_zeros(bt, dch, A.shape[1]) if initial_state is None else initial_state.to(cd)
    ys = []
    for c in range(nc):
        sl = slice(c * T, (c + 1) * T)
        yc, h = fn(h, dtp[..., sl], up[..., sl], A, Bp[..., sl], Cp[..., sl])
        ys.append(yc)
    y = torch.cat(ys, -1)[..., :length] if ys else u.new_zeros(bt, dch, 0)
    y = _finish(y, u, D, z, out_dtype)
    if reverse:
        y = y.flip(-1)
    return (y, h) if return_last_state else y


# --------------------------------------------------------------------------- C++ kernel
def cpp_available() -> bool:
    """True if the C++ kernel is built/loaded (builds it on first call, ~15–30 s, then cached)."""
    return _scan_cpp.load_scan_extension()


class _CppScanFn(torch.autograd.Function):
    """Recurrence + D + silu(z) gate on the C++ kernel, with the C++ reverse-time backward."""

    @staticmethod
    def forward(ctx: Any, u: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                C: torch.Tensor, D: torch.Tensor | None, z: torch.Tensor | None, h0: torch.Tensor | None,
                reverse: bool, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
        args = [x if x is None else x.contiguous() for x in (u, dt, A, B, C, D, z, h0)]
        y, h = torch.ops.latentstack_scan.fwd(*args, reverse, chunk)
        ctx.save_for_backward(*args)
        ctx.reverse, ctx.chunk = reverse, chunk
        ctx.set_materialize_grads(False)
        return y, h

    @staticmethod
    def backward(ctx: Any, gy: torch.Tensor | None, gh: torch.Tensor | None) -> tuple[Any, ...]:
        u, dt, A, B, C, D, z, h0 = ctx.saved_tensors
        gy = torch.zeros_like(u) if gy is None else gy.to(u.dtype).contiguous()
        gh = None if gh is None else gh.to(u.dtype).contiguous()
        gu, gdt, gz, ga, gb, gc, gd, gh0 = torch.ops.latentstack_scan.bwd(
            u, dt, A, B, C, D, z, h0, gy, gh, ctx.reverse, ctx.chunk
        )
        bt, g, n, length = B.shape
        gb = gb.view(bt, g, -1, n, length).sum(2)
        gc = gc.view(bt, g, -1, n, length).sum(2)
        return (
            gu,
            gdt,
            ga.sum(0),
            gb,
            gc,
            None if D is None else gd.sum(0),
            None if z is None else gz,
            None if h0 is None else gh0,
            None,
            None,
        )


def selective_scan_cpp(
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
) -> ScanOut:
    """C++ sequential kernel (CPU, fp32/fp64 compute), differentiable via a C++ backward.

    ``chunk_size`` is the tile length of the kernel and the checkpoint interval of the backward.
    """
    if not cpp_available():
        raise RuntimeError(f"C++ selective_scan unavailable: {_scan_cpp.cpp_status()[1]}")
    B, C = _as_groups(B), _as_groups(C)
    _check(u, delta, A, B, C)
    out_dtype, cd = u.dtype, _compute_dtype(u)
    u, delta, A, B, C = (x.to(cd) for x in (u, delta, A, B, C))
    dt = _delta_to_dt(delta, delta_bias, delta_softplus)
    D, z, h0 = (None if x is None else x.to(cd) for x in (D, z, initial_state))
    y, h = _CppScanFn.apply(u, dt, A, B, C, D, z, h0, reverse, chunk_size)
    y = y.to(out_dtype)
    return (y, h) if return_last_state else y


# --------------------------------------------------------------------------- GPU (optional)
def _mamba_ssm_available() -> bool:
    return torch.cuda.is_available() and importlib.util.find_spec("mamba_ssm") is not None


def selective_scan_mamba_ssm(
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
) -> ScanOut:
    """``mamba_ssm.selective_scan_fn`` (CUDA) behind our API; reverse by flipping, no initial state."""
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn  # type: ignore[import-not-found]

    if initial_state is not None:
        raise NotImplementedError("mamba_ssm.selective_scan_fn takes no initial_state")
    if reverse:
        u, delta, B, C, z = _flip_inputs(u, delta, _as_groups(B), _as_groups(C), z)
    out = selective_scan_fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if reverse:
        return (out[0].flip(-1), out[1]) if return_last_state else out.flip(-1)
    return out


# --------------------------------------------------------------------------- Triton
def _triton_kernel_usable(device: str) -> bool:
    """Triton runs on ``device`` and, if the kernel module is already imported, in the matching mode."""
    if not triton_runs_on(device):
        return False
    if device != "cpu":
        return True
    # jit fixed the mode when the module was imported: a compiled (non-interpreted) kernel takes no CPU tensors
    mod = sys.modules.get(f"{__package__}.triton_scan")
    return mod is None or bool(mod.INTERPRETED)


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
    **tiles: int,
) -> ScanOut:
    """Triton kernel (:mod:`.triton_scan`, imported on first use so importing this module never needs triton)."""
    from .triton_scan import selective_scan_triton as fn

    return fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, initial_state, return_last_state,
              chunk_size, **tiles)


# --------------------------------------------------------------------------- dispatcher
register("selective_scan", "reference", selective_scan_ref, note="Python loop over L (oracle)")
register(
    "selective_scan", "cpp", selective_scan_cpp, devices=("cpu",), check=lambda: cpp_available(),
    why_unavailable=lambda: _scan_cpp.cpp_status()[1], note="C++ sequential kernel + C++ backward",
)
register("selective_scan", "chunked", selective_scan_chunked, note="two-level doubling scan (torch)")
register("selective_scan", "compiled", selective_scan_compiled, devices=("cpu",),
         note="torch.compile'd per-chunk loop (cold compile 15-20 s)")
register(
    "selective_scan", "mamba_ssm", selective_scan_mamba_ssm, devices=("cuda",), check=_mamba_ssm_available,
    why_unavailable=lambda: "needs CUDA and the mamba-ssm package", note="mamba-ssm CUDA kernel",
)
# The order is the benchmark's verdict on this CPU (benchmarks/kernels.py, reports/kernels/).
set_preference("selective_scan", "cpu", ["cpp", "reference"])
register(
    "selective_scan", "triton", selective_scan_triton, devices=("cuda", "cpu"), device_check=_triton_kernel_usable,
    why_unavailable=lambda: "needs triton and CUDA (or TRITON_INTERPRET=1 for CPU tensors)",
    note="Triton tiled scan, state in registers; backward via chunked recompute",
)
set_preference("selective_scan", "cuda", ["triton", "mamba_ssm", "chunked"])


def selective_scan(
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
    *,
    chunk_size: int = 64,
    impl: str = "auto",
) -> ScanOut:
    """Selective scan with the ``mamba_ssm.selective_scan_fn`` signature and a path switch.

    ``impl``: ``"auto"`` (C++ kernel on CPU if it builds, else the reference; on CUDA the Triton
    kernel, else ``mamba_ssm``, else the chunked torch form), or one of ``"reference" | "cpp" |
    "chunked" | "compiled" | "triton" | "mamba_ssm"`` (raises if that path is unavailable).
    Returns ``y`` or ``(y, h_last)``.
    """
    chosen = resolve("selective_scan", impl, u.device)
    if chosen.name == "reference":
        return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse,
                                  initial_state, return_last_state)
    return chosen.fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, initial_state,
                     return_last_state, chunk_size=chunk_size)
