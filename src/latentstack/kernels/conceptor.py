"""Conceptor gate ``h ← h Mᵀ`` with ``M = (1 − β) I + β C`` on the last dimension (COAST).

Why a kernel: the gate runs at a latent site on every policy call (every denoising step), so it
must cost one GEMM and nothing else, and β = 0 must be an exact no-op. Paths:

- :func:`conceptor_gate` — ``addmm(h, h, Cᵀ, beta=1−β, alpha=β)``: one BLAS call computing
  ``(1−β) h + β h Cᵀ`` without materialising M; β = 0 returns ``h`` itself (same tensor, no
  arithmetic), so it is bit-identical.
- :func:`gate_matrix` + :func:`apply_gate` / :class:`ConceptorGate` — precompute ``M_t`` once per
  conceptor set (per-step mode), then one plain matmul per call; about as fast as ``addmm`` or
  slightly faster (tens of µs at d = 128, within the machine's noise; ``reports/kernels/``).
- :class:`LowRankGate` / :func:`conceptor_gate_lowrank` — ``h' = (1−β) h + β (h U) diag(μ) Uᵀ`` with
  the top eigenpairs of C (COAST's C_steer has effective rank ≈ 1 % of d): O(d·r) instead of O(d²);
  equal to the dense gate to ≤ 1e-6 relative when U covers every eigenvalue above the cutoff.
- :func:`fold_gate_into_linear` — ``W' = W M`` for a site that feeds *only* one linear layer
  (``y = W (M h) + b``); a residual stream also feeds norms and adds, so usually it cannot fold.

On a GPU (the VLA): COAST gates an ``expert.layer{i}`` output, the action-token residual stream, which feeds
the next layer's LayerNorm *and* its residual add (or the final norm), so no linear layer can absorb ``M``
exactly. What costs time there is not the ``(B·H, d) × (d, d)`` GEMM (a few µs) but the per-call Python of
the hook/wrapper and its launch; so the VLA's CUDA-graph path captures a gate whose edit is marked
:func:`mark_graph_safe` (a pure function of the value and the ``denoise_step`` annotation) *inside* the graph
of the whole chunk — one captured GEMM per denoising step, no Python per call
(``latentstack.policies.vla.cuda_graph_vla``; its cost is measured by ``benchmarks/gpu.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = [
    "ConceptorGate",
    "LowRankGate",
    "apply_gate",
    "conceptor_gate",
    "conceptor_gate_lowrank",
    "conceptor_gate_reference",
    "fold_gate_into_linear",
    "gate_matrix",
    "is_graph_safe",
    "lowrank_factors",
    "mark_graph_safe",
]


def mark_graph_safe(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Declare an Intervention edit capturable in a CUDA graph: its result depends only on the value and the
    ``denoise_step`` annotation (the same at every replay), never on ``step``, ``call_index`` or host-side
    state, and after its first call it makes no host-to-device copy or host synchronisation. Returns ``fn``
    (usable as a decorator)."""
    fn.graph_safe = True  # type: ignore[attr-defined]
    return fn


def is_graph_safe(fn: Callable[..., Any]) -> bool:
    """True if ``fn`` was marked with :func:`mark_graph_safe`."""
    return bool(getattr(fn, "graph_safe", False))


def _beta_value(beta: float | torch.Tensor) -> float:
    return float(beta.item()) if isinstance(beta, torch.Tensor) else float(beta)


def gate_matrix(C: torch.Tensor, beta: float | torch.Tensor) -> torch.Tensor:
    """``M = (1 − β) I + β C`` (d × d)."""
    b = _beta_value(beta)
    eye = torch.eye(C.shape[-1], dtype=C.dtype, device=C.device)
    return (1.0 - b) * eye + b * C


def conceptor_gate(h: torch.Tensor, C: torch.Tensor, beta: float | torch.Tensor) -> torch.Tensor:
    """Apply ``h Mᵀ`` over the last dim of ``h [..., d]``; β = 0 returns ``h`` unchanged (same object)."""
    b = _beta_value(beta)
    if b == 0.0:
        return h
    d = h.shape[-1]
    if C.shape != (d, d):
        raise ValueError(f"C must be [{d}, {d}], got {tuple(C.shape)}")
    h2 = h.reshape(-1, d)
    Ct = C.to(h.dtype).t()
    if b == 1.0:
        return (h2 @ Ct).reshape(h.shape)
    return torch.addmm(h2, h2, Ct, beta=1.0 - b, alpha=b).reshape(h.shape)


def apply_gate(h: torch.Tensor, M: torch.Tensor | None) -> torch.Tensor:
    """``h Mᵀ`` with a precomputed M; ``M is None`` means the identity (returns ``h``)."""
    if M is None:
        return h
    return h @ M.to(h.dtype).t()


