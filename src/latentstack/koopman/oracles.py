"""Closed-form Koopman operators used as test oracles and diagnostics (spec korr.md §9).

EDMDc (Korda & Mezić 2018), ResDMD residuals (Colbrook & Townsend 2021) and Koopa's per-window
least-squares operator. KORR itself fits (K, B) by SGD with a learned lift; these are references.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch


@dataclass(frozen=True)
class EDMDcResult:
    A: np.ndarray  # (N, N) lifted-state operator
    B: np.ndarray  # (N, m) input matrix
    C: np.ndarray | None  # (n, N) projection back to the state (None if no state given)


def edmdc(psi_x: np.ndarray, psi_y: np.ndarray, u: np.ndarray, x: np.ndarray | None = None) -> EDMDcResult:
    """``[A B] = Ψ(Y) Vᵀ (V Vᵀ)†`` with ``V = [Ψ(X); U]``; rows are samples (``psi_x``: (T, N), ``u``: (T, m)).
    ``C = argmin ‖X − C Ψ(X)‖_F`` when ``x`` (T, n) is given."""
    psi_x, psi_y, u = (np.asarray(a, dtype=np.float64) for a in (psi_x, psi_y, u))
    if psi_x.ndim != 2 or psi_x.shape != psi_y.shape or u.ndim != 2 or u.shape[0] != psi_x.shape[0]:
        raise ValueError(f"need psi_x, psi_y (T, N) and u (T, m); got {psi_x.shape}, {psi_y.shape}, {u.shape}")
    n_lift = psi_x.shape[1]
    v = np.concatenate([psi_x, u], 1).T  # (N+m, T)
    m = (psi_y.T @ v.T) @ np.linalg.pinv(v @ v.T)
    c = None
    if x is not None:
        c = np.linalg.lstsq(psi_x, np.asarray(x, dtype=np.float64), rcond=None)[0].T
    return EDMDcResult(A=m[:, :n_lift], B=m[:, n_lift:], C=c)


@dataclass(frozen=True)
class ResDMDResult:
    eigenvalues: np.ndarray  # (N,) complex
    eigenvectors: np.ndarray  # (N, N) columns g
    residuals: np.ndarray  # (N,) res(λ, g) ≥ 0


def resdmd(psi_x: np.ndarray, psi_y: np.ndarray, weights: np.ndarray | None = None) -> ResDMDResult:
    """EDMD eigenpairs of ``A g = λ G g`` with ResDMD residuals
    ``res² = gᴴ(L − λAᴴ − λ̄A + |λ|²G)g / gᴴGg`` (``G = Ψ_XᴴWΨ_X``, ``A = Ψ_XᴴWΨ_Y``, ``L = Ψ_YᴴWΨ_Y``).
    Small residual ⇒ a genuine Koopman eigenpair; large ⇒ spectral pollution."""
    psi_x = np.asarray(psi_x, dtype=np.complex128)
    psi_y = np.asarray(psi_y, dtype=np.complex128)
    t = psi_x.shape[0]
    w = np.full(t, 1.0 / t) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (t,):
        raise ValueError(f"weights must have shape ({t},), got {w.shape}")
    g_mat = psi_x.conj().T @ (w[:, None] * psi_x)
    a_mat = psi_x.conj().T @ (w[:, None] * psi_y)
    l_mat = psi_y.conj().T @ (w[:, None] * psi_y)
    lam, vecs = scipy.linalg.eig(a_mat, g_mat)
    res = np.empty(len(lam))
    for i, (lm, g) in enumerate(zip(lam, vecs.T, strict=True)):
        num = g.conj() @ (l_mat - lm * a_mat.conj().T - np.conj(lm) * a_mat + abs(lm) ** 2 * g_mat) @ g
        den = g.conj() @ g_mat @ g
        res[i] = np.sqrt(max(num.real / den.real, 0.0))
    return ResDMDResult(eigenvalues=lam, eigenvectors=vecs, residuals=res)


def koopa_operator(z: torch.Tensor) -> torch.Tensor:
    """Koopa's per-window operator: ``K = lstsq(Z[:, :-1], Z[:, 1:])`` (row convention ``z_{t+1} = z_t K``).
    ``z``: (batch, T, d) ⇒ (batch, d, d); a NaN solution falls back to the identity, as in Koopa."""
    if z.ndim != 3 or z.shape[1] < 2:
        raise ValueError(f"z must be (batch, T>=2, d), got {tuple(z.shape)}")
    # Non-finite windows would crash LAPACK: solve on zeros there and return the identity instead.
    finite = torch.isfinite(z).flatten(1).all(1)
    zs = torch.where(finite[:, None, None], z, torch.zeros_like(z))
    k = torch.linalg.lstsq(zs[:, :-1], zs[:, 1:]).solution
    eye = torch.eye(z.shape[-1], dtype=z.dtype, device=z.device).expand_as(k)
    bad = (~finite | torch.isnan(k).flatten(1).any(1))[:, None, None]
    return torch.where(bad, eye, k)


def spectrum_error(a: np.ndarray, b: np.ndarray) -> float:
    """Max distance between two spectra after optimal matching (Hungarian on |λ_i − μ_j|)."""
    from scipy.optimize import linear_sum_assignment

    la, lb = np.linalg.eigvals(a), np.linalg.eigvals(b)
    cost = np.abs(la[:, None] - lb[None, :])
    r, c = linear_sum_assignment(cost)
    return float(cost[r, c].max())


__all__ = ["EDMDcResult", "ResDMDResult", "edmdc", "koopa_operator", "resdmd", "spectrum_error"]
