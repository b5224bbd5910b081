"""Koopman mathematics oracles (spec korr.md §12 B.11, 12, 14–17)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from latentstack.koopman.modeling_korr import KoopmanOperator
from latentstack.koopman.oracles import edmdc, koopa_operator, resdmd, spectrum_error


def _linear_system(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n=4, m=2; eigenvalues 0.95, 0.8, 0.9 ± 0.1i under a random similarity."""
    lam = np.array([[0.95, 0, 0, 0], [0, 0.8, 0, 0], [0, 0, 0.9, 0.1], [0, 0, -0.1, 0.9]])
    s = rng.normal(size=(4, 4))
    return s @ lam @ np.linalg.inv(s), rng.normal(size=(4, 2))


def test_edmdc_closed_form_recovers_linear_system() -> None:
    rng = np.random.default_rng(0)
    a, b = _linear_system(rng)
    x, u = rng.normal(size=(5000, 4)), rng.normal(size=(5000, 2))
    y = x @ a.T + u @ b.T
    r = edmdc(x, y, u, x)  # identity lift
    assert np.abs(r.A - a).max() < 1e-10
    assert np.abs(r.B - b).max() < 1e-10
    assert spectrum_error(r.A, a) < 1e-10
    assert np.abs(r.C - np.eye(4)).max() < 1e-10
    with pytest.raises(ValueError):
        edmdc(x, y[:10], u)


def test_gradient_trained_K_B_recover_linear_system() -> None:
    rng = np.random.default_rng(0)
    a, b = _linear_system(rng)
    x, u = rng.normal(size=(1000, 4)), rng.normal(size=(1000, 2))
    y = x @ a.T + u @ b.T
    torch.manual_seed(0)
    op = KoopmanOperator(4, 2, k_init="normal").double()
    xt, ut, yt = (torch.from_numpy(v) for v in (x, u, y))
    opt = torch.optim.Adam(op.parameters(), lr=1e-2)
    for _ in range(3000):  # full batch, fixed identity lift
        opt.zero_grad()
        loss = torch.mean((op(xt, ut) - yt) ** 2)
        loss.backward()
        opt.step()
    k, bb = op.K.detach().numpy(), op.B.detach().numpy()
    assert np.abs(k - a).max() < 1e-3
    assert np.abs(bb - b).max() < 1e-3
    assert spectrum_error(k, a) < 1e-3


def test_resdmd_filters_spurious_eigenvalues_of_tanh_dictionary() -> None:
    rng = np.random.default_rng(0)
    a, _ = _linear_system(rng)
    w, bias = rng.normal(size=(20, 4)), rng.normal(size=20)
    x = rng.normal(size=(20000, 4))
    y = x @ a.T

    def psi(v: np.ndarray) -> np.ndarray:  # 24 functions: the state and 20 random tanh features
        return np.concatenate([v, np.tanh(v @ w.T + bias)], 1)

    res = resdmd(psi(x), psi(y))
    true = np.linalg.eigvals(a)
    is_true = np.abs(res.eigenvalues[:, None] - true[None]).min(1) < 1e-6
    assert is_true.sum() == 4
    assert res.residuals[is_true].max() < 1e-6
    assert res.residuals[~is_true].min() > 1e-2
    # EDMD alone reports a spurious unstable eigenvalue of a stable system; ResDMD rejects it.
    spurious = ~is_true & (np.abs(res.eigenvalues) > 1.0)
    assert spurious.any() and (res.residuals[spurious] > 1e-2).all()


def test_multistep_identity_and_error_bound() -> None:
    torch.manual_seed(0)
    op = KoopmanOperator(6, 2).double()
    z0, us = torch.randn(3, 6, dtype=torch.float64), torch.randn(5, 3, 2, dtype=torch.float64)
    roll = op.rollout(z0, us)
    k, b = op.K.detach(), op.B.detach()
    for kk in range(1, 6):
        ref = z0 @ torch.linalg.matrix_power(k, kk).T + sum(
            us[j] @ b.T @ torch.linalg.matrix_power(k, kk - 1 - j).T for j in range(kk))
        assert torch.allclose(roll[kk - 1], ref, rtol=1e-5, atol=1e-8 * float(ref.abs().max()))
    # one-step errors δ_j accumulate as e_k = Σ K^{k-1-j} δ_j, bounded by Σ ‖K‖₂^j max‖δ‖
    deltas = 1e-3 * torch.randn(5, 6, dtype=torch.float64)
    e = torch.zeros(6, dtype=torch.float64)
    for j in range(5):
        e = e @ k.T + deltas[j]
    exact = sum(deltas[j] @ torch.linalg.matrix_power(k, 4 - j).T for j in range(5))
    assert torch.allclose(e, exact, rtol=1e-9, atol=1e-12)
    n2 = float(torch.linalg.matrix_norm(k, ord=2))
    assert float(e.norm()) <= sum(n2**j for j in range(5)) * float(deltas.norm(dim=1).max()) + 1e-6


@pytest.mark.parametrize("k_init,expect", [("orthogonal", None), ("identity", 1.0)])
def test_k_init_spectra(k_init: str, expect: float | None) -> None:
    torch.manual_seed(0)
    op = KoopmanOperator(64, 3, k_init=k_init)
    mods = torch.linalg.eigvals(op.K.detach().double()).abs()
    assert torch.allclose(mods, torch.ones_like(mods), atol=1e-5)
    if expect is not None:
        assert float(mods.max()) == pytest.approx(expect)


def test_koopa_per_window_operator() -> None:
    torch.manual_seed(0)
    k_true = torch.linalg.qr(torch.randn(2, 5, 5, dtype=torch.float64))[0] * 0.97
    z = [torch.randn(2, 1, 5, dtype=torch.float64)]
    for _ in range(20):
        z.append(z[-1] @ k_true)
    k = koopa_operator(torch.cat(z, 1))
    assert torch.allclose(k, k_true, atol=1e-6)
    bad = torch.full((1, 4, 3), float("nan"))
    assert torch.equal(koopa_operator(bad), torch.eye(3).expand(1, 3, 3))
    with pytest.raises(ValueError):
        koopa_operator(torch.zeros(3, 5))


def test_one_step_latent_loss_does_not_identify_spectrum_and_conditioning_flags_it() -> None:
    """Spec §12 B.13: a learned encoder with only the one-step latent loss fits well but the spectrum of K
    is wrong; the encoder's condition number (diagnostics.encoder_condition) flags it."""
    from latentstack.koopman.diagnostics import encoder_condition

    rng = np.random.default_rng(0)
    a, b = _linear_system(rng)
    x, u = rng.normal(size=(1000, 4)), rng.normal(size=(1000, 2))
    xt, ut, yt = (torch.from_numpy(v) for v in (x, u, x @ a.T + u @ b.T))
    torch.manual_seed(0)
    p, k, bh = (torch.nn.Parameter(torch.randn(*s, dtype=torch.float64)) for s in ((4, 4), (4, 4), (4, 2)))
    opt = torch.optim.Adam([p, k, bh], lr=1e-2)
    for _ in range(3000):
        zx, zy = xt @ p.T, yt @ p.T
        loss = ((zx @ k.T + ut @ bh.T - zy) ** 2).mean() / zy.var(0).mean()  # variance-normalized
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 1e-4
    assert spectrum_error(k.detach().numpy(), a) > 0.1
    assert encoder_condition(p) > 100
