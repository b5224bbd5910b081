"""Conceptor algebra (Jaeger 2014, arXiv 1403.3369) in float64, as used by COAST (spec: coast.md §2).

Conventions: samples are rows of ``X (N, d)``; operators are symmetric ``(d, d)`` float64 tensors
acting on column vectors. Every function accepts a torch tensor or a numpy array and returns a
float64 torch tensor.

AND has two modes (spec §5, D3):

- ``"jaeger"`` — Jaeger's general definition, valid for singular operands:
  ``C∧B = W (Wᵀ(C† + B† − I)W)⁻¹ Wᵀ`` with ``W`` an orthonormal basis of ``range(C) ∩ range(B)``
  (the null space of ``P_N(C) + P_N(B)``). For invertible operands it equals ``(C⁻¹+B⁻¹−I)⁻¹``;
  for two projectors it is the projector onto the intersection of their ranges.
- ``"repo"`` — the released COAST code: ``A (A + B − AB)⁻¹ B`` with a 1e-8 ridge on failure. Equal to
  Jaeger's AND only when A and B commute; not symmetric in general.

The naive ``pinv(pinv(C) + pinv(B) − I)`` is *not* the general AND (wrong on projectors); it is not
offered here.
"""
from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

__all__ = [
    "NULL_TOL",
    "AndMode",
    "aperture",
    "as_f64",
    "conceptor",
    "conceptor_and",
    "conceptor_and_jaeger",
    "conceptor_and_repo",
    "conceptor_not",
    "conceptor_or",
    "containment",
    "contrastive",
    "correlation",
    "is_conceptor",
    "quota",
    "random_matched",
    "similarity",
]

AndMode = Literal["jaeger", "repo"]

#: Eigenvalues of a (symmetric) conceptor with ``|μ| ≤ NULL_TOL`` count as zero (numerical null space).
NULL_TOL = 1e-12
#: Eigenvalues of ``P_N(C) + P_N(B)`` (in [0, 2]) below this count as zero (intersection of ranges).
_INTERSECT_TOL = 1e-9
_REPO_RIDGE = 1e-8


def as_f64(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """A float64 CPU torch tensor view/copy of ``x``."""
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.asarray(x, dtype=np.float64))
    return x.detach().to(device="cpu", dtype=torch.float64)


def _sym(C: torch.Tensor) -> torch.Tensor:
    return 0.5 * (C + C.transpose(-1, -2))


def _square(C: torch.Tensor, name: str = "C") -> torch.Tensor:
    C = as_f64(C)
    if C.ndim != 2 or C.shape[0] != C.shape[1]:
        raise ValueError(f"{name} must be a square (d, d) matrix, got {tuple(C.shape)}")
    return C


def _eye(d: int) -> torch.Tensor:
    return torch.eye(d, dtype=torch.float64)


def correlation(X: torch.Tensor | np.ndarray, center: bool = False) -> torch.Tensor:
    """``R = XᵀX/N`` (Jaeger, uncentred) or ``X̃ᵀX̃/N`` with ``X̃ = X − mean(X)`` (paper text), float64."""
    X = as_f64(X)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"X must be a non-empty (N, d) matrix, got {tuple(X.shape)}")
    if center:
        X = X - X.mean(0, keepdim=True)
    return _sym(X.T @ X / X.shape[0])


def conceptor(R: torch.Tensor | np.ndarray, alpha: float) -> torch.Tensor:
    """``C(R, α) = R (R + α⁻² I)⁻¹``, computed spectrally as ``U diag(λ/(λ+α⁻²)) Uᵀ`` from ``eigh(R)``.

    Eigenvalues of R below ``NULL_TOL · max(λ_max, 1)`` (round-off, or negative) are set to 0 so the
    result is exactly PSD with eigenvalues in [0, 1). ``α = inf`` gives the projector onto range(R);
    ``α = 0`` gives 0.
    """
    R = _sym(_square(R, "R"))
    alpha = float(alpha)
    if not alpha >= 0:
        raise ValueError(f"aperture alpha must be >= 0, got {alpha}")
    lam, U = torch.linalg.eigh(R)
    cutoff = NULL_TOL * max(float(lam.abs().max()) if lam.numel() else 0.0, 1.0)
    lam = torch.where(lam > cutoff, lam, torch.zeros_like(lam))
    if math.isinf(alpha):
        mu = (lam > 0).to(torch.float64)
    elif alpha == 0.0:
        mu = torch.zeros_like(lam)
    else:
        a2 = alpha * alpha
        mu = a2 * lam / (a2 * lam + 1.0)
    return _sym((U * mu) @ U.T)