class ConceptorGate(nn.Module):
    """A gate with ``M`` precomputed once (a buffer); β = 0 stores no matrix and returns ``h`` itself."""

    M: torch.Tensor | None

    def __init__(self, C: torch.Tensor, beta: float | torch.Tensor) -> None:
        super().__init__()
        self.beta = _beta_value(beta)
        self.register_buffer("M", None if self.beta == 0.0 else gate_matrix(C, self.beta))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``h Mᵀ`` (or ``h`` unchanged at β = 0)."""
        return apply_gate(h, self.M)


def fold_gate_into_linear(linear: nn.Linear, M: torch.Tensor) -> nn.Linear:
    """A copy of ``linear`` computing ``linear(h Mᵀ)``: ``W' = W M``, bias unchanged."""
    out = nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None,
                    device=linear.weight.device, dtype=linear.weight.dtype)
    with torch.no_grad():
        out.weight.copy_(linear.weight @ M.to(linear.weight.dtype))
        if linear.bias is not None:
            out.bias.copy_(linear.bias)
    return out


def lowrank_factors(C: torch.Tensor, cutoff: float = 1e-6, rank: int | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Top eigenpairs ``(U [d, r], μ [r])`` of a symmetric C: every eigenvalue > ``cutoff`` (or the top ``rank``).

    Computed in float64 (``eigh``) and returned in C's dtype. C must be symmetric — the ``repo`` AND
    preset is not (coast.md D3), so it has no exact low-rank eigen form and is refused.
    """
    if C.ndim != 2 or C.shape[0] != C.shape[1]:
        raise ValueError(f"C must be square [d, d], got {tuple(C.shape)}")
    C64 = C.detach().to(torch.float64)
    asym = float((C64 - C64.T).abs().max())
    if asym > 1e-5 * max(1.0, float(C64.abs().max())):
        raise ValueError(f"low-rank gate needs a symmetric C (max |C − Cᵀ| = {asym:.3g})")
    w, V = torch.linalg.eigh(0.5 * (C64 + C64.T))
    order = torch.argsort(w, descending=True)
    w, V = w[order], V[:, order]
    r = int((w.abs() > cutoff).sum()) if rank is None else int(rank)
    if not 0 <= r <= C.shape[0]:
        raise ValueError(f"rank must be in [0, {C.shape[0]}], got {r}")
    return V[:, :r].to(C.dtype).contiguous(), w[:r].to(C.dtype).contiguous()


def conceptor_gate_lowrank(h: torch.Tensor, U: torch.Tensor, mu: torch.Tensor, beta: float | torch.Tensor
                           ) -> torch.Tensor:
    """``(1−β) h + β ((h U) ⊙ μ) Uᵀ`` over the last dim; β = 0 returns ``h`` itself."""
    b = _beta_value(beta)
    if b == 0.0:
        return h
    d = h.shape[-1]
    if U.ndim != 2 or U.shape[0] != d or mu.shape != (U.shape[1],):
        raise ValueError(f"U must be [{d}, r] and mu [r], got {tuple(U.shape)} and {tuple(mu.shape)}")
    h2 = h.reshape(-1, d)
    U = U.to(h.dtype)
    coeff = (h2 @ U) * mu.to(h.dtype)  # [N, r]
    return torch.addmm(h2, coeff, U.t(), beta=1.0 - b, alpha=b).reshape(h.shape)


class LowRankGate(nn.Module):
    """The gate from the top eigenpairs of C (buffers ``U``, ``mu``); β = 0 returns ``h`` itself."""

    def __init__(self, C: torch.Tensor, beta: float | torch.Tensor, cutoff: float = 1e-6,
                 rank: int | None = None) -> None:
        super().__init__()
        self.beta = _beta_value(beta)
        U, mu = lowrank_factors(C, cutoff, rank)
        self.register_buffer("U", U)
        self.register_buffer("mu", mu)

    @property
    def rank(self) -> int:
        return int(self.U.shape[1])

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return conceptor_gate_lowrank(h, self.U, self.mu, self.beta)


def conceptor_gate_reference(h: torch.Tensor, C: torch.Tensor, beta: float | torch.Tensor) -> torch.Tensor:
    """The equation as written: ``h + β (h Cᵀ − h)`` (equal to ``h Mᵀ``; C is symmetric in COAST)."""
    b = _beta_value(beta)
    return h + b * (h @ C.to(h.dtype).t() - h)


def _gate_precomputed(h: torch.Tensor, C: torch.Tensor, beta: float | torch.Tensor) -> torch.Tensor:
    b = _beta_value(beta)
    return h if b == 0.0 else apply_gate(h, gate_matrix(C, b))


def _gate_lowrank_full(h: torch.Tensor, C: torch.Tensor, beta: float | torch.Tensor) -> torch.Tensor:
    """Dispatcher signature ``(h, C, β)``: factorises C on every call (tests/benchmarks; cache a LowRankGate for use)."""
    if _beta_value(beta) == 0.0:
        return h
    U, mu = lowrank_factors(C)
    return conceptor_gate_lowrank(h, U, mu, beta)


def _register() -> None:
    from .dispatch import register, set_preference

    register("conceptor_gate", "reference", conceptor_gate_reference, note="h + beta (h C^T - h)")
    register("conceptor_gate", "addmm", conceptor_gate, note="one addmm, no M materialised")
    register("conceptor_gate", "matrix", _gate_precomputed, note="build M then h M^T")
    register("conceptor_gate", "lowrank", _gate_lowrank_full, note="eigh + (1-b) h + b (hU) diag(mu) U^T")
    set_preference("conceptor_gate", "cpu", ["addmm"])
    set_preference("conceptor_gate", "cuda", ["addmm"])


_register()
