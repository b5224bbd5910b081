"""Residual inside a Policy: base chunk queue, residual every step; node adapter."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from latentstack.koopman.artifact import save_residual
from latentstack.koopman.base_policy import (
    ChunkBaseConfig,
    ChunkBasePolicy,
    MinMaxNormalizer,
    load_chunk_base,
    save_chunk_base,
    train_chunk_base,
)
from latentstack.koopman.configuration_korr import residual_config
from latentstack.koopman.modeling_korr import make_residual
from latentstack.koopman.node_adapter import residual_adapter
from latentstack.koopman.residual_policy import ResidualPolicy
from latentstack.latent import Tap
from latentstack.policies.protocol import Policy


def _base(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    obs = [rng.normal(size=(12, 6)).astype(np.float32) for _ in range(3)]
    act = [rng.uniform(-2, 3, size=(12, 2)).astype(np.float32) for _ in range(3)]
    model, losses = train_chunk_base(obs, act, ChunkBaseConfig(obs_dim=6, action_dim=2, horizon=4, n_action_steps=2, hidden_dim=16,
                                                               num_layers=1), steps=20, progress=False)
    assert losses[-1] < losses[0]
    return save_chunk_base(model, tmp_path / "base", meta={"demos": 3})


def _episode(policy: Policy, n: int = 7) -> list[np.ndarray]:
    policy.reset(0)
    rng = np.random.default_rng(1)
    return [policy.select_action({"state": rng.normal(size=6).astype(np.float32)}) for _ in range(n)]


def test_zero_residual_and_disabled_are_bit_identical_to_base(tmp_path: Path) -> None:
    base_dir = _base(tmp_path)
    base = ChunkBasePolicy(load_chunk_base(base_dir)[0])
    ref = _episode(base)
    torch.manual_seed(0)
    korr = make_residual(residual_config(6, 2, "korr", hidden_dim=16, lift_dim=8))
    m = load_chunk_base(base_dir)[0]
    pol = ResidualPolicy(ChunkBasePolicy(m), korr, m.obs_norm, m.action_norm)
    assert isinstance(pol, Policy)
    assert all(np.array_equal(a, b) for a, b in zip(_episode(pol), ref, strict=True))
    # a trained (non-zero) residual changes every step, even mid-chunk; enabled=False restores the base
    with torch.no_grad():
        korr.head[-1].weight.normal_()
        korr.lift[-1].weight.normal_()
    moved = _episode(pol)
    assert all(not np.array_equal(a, b) for a, b in zip(moved, ref, strict=True))
    pol.enabled = False
    assert all(np.array_equal(a, b) for a, b in zip(_episode(pol), ref, strict=True))


def test_residual_matches_normalized_formula_and_taps(tmp_path: Path) -> None:
    m = load_chunk_base(_base(tmp_path))[0]
    torch.manual_seed(0)
    korr = make_residual(residual_config(6, 2, "korr", hidden_dim=16, lift_dim=8, action_head_std=1.0))
    pol = ResidualPolicy(ChunkBasePolicy(m), korr, m.obs_norm, m.action_norm)
    base = ChunkBasePolicy(m)
    base.reset(0)
    pol.reset(0)
    s = np.linspace(-1, 1, 6).astype(np.float32)
    a_w = base.select_action({"state": s})
    with Tap(pol, ["residual.koopman.z", "residual.koopman.z_next"]) as tap:
        out = pol.select_action({"state": s})
    o, a_b = m.obs_norm(torch.from_numpy(s)), m.action_norm(torch.from_numpy(a_w))
    ref = m.action_norm.inverse(korr.act(o[None], a_b[None])[0]).detach().numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    assert tap.stack("residual.koopman.z").shape[-1] == 8


def test_node_adapter(tmp_path: Path) -> None:
    base_dir = _base(tmp_path)
    m = load_chunk_base(base_dir)[0]
    base = ChunkBasePolicy(m)
    assert residual_adapter(base, SimpleNamespace(residual="")) is base
    torch.manual_seed(0)
    korr = make_residual(residual_config(6, 2, "korr", hidden_dim=16, lift_dim=8, action_head_std=1.0))
    art = save_residual(korr, tmp_path / "res", meta={"demos": 3}, source=base_dir)
    wrapped = residual_adapter(ChunkBasePolicy(m), SimpleNamespace(residual=str(art)))
    assert isinstance(wrapped, ResidualPolicy) and wrapped.enabled
    assert torch.equal(wrapped.obs_norm.low, m.obs_norm.low)
    off = residual_adapter(ChunkBasePolicy(m), SimpleNamespace(residual=str(art), residual_enabled=False))
    ref = _episode(ChunkBasePolicy(m))
    assert all(np.array_equal(a, b) for a, b in zip(_episode(off), ref, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(_episode(wrapped), ref, strict=True))


def test_minmax_normalizer_round_trip() -> None:
    x = np.array([[0.0, 5.0, 1.0], [2.0, 7.0, 1.0]], dtype=np.float32)
    n = MinMaxNormalizer.fit(x, clamp=3.0)
    y = n(torch.from_numpy(x))
    assert torch.allclose(y[:, :2], torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))
    assert torch.isfinite(y).all()  # constant column stays finite
    assert torch.allclose(n.inverse(y), torch.from_numpy(x), atol=1e-5)
    assert n(torch.tensor([100.0, 5.0, 1.0]))[0] == 3.0