def conceptor_not(C: torch.Tensor | np.ndarray) -> torch.Tensor:
    """``¬C = I − C``."""
    C = _square(C)
    return _eye(C.shape[0]) - C


def _eig_sym(C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.linalg.eigh(_sym(C))


def _null_basis(C: torch.Tensor, tol: float) -> torch.Tensor:
    w, U = _eig_sym(C)
    return U[:, w.abs() <= tol]


def _pinv_sym(C: torch.Tensor, tol: float) -> torch.Tensor:
    w, U = _eig_sym(C)
    keep = w.abs() > tol
    inv = torch.zeros_like(w)
    inv[keep] = 1.0 / w[keep]
    return (U * inv) @ U.T


def conceptor_and_jaeger(C: torch.Tensor | np.ndarray, B: torch.Tensor | np.ndarray,
                         tol: float = NULL_TOL) -> torch.Tensor:
    """Jaeger's general AND (valid for singular operands); symmetric, commutative, associative.

    ``tol`` is the absolute eigenvalue cutoff for the numerical null spaces of C and B (and for
    their pseudo-inverses on the ranges).
    """
    C, B = _square(C, "C"), _square(B, "B")
    if C.shape != B.shape:
        raise ValueError(f"AND operands differ in shape: {tuple(C.shape)} vs {tuple(B.shape)}")
    d = C.shape[0]
    NC, NB = _null_basis(C, tol), _null_basis(B, tol)
    PN = NC @ NC.T + NB @ NB.T
    w, U = torch.linalg.eigh(_sym(PN))
    W = U[:, w <= _INTERSECT_TOL]
    if W.shape[1] == 0:
        return torch.zeros(d, d, dtype=torch.float64)
    inner = W.T @ (_pinv_sym(C, tol) + _pinv_sym(B, tol) - _eye(d)) @ W
    return _sym(W @ torch.linalg.inv(_sym(inner)) @ W.T)


def conceptor_and_repo(A: torch.Tensor | np.ndarray, B: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Released COAST code (``boolean_and``): ``A (A + B − AB)⁻¹ B``; on a singular or non-finite inverse
    it retries with ``+1e-8 I`` inside the inverse. Not symmetric unless A and B commute."""
    A, B = _square(A, "A"), _square(B, "B")
    if A.shape != B.shape:
        raise ValueError(f"AND operands differ in shape: {tuple(A.shape)} vs {tuple(B.shape)}")
    S = A + B - A @ B
    try:
        inv = torch.linalg.inv(S)
        if not torch.isfinite(inv).all():
            raise RuntimeError("non-finite inverse")
    except (RuntimeError, torch.linalg.LinAlgError):
        inv = torch.linalg.inv(S + _REPO_RIDGE * _eye(S.shape[0]))
    return A @ inv @ B


def conceptor_and(C: torch.Tensor | np.ndarray, B: torch.Tensor | np.ndarray, mode: AndMode = "jaeger") -> torch.Tensor:
    """``C ∧ B`` in the named mode (``"jaeger"`` general definition, or ``"repo"`` released code)."""
    if mode == "jaeger":
        return conceptor_and_jaeger(C, B)
    if mode == "repo":
        return conceptor_and_repo(C, B)
    raise ValueError(f"and mode must be 'jaeger' or 'repo', got {mode!r}")


def conceptor_or(C: torch.Tensor | np.ndarray, B: torch.Tensor | np.ndarray, mode: AndMode = "jaeger") -> torch.Tensor:
    """``C ∨ B = ¬(¬C ∧ ¬B)`` (de Morgan; general for the jaeger mode)."""
    return conceptor_not(conceptor_and(conceptor_not(C), conceptor_not(B), mode))


def aperture(C: torch.Tensor | np.ndarray, gamma: float) -> torch.Tensor:
    """Aperture adaptation ``φ(C, γ) = C (C + γ⁻² (I − C))⁻¹``, spectrally: ``μ ↦ μ / (μ + γ⁻²(1 − μ))``.

    ``φ(C(R, α), γ) = C(R, γα)``. Eigenvalues 0 and 1 are fixed points; ``γ = 0`` keeps only the
    eigenvalue-1 directions, ``γ = inf`` maps every positive eigenvalue to 1.
    """
    C = _square(C)
    gamma = float(gamma)
    if not gamma >= 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    mu, U = _eig_sym(C)
    mu = mu.clamp(0.0, 1.0)
    mu = torch.where(mu <= NULL_TOL, torch.zeros_like(mu), mu)
    if math.isinf(gamma):
        new = (mu > 0).to(torch.float64)
    elif gamma == 0.0:
        new = (mu >= 1.0 - NULL_TOL).to(torch.float64)
    else:
        g2 = gamma * gamma
        new = g2 * mu / (g2 * mu + (1.0 - mu))
        new = torch.nan_to_num(new, nan=0.0)
    return _sym((U * new) @ U.T)


def contrastive(C_s: torch.Tensor | np.ndarray, C_f: torch.Tensor | np.ndarray, mode: AndMode = "jaeger") -> torch.Tensor:
    """COAST's steering operator ``C_s ∧ ¬C_f``."""
    return conceptor_and(C_s, conceptor_not(C_f), mode)


def quota(C: torch.Tensor | np.ndarray) -> float:
    """``tr(C)/d`` ∈ [0, 1] for a conceptor."""
    C = _square(C)
    return float(torch.trace(C) / C.shape[0])


def similarity(C: torch.Tensor | np.ndarray, B: torch.Tensor | np.ndarray) -> float:
    """``tr(CB)/√(tr(C²) tr(B²))`` (paper Eq. 11); 0 if either operand is 0."""
    C, B = _square(C, "C"), _square(B, "B")
    den = math.sqrt(float(torch.trace(C @ C)) * float(torch.trace(B @ B)))
    return 0.0 if den == 0.0 else float(torch.trace(C @ B)) / den


def containment(C_src: torch.Tensor | np.ndarray, C_tgt: torch.Tensor | np.ndarray) -> float:
    """Cross-task failure containment ``tr(C_src C_tgt)/tr(C_src²)``; 0 if C_src is 0."""
    S, T = _square(C_src, "C_src"), _square(C_tgt, "C_tgt")
    den = float(torch.trace(S @ S))
    return 0.0 if den == 0.0 else float(torch.trace(S @ T)) / den


def random_matched(C: torch.Tensor | np.ndarray, seed: int) -> torch.Tensor:
    """Control: same eigenvalues as ``C``, Haar-random orthogonal eigenvectors from ``seed`` only."""
    C = _square(C)
    mu = torch.linalg.eigvalsh(_sym(C))
    g = torch.Generator().manual_seed(int(seed))
    Z = torch.randn(C.shape[0], C.shape[0], generator=g, dtype=torch.float64)
    Q, Rr = torch.linalg.qr(Z)
    Q = Q * torch.sign(torch.diagonal(Rr))  # Haar measure
    return _sym((Q * mu) @ Q.T)


def is_conceptor(C: torch.Tensor | np.ndarray, atol: float = 1e-8) -> bool:
    """Symmetric with eigenvalues in [0, 1] (up to ``atol``), finite."""
    C = _square(C)
    if not torch.isfinite(C).all() or (C - C.T).abs().max() > atol:
        return False
    w = torch.linalg.eigvalsh(_sym(C))
    return bool(w.min() >= -atol and w.max() <= 1 + atol)
