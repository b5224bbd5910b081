"""Fitting on synthetic states with known subspaces (coast.md §4-5, §11 items 12-13)."""
from __future__ import annotations

import pytest
import torch

from latentstack.latent import TapRecord
from latentstack.steering import conceptors as cz
from latentstack.steering.fit import (
    PRESETS,
    FitError,
    InsufficientEpisodes,
    build_samples,
    class_correlation,
    fit_contrastive,
    fit_layers,
    get_preset,
    linear_direction,
    states_from_records,
)

D_FEAT = 12


def episodes(dirs: list[int], n_eps: int, T: int = 6, D: int = 3, S: int = 4, seed: int = 0, offset: float = 0.0,
             d: int = D_FEAT) -> list[torch.Tensor]:
    """Episodes whose states live in span(e_i, i in dirs) (+ a constant offset on the last axis)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_eps):
        h = torch.zeros(T, D, S, d)
        h[..., dirs] = torch.randn(T, D, S, len(dirs), generator=g)
        h[..., -1] += offset
        out.append(h)
    return out


def test_build_samples_shapes():
    H = torch.randn(5, 3, 4, 8)
    assert build_samples(H, "global", "mean").shape == (15, 8)
    assert build_samples(H, "per_step", "mean", step=1).shape == (5, 8)
    assert build_samples(H, "global", "flatten").shape == (60, 8)
    assert build_samples(H, "per_step", "flatten", step=2).shape == (20, 8)
    assert build_samples([H, H], "global", "mean").shape == (30, 8)
    assert build_samples(H, "global", "mean").dtype == torch.float64
    assert torch.allclose(build_samples(H, "per_step", "mean", step=1), H[:, 1].mean(1).double())
    with pytest.raises(ValueError):
        build_samples(H, "per_step", "mean", step=3)
    with pytest.raises(ValueError):
        build_samples(H, "global", "max")  # type: ignore[arg-type]


def test_states_from_records_groups_calls_and_batches():
    recs, idx = [], 0
    vals = torch.randn(2, 3, 2, 4, 8)  # 2 calls, D=3, B=2, S=4, d=8
    for c in range(2):
        for k in range(3):
            recs.append(TapRecord("s", vals[c, k], idx, {"step": c, "denoise_step": k, "call_index": idx}))
            idx += 1
    H = states_from_records(recs)
    assert H.shape == (4, 3, 4, 8)
    assert torch.equal(H[1, 2], vals[0, 2, 1]) and torch.equal(H[2, 0], vals[1, 0, 0])
    with pytest.raises(ValueError):
        states_from_records(recs[1:])
    with pytest.raises(ValueError):
        states_from_records(recs[:-1])


def test_presets():
    p, r = PRESETS["paper"], PRESETS["repo"]
    assert (p.pool, p.center, p.and_mode, p.per_step_alpha, p.min_per_class) == ("mean", True, "jaeger", None, 3)
    assert (r.pool, r.center, r.and_mode, r.per_step_alpha, r.min_per_class) == ("flatten", False, "repo", 1.0, 2)
    assert get_preset("paper", center=False).name == "paper+custom"
    with pytest.raises(ValueError):
        get_preset("nope")


@pytest.mark.parametrize("preset", ["paper", "repo"])
def test_known_subspaces_global(preset):
    # success in span(e0, e1, e2), failure in span(e2, e3): C_steer ≈ projector on e0, e1
    s, f = episodes([0, 1, 2], 4, seed=1), episodes([2, 3], 4, seed=2)
    fits = fit_contrastive(s, f, [10.0, 0.5], preset=preset)
    K = fits[10.0].C.double()
    diag = torch.diagonal(K)
    assert diag[0] > 0.9 and diag[1] > 0.9
    assert diag[2] < 0.1 and diag[3].abs() < 1e-6
    assert float(K[4:, :].abs().max()) < 1e-6
    assert fits[10.0].C.dtype == torch.float32 and torch.isfinite(fits[10.0].C).all()
    assert float(torch.diagonal(fits[0.5].C)[0]) < float(diag[0])  # smaller aperture, smaller gain
    assert fits[10.0].direction.shape == (D_FEAT,)
    if preset == "paper":
        assert cz.is_conceptor(K, 1e-6)
        assert fits[10.0].n_samples == {"success": 4 * 6 * 3, "failure": 4 * 6 * 3}
    else:
        assert fits[10.0].n_samples == {"success": 4 * 6 * 3 * 4, "failure": 4 * 6 * 3 * 4}
    d = fits[10.0].diagnostics
    assert 0 <= d["quota"] <= 1 and 0 <= d["similarity"] <= 1


def test_per_step_uses_step_specific_subspaces():
    D = 3
    s = []
    g = torch.Generator().manual_seed(3)
    for _ in range(4):
        h = torch.zeros(8, D, 4, D_FEAT)
        for t in range(D):  # success at step t lives on e_t (+ e_5 shared with failure)
            h[:, t, :, [t, 5]] = torch.randn(8, 4, 2, generator=g)
        s.append(h)
    f = episodes([5, 6], 4, T=8, D=D, seed=4)
    fits = fit_contrastive(s, f, [10.0], preset="paper", strategy="per_step")
    K = fits[10.0].C.double()
    assert K.shape == (D, D_FEAT, D_FEAT)
    for t in range(D):
        assert K[t, t, t] > 0.9
        for u in range(D):
            if u != t:
                assert K[t, u, u].abs() < 1e-6
        assert K[t, 5, 5] < 0.1
        assert cz.is_conceptor(K[t], 1e-6)
    assert fits[10.0].n_samples["success"] == 4 * 8  # pooled per-step rows
    assert fits[10.0].diagnostics["small_n"] is False


def test_repo_per_step_alpha_fixed_at_one():
    s, f = episodes([0, 1], 2, seed=5), episodes([1, 2], 2, seed=6)
    fits = fit_contrastive(s, f, [0.1, 10.0], preset="repo", strategy="per_step")
    assert list(fits) == [1.0] and fits[1.0].C.shape == (3, D_FEAT, D_FEAT)
    assert list(fit_contrastive(s, f, [0.1, 10.0], preset="repo", strategy="global")) == [0.1, 10.0]


def test_centering_invariance():
    s, f = episodes([0, 1, 2], 3, seed=7), episodes([2, 3], 3, seed=8)
    s2 = [h + torch.linspace(-1, 1, D_FEAT) for h in s]
    X, X2 = build_samples(s, "global", "mean"), build_samples(s2, "global", "mean")
    paper, repo = PRESETS["paper"], PRESETS["repo"]
    Cc, Cc2 = (cz.conceptor(class_correlation(x, paper), 1.0) for x in (X, X2))
    assert float((Cc - Cc2).abs().max()) < 1e-8
    Cu, Cu2 = (cz.conceptor(class_correlation(x, repo), 1.0) for x in (X, X2))
    assert float((Cu - Cu2).abs().max()) > 1e-2
    a = fit_contrastive(s, f, [1.0], "paper")[1.0].C
    b = fit_contrastive(s2, [h + torch.linspace(-1, 1, D_FEAT) for h in f], [1.0], "paper")[1.0].C
    assert float((a - b).abs().max()) < 1e-5


def test_min_per_class():
    s, f = episodes([0], 2, seed=9), episodes([1], 2, seed=10)
    with pytest.raises(InsufficientEpisodes):
        fit_contrastive(s, f, [1.0], "paper")
    fit_contrastive(s, f, [1.0], "repo")  # repo needs only 2
    with pytest.raises(InsufficientEpisodes):
        fit_contrastive(s[:1], f, [1.0], "repo")


def test_small_n_per_step_is_psd_or_raises():
    # pooled per-step with N = 3 episodes x 2 calls = 6 rows < d = 12 (D6)
    g = torch.Generator().manual_seed(11)
    s = [torch.randn(2, 3, 4, D_FEAT, generator=g) for _ in range(3)]
    f = [torch.randn(2, 3, 4, D_FEAT, generator=g) for _ in range(3)]
    fit = fit_contrastive(s, f, [0.5, 10.0], "paper", "per_step")
    for a in (0.5, 10.0):
        K = fit[a].C.double()
        assert torch.isfinite(K).all() and fit[a].diagnostics["small_n"] is True
        for t in range(3):
            assert cz.is_conceptor(K[t], 1e-6)
            # supported on the (centred) success span: rank <= N - 1 = 5
            assert int((torch.linalg.eigvalsh(K[t]) > 1e-6).sum()) <= 5
    with pytest.raises(FitError):
        fit_contrastive(s, f, [1.0], get_preset("paper", small_n="raise"), "per_step")


def test_linear_direction():
    Xs, Xf = torch.zeros(4, 3, dtype=torch.float64), torch.zeros(5, 3, dtype=torch.float64)
    Xs[:, 0], Xf[:, 0] = 2.0, -1.0
    assert torch.allclose(linear_direction(Xs, Xf), torch.tensor([1.0, 0, 0], dtype=torch.float64))
    assert torch.equal(linear_direction(Xs, Xs.clone()), torch.zeros(3, dtype=torch.float64))


def test_fit_layers_keys():
    s = {"a": episodes([0, 1], 3, seed=12), "b": episodes([2, 3], 3, seed=13)}
    f = {"a": episodes([1, 4], 3, seed=14), "b": episodes([3, 5], 3, seed=15)}
    fits = fit_layers(s, f, [1.0, 2.0], "paper")
    assert set(fits) == {(site, st, a) for site in "ab" for st in ("global", "per_step") for a in (1.0, 2.0)}
    assert fits[("b", "per_step", 2.0)].site == "b"
