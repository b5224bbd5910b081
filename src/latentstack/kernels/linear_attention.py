"""Scalar-decay linear attention (RetNet / simple-GLA / Mamba-2 form), chunked.

Per head, with a key-by-value state ``S``::

    S_t = e^{g_t} S_{t−1} + k_tᵀ v_t ,     o_t = scale · q_t S_t

Chunked form (chunk T; ``G`` = cumsum of g inside the chunk; ``M_ij = exp(G_i − G_j)·[i ≥ j]``)::

    o      = scale · [(q kᵀ ⊙ M) v + (q ⊙ e^G) S_prev]
    S_next = e^{G_T} S_prev + (k ⊙ e^{G_T − G})ᵀ v

Why chunked: inside a chunk the work is matmuls (BLAS on CPU, tensor cores on GPU); across
chunks only a [K, V] state is carried. Every exponent is a difference ``G_i − G_j`` with i ≥ j
(or ``G ≤ 0``), so for g ≤ 0 nothing exceeds 1 — no overflow at any chunk size; the upper
triangle is masked *before* ``exp``.

Layout (head-first): ``q, k: [B, H, L, K]``, ``v: [B, H, L, V]``, ``g: [B, H, L]`` log-decays
(or ``[H]`` constant per head, RetNet: ``g_h = log(1 − 2^{−5−h})`` from :func:`retnet_log_decay`);
``initial_state``/final state ``[B, H, K, V]``. ``scale`` defaults to ``K^{-1/2}``.
Oracles follow fla's ``naive_recurrent_simple_gla`` / parallel forms. On CUDA the ``triton`` path
(:mod:`.triton_linear_attention`, one chunk kernel carrying S in registers) is preferred; on CPU
tensors it runs only under ``TRITON_INTERPRET=1`` (tests) and ``auto`` never picks it there.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from .dispatch import register, resolve, set_preference, triton_runs_on

__all__ = [
    "chunked_linear_attention",
    "linear_attention_chunked",
    "linear_attention_parallel",
    "linear_attention_recurrent",
    "linear_attention_triton",
    "retnet_log_decay",
]

LAOut = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


def retnet_log_decay(num_heads: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """RetNet per-head log-decays ``log(1 − 2^{−5−h})``, h = 0…H−1 (LION's MSR)."""
    h = torch.arange(num_heads, dtype=torch.float64)
    return torch.log1p(-torch.pow(2.0, -5.0 - h)).to(dtype)


def _prep(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor,
          scale: float | None) -> tuple[torch.Tensor, float]:
    if q.dim() != 4 or k.shape != q.shape or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"q, k must be [B, H, L, K] and v [B, H, L, V]; got {q.shape}, {k.shape}, {v.shape}")
    b, h, length, dk = q.shape
    if g.dim() == 1:
        if g.shape[0] != h:
            raise ValueError(f"per-head decay must have H={h} entries, got {tuple(g.shape)}")
        g = g.to(q.dtype)[None, :, None].expand(b, h, length)
    elif g.shape != (b, h, length):
        raise ValueError(f"g must be [B, H, L] or [H]; got {tuple(g.shape)}")
    return g.to(q.dtype), (dk ** -0.5 if scale is None else float(scale))


def linear_attention_recurrent(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, scale: float | None = None,
    initial_state: torch.Tensor | None = None, output_final_state: bool = False,
) -> LAOut:
    """Oracle: the recurrence, one Python step per time index."""
    g, scale = _prep(q, k, v, g, scale)
    b, h, length, dk = q.shape
    S = q.new_zeros(b, h, dk, v.shape[-1]) if initial_state is None else initial_state.to(q.dtype)
    outs = []
    for t in range(length):
        S = g[:, :, t, None, None].exp() * S + k[:, :, t, :, None] * v[:, :, t, None, :]
        outs.append(scale * torch.einsum("bhk,bhkv->bhv", q[:, :, t], S))
    o = torch.stack(outs, dim=2) if outs else v.new_zeros(b, h, 0, v.shape[-1])
    return (o, S) if output_final_state else o


def linear_attention_parallel(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, scale: float | None = None,
    initial_state: torch.Tensor | None = None, output_final_state: bool = False,
) -> LAOut:
    """Oracle: full L×L decay-masked attention ``(q kᵀ ⊙ M) v`` (O(L²) memory)."""
    g, scale = _prep(q, k, v, g, scale)
    G = g.cumsum(-1)
    o, S = _chunk_math(q, k, v, G, initial_state)
    o = o * scale
    return (o, S) if output_final_state else o


