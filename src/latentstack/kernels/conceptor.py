"""Conceptor gate ``h ← h Mᵀ`` with ``M = (1 − β) I + β C`` on the last dimension (COAST).

Why a kernel: the gate runs at a latent site on every policy call (every denoising step), so it
must cost one GEMM and nothing else, and β = 0 must be an exact no-op. Paths:

- :func:`conceptor_gate` — ``addmm(h, h, Cᵀ, beta=1−β, alpha=β)``: one BLAS call computing
  ``(1−β) h + β h Cᵀ`` without materialising M; β = 0 returns ``h`` itself (same tensor, no
  arithmetic), so it is bit-identical.
- :func:`gate_matrix` + :func:`apply_gate` / :class:`ConceptorGate` — precompute ``M_t`` once per
  conceptor set (per-step mode), then one plain matmul per call; about as fast as ``addmm`` or
  slightly faster (tens of µs at d = 128, within the machine's noise; ``reports/kernels/``).
- :func:`fold_gate_into_linear` — ``W' = W M`` for a site that feeds *only* one linear layer
  (``y = W (M h) + b``); a residual stream also feeds norms and adds, so usually it cannot fold.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "ConceptorGate",
    "apply_gate",
    "conceptor_gate",
    "conceptor_gate_reference",
    "fold_gate_into_linear",
    "gate_matrix",
]


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


def conceptor_gate_reference(h: torch.Tensor, C: torch.Tensor, beta: float | torch.Tensor) -> torch.Tensor:
    """The equation as written: ``h + β (h Cᵀ − h)`` (equal to ``h Mᵀ``; C is symmetric in COAST)."""
    b = _beta_value(beta)
    return h + b * (h @ C.to(h.dtype).t() - h)


def _gate_precomputed(h: torch.Tensor, C: torch.Tensor, beta: float | torch.Tensor) -> torch.Tensor:
    b = _beta_value(beta)
    return h if b == 0.0 else apply_gate(h, gate_matrix(C, b))


def _register() -> None:
    from .dispatch import register, set_preference

    register("conceptor_gate", "reference", conceptor_gate_reference, note="h + beta (h C^T - h)")
    register("conceptor_gate", "addmm", conceptor_gate, note="one addmm, no M materialised")
    register("conceptor_gate", "matrix", _gate_precomputed, note="build M then h M^T")
    set_preference("conceptor_gate", "cpu", ["addmm"])
    set_preference("conceptor_gate", "cuda", ["addmm"])


_register()
