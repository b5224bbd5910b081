"""conceptor_gate: h ← h Mᵀ, M = (1−β)I + βC; β = 0 is an exact no-op (kernels.md §4)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from latentstack.kernels import ConceptorGate, apply_gate, conceptor_gate, fold_gate_into_linear, gate_matrix
from latentstack.kernels.conceptor import conceptor_gate_reference


def _conceptor(d: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """C = R (R + α⁻² I)⁻¹ of a random correlation R: symmetric, eigenvalues in [0, 1)."""
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(200, d, generator=gen, dtype=torch.float64)
    R = X.T @ X / 200
    C = R @ torch.linalg.inv(R + torch.eye(d, dtype=torch.float64) / 4.0)
    return ((C + C.T) / 2).to(dtype)


def test_beta_zero_returns_input_unchanged():
    h = torch.randn(3, 5, 16)
    C = _conceptor(16, torch.float32)
    out = conceptor_gate(h, C, 0.0)
    assert out is h  # same tensor, no arithmetic: bit-identical by construction
    assert conceptor_gate(h, C, torch.tensor(0.0)) is h
    assert apply_gate(h, None) is h
    gate = ConceptorGate(C, 0.0)
    assert gate.M is None and gate(h) is h


@pytest.mark.parametrize("beta", [0.1, 0.5, 1.0, -0.3])
def test_matches_equation_for_symmetric_c(beta):
    h = torch.randn(4, 7, 32, dtype=torch.float64)
    C = _conceptor(32)
    assert torch.equal(C, C.T)
    ref = h + beta * (h @ C - h)  # h + β(Ch − h), row-vector form
    for out in (conceptor_gate(h, C, beta), apply_gate(h, gate_matrix(C, beta)),
                conceptor_gate_reference(h, C, beta), conceptor_gate(h, C, torch.tensor(beta, dtype=torch.float64)),
                ConceptorGate(C, beta)(h)):
        assert (out - ref).abs().max() <= 1e-12 * ref.abs().max()


def test_fold_into_consumer_linear():
    h = torch.randn(6, 24, dtype=torch.float64)
    C = _conceptor(24)
    lin = nn.Linear(24, 10, dtype=torch.float64)
    M = gate_matrix(C, 0.7)
    folded = fold_gate_into_linear(lin, M)
    assert torch.allclose(folded(h), lin(conceptor_gate(h, C, 0.7)), rtol=0, atol=1e-12)


def test_shape_check():
    with pytest.raises(ValueError):
        conceptor_gate(torch.randn(2, 8), torch.eye(4), 0.5)


def _low_rank_conceptor(d: int, r: int, seed: int = 1) -> torch.Tensor:
    """A COAST-like C_steer: rank r, eigenvalues in (0, 1), random eigenvectors."""
    gen = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    mu = torch.rand(r, generator=gen, dtype=torch.float64) * 0.9 + 0.05
    return (Q[:, :r] * mu) @ Q[:, :r].T


@pytest.mark.parametrize("beta", [0.1, 0.3, 1.0])
def test_lowrank_gate_matches_dense_when_rank_covers_spectrum(beta):
    from latentstack.kernels import LowRankGate, conceptor_gate_lowrank, lowrank_factors

    C = _low_rank_conceptor(64, 5)
    U, mu = lowrank_factors(C, cutoff=1e-9)
    assert U.shape == (64, 5) and mu.shape == (5,)  # the cutoff finds exactly the true rank
    h = torch.randn(3, 11, 64, dtype=torch.float64)
    dense = conceptor_gate(h, C, beta)
    for out in (conceptor_gate_lowrank(h, U, mu, beta), LowRankGate(C, beta, cutoff=1e-9)(h)):
        assert float((out - dense).norm() / dense.norm()) <= 1e-6
    # float32 storage (what artifacts hold) stays within 1e-6 relative too
    out32 = LowRankGate(C.float(), beta, cutoff=1e-6)(h.float())
    assert float((out32.double() - dense).norm() / dense.norm()) <= 1e-6
    # a full-rank generic conceptor: all eigenvalues kept => equals the dense gate
    Cf = _conceptor(32)
    hf = torch.randn(5, 32, dtype=torch.float64)
    assert LowRankGate(Cf, beta, cutoff=0.0).rank == 32
    lr = LowRankGate(Cf, beta, cutoff=0.0)(hf)
    assert float((lr - conceptor_gate(hf, Cf, beta)).norm() / lr.norm()) <= 1e-6


def test_lowrank_gate_truncation_is_not_exact_and_beta_zero_is_noop():
    from latentstack.kernels import LowRankGate, lowrank_factors

    C = _low_rank_conceptor(32, 6)
    h = torch.randn(8, 32, dtype=torch.float64)
    trunc = LowRankGate(C, 0.5, rank=3)(h)  # drops real eigenpairs: must differ from dense
    assert float((trunc - conceptor_gate(h, C, 0.5)).norm()) > 1e-3
    assert LowRankGate(C, 0.0)(h) is h
    with pytest.raises(ValueError, match="symmetric"):
        lowrank_factors(C + torch.triu(torch.ones(32, 32, dtype=torch.float64), 1) * 0.1)