def _chunk_math(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, G: torch.Tensor,
                S_prev: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk (or the whole sequence), batched over any leading dims; unscaled output."""
    T = q.shape[-2]
    diff = G[..., :, None] - G[..., None, :]
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    M = diff.masked_fill(~causal, float("-inf")).exp()
    o = (q @ k.transpose(-1, -2) * M) @ v
    decay_end = (G[..., -1:] - G).exp()  # e^{G_T − G_s}
    S_chunk = (k * decay_end[..., None]).transpose(-1, -2) @ v
    if S_prev is not None:
        o = o + (q * G.exp()[..., None]) @ S_prev
        S_chunk = S_chunk + G[..., -1, None, None].exp() * S_prev
    return o, S_chunk


def linear_attention_chunked(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, scale: float | None = None,
    initial_state: torch.Tensor | None = None, output_final_state: bool = False, chunk_size: int = 64,
) -> LAOut:
    """Chunked form: batched intra-chunk matmuls, then a sequential carry of [K, V] states."""
    g, scale = _prep(q, k, v, g, scale)
    b, h, length, dk = q.shape
    dv = v.shape[-1]
    T = max(1, min(chunk_size, max(length, 1)))
    nc = -(-length // T)
    pad = nc * T - length
    if pad:  # g = 0, k = v = q = 0: padded steps neither decay nor write the state
        q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
        g = F.pad(g, (0, pad))
    qc, kc, vc = (x.reshape(b, h, nc, T, x.shape[-1]) for x in (q, k, v))
    G = g.reshape(b, h, nc, T).cumsum(-1)
    o_intra, S_chunk = _chunk_math(qc, kc, vc, G, None)  # all chunks at once
    decay_chunk = G[..., -1].exp()  # [B, H, nc]
    S = q.new_zeros(b, h, dk, dv) if initial_state is None else initial_state.to(q.dtype)
    starts = []
    for c in range(nc):  # carry across chunks
        starts.append(S)
        S = decay_chunk[:, :, c, None, None] * S + S_chunk[:, :, c]
    S_prev = torch.stack(starts, dim=2) if starts else q.new_zeros(b, h, 0, dk, dv)
    o = o_intra + (qc * G.exp()[..., None]) @ S_prev
    o = (scale * o).reshape(b, h, nc * T, dv)[:, :, :length]
    return (o, S) if output_final_state else o


def linear_attention_triton(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, scale: float | None = None,
    initial_state: torch.Tensor | None = None, output_final_state: bool = False, chunk_size: int = 64,
    **tiles: object,
) -> LAOut:
    """Triton chunk kernel (:mod:`.triton_linear_attention`, imported on first use: triton stays optional)."""
    from .triton_linear_attention import linear_attention_triton as fn

    return fn(q, k, v, g, scale, initial_state, output_final_state, chunk_size, **tiles)  # type: ignore[arg-type]


def _triton_kernel_usable(device: str) -> bool:
    """Triton runs on ``device``; on CPU the kernel module must not be imported in compiled mode already."""
    if not triton_runs_on(device):
        return False
    if device != "cpu":
        return True
    mod = sys.modules.get(f"{__package__}.triton_linear_attention")  # jit fixed the mode at import
    return mod is None or bool(mod.INTERPRETED)


register("linear_attention", "reference", linear_attention_recurrent, note="recurrent oracle (loop over L)")
register("linear_attention", "parallel", linear_attention_parallel, note="L x L masked oracle")
register("linear_attention", "chunked", linear_attention_chunked, note="chunked matmul form")
register(
    "linear_attention", "triton", linear_attention_triton, devices=("cuda", "cpu"),
    device_check=_triton_kernel_usable,
    why_unavailable=lambda: "needs triton and CUDA (or TRITON_INTERPRET=1 for CPU tensors)",
    note="Triton chunk kernel, state in registers; backward via chunked recompute",
)
set_preference("linear_attention", "cpu", ["chunked"])
set_preference("linear_attention", "cuda", ["triton", "chunked"])


def chunked_linear_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, scale: float | None = None,
    initial_state: torch.Tensor | None = None, output_final_state: bool = False, chunk_size: int = 64,
    *, impl: str = "auto",
) -> LAOut:
    """Scalar-decay linear attention; ``impl``: ``auto | chunked | triton | reference | parallel``.

    ``auto`` is the Triton kernel on CUDA when triton imports, else the chunked torch form.
    Returns ``o [B, H, L, V]`` or ``(o, S_final [B, H, K, V])``. Differentiable (autograd).
    """
    chosen = resolve("linear_attention", impl, q.device)
    if chosen.name in ("chunked", "triton"):
        return chosen.fn(q, k, v, g, scale, initial_state, output_final_state, chunk_size)
    return chosen.fn(q, k, v, g, scale, initial_state, output_final_state)

