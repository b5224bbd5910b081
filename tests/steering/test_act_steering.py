"""COAST steering on a LeRobot policy: the shipped ACT through its adapter's latent sites (ACT: D = 1)."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from latentstack.latent import Tap, assert_model_unchanged, module_snapshot
from latentstack.steering import conceptors as cz
from latentstack.steering.collect import collect_rollouts, split_by_label
from latentstack.steering.fit import fit_contrastive
from latentstack.steering.intervention import SteeringArtifact, steer
from latentstack.steering.node_adapter import SteerablePolicy

from .test_collect_vla import FakeEnv as VlaFakeEnv

SHIPPED = Path(__file__).resolve().parents[2] / "policies" / "act_metaworld_mt6"


@pytest.fixture(scope="module")
def act():
    from latentstack.policies.factory import make_policy

    if not SHIPPED.exists():
        pytest.skip("shipped ACT checkpoint not present")
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # batch-1 ResNet18: 2 threads on the shared 2-core box oversubscribe (~30x slower)
    yield make_policy(str(SHIPPED))
    torch.set_num_threads(n)


def _obs(seed: int) -> dict:
    g = np.random.default_rng(seed)
    return {"image": g.integers(0, 256, (64, 64, 3), dtype=np.uint8),
            "state": (g.standard_normal(4) * 0.1 + [0.0, 0.6, 0.2, 0.5]).astype(np.float32),
            "instruction": "", "task": "t"}


def _chunk(act, seed: int = 0) -> np.ndarray:
    return act.predict_action_chunk(_obs(seed))


def _last(act) -> str:
    return f"decoder.layer{act.config.n_decoder_layers - 1}"


def test_tap_records_batch_first_decoder_states(act):
    with Tap(act, [_last(act)]) as tap:
        _chunk(act)
    (rec,) = tap.records[_last(act)]
    assert rec.value.shape == (1, act.config.chunk_size, act.config.dim_model)
    assert rec.meta["denoise_step"] == 0


def test_beta0_exact_identity_any_beta(act):
    d = act.config.dim_model
    snap = module_snapshot(act)
    ref = _chunk(act)
    for site, beta in (("decoder.layer0", 0.3), (_last(act), 1.0)):
        with steer(act, site, torch.rand(d, d), beta=0.0):
            assert np.array_equal(_chunk(act), ref)  # short-circuit: bit-identical
        with steer(act, site, torch.eye(d), beta=beta):
            np.testing.assert_allclose(_chunk(act), ref, rtol=1e-6, atol=1e-6)
    assert_model_unchanged(act, snap)
    assert np.array_equal(_chunk(act), ref)


def test_shrinkage_scales_site_and_changes_actions(act):
    d = act.config.dim_model
    snap = module_snapshot(act)
    ref = _chunk(act)
    with Tap(act, ["decoder.layer0"]) as before:
        _chunk(act)
    h = before.records["decoder.layer0"][0].value
    beta = 0.5
    # Tap entered inside the steering: records the steered value
    with steer(act, "decoder.layer0", torch.zeros(d, d), beta=beta), Tap(act, ["decoder.layer0"]) as after:
        steered = _chunk(act)
    torch.testing.assert_close(after.records["decoder.layer0"][0].value, (1 - beta) * h, rtol=1e-6, atol=1e-7)
    assert np.abs(steered - ref).max() > 1e-3  # layer 0 feeds decoder layer 1: the shrink matters
    with steer(act, "decoder.out", torch.zeros(d, d), beta=beta):
        assert np.abs(_chunk(act) - ref).max() > 1e-3  # action head is affine in decoder.out
    assert_model_unchanged(act, snap)
    assert np.array_equal(_chunk(act), ref)


def test_shrinkage_at_last_decoder_layer_is_absorbed_by_final_layernorm(act):
    """A measured property of ACT: decoder.layer{last} -> LayerNorm -> action_head; LayerNorm is
    scale-invariant, so h -> (1-β) h there barely moves the actions (only through LayerNorm's eps)."""
    d = act.config.dim_model
    ref = _chunk(act)
    with steer(act, _last(act), torch.zeros(d, d), beta=0.5):
        out = _chunk(act)
    scale = np.abs(ref).max()
    assert np.abs(out - ref).max() < 1e-3 * max(scale, 1.0)
    with steer(act, "decoder.layer0", torch.zeros(d, d), beta=0.5):
        moved = np.abs(_chunk(act) - ref).max()
    assert moved > 100 * np.abs(out - ref).max()


class FakeEnv(VlaFakeEnv):
    """The VLA tests' fake env (success iff the seed is even), with states near the demos' range (ACT
    normalises state by the demo mean/std) and a check of every action ACT emits."""

    def _obs(self):
        return {"image": self.g.integers(0, 256, (self.size, self.size, 3), dtype=np.uint8),
                "state": (self.g.standard_normal(4) * 0.1 + [0.0, 0.6, 0.2, 0.5]).astype(np.float32),
                "instruction": self.instruction}

    def step(self, action):
        assert action.shape == (4,) and np.isfinite(action).all()
        return super().step(action)


def test_fit_conceptor_from_act_taps_and_steer(act):
    site = _last(act)
    suite = SimpleNamespace(name="fake", image_size=64, camera="x",
                            tasks=[SimpleNamespace(name="t0", instruction="", max_episode_steps=8)],
                            seeds={"fit": range(100), "select": range(100, 200), "test": range(200, 300)})
    rollouts = collect_rollouts(suite, act, [site, "decoder.layer0"], split="fit", n=6, env_factory=FakeEnv)
    d, S = act.config.dim_model, act.config.chunk_size
    for r in rollouts:
        assert r.states[site].shape == (1, 1, S, d)  # 8 steps = one 8-action chunk = 1 call; D = 1
    s, f = split_by_label(rollouts, site)
    assert len(s) == 3 and len(f) == 3  # the paper preset's minimum per class
    for layer in (site, "decoder.layer0"):
        s, f = split_by_label(rollouts, layer)
        fit = fit_contrastive(s, f, [1.0], "paper", "global", site=layer)[1.0]
        C = fit.C.double()
        assert C.shape == (d, d) and cz.is_conceptor(C, 1e-5)
        assert 0 < torch.linalg.eigvalsh(C).max() <= 1 + 1e-6
        ref = _chunk(act, 5)
        snap = module_snapshot(act)
        beta = 0.5
        with Tap(act, [layer]) as before:
            _chunk(act, 5)
        with steer(act, layer, fit.C, beta=beta), Tap(act, [layer]) as after:
            out = _chunk(act, 5)
        h = before.records[layer][0].value.double()
        M = (1 - beta) * torch.eye(d, dtype=torch.float64) + beta * C
        torch.testing.assert_close(after.records[layer][0].value.double(), h @ M.T, rtol=1e-4, atol=1e-5)
        assert np.isfinite(out).all() and out.shape == ref.shape
        if layer == "decoder.layer0":
            assert np.abs(out - ref).max() > 1e-4
        assert_model_unchanged(act, snap)


def test_per_step_conceptor_for_another_step_count_is_refused_at_attach(act, tmp_path):
    """Issue 14 finding 10 (ACT path): ACT makes one call per chunk (``denoise_step=0``, D = 1). A 10-step per-step
    conceptor used to attach to it and steer every chunk with C_0 alone; like the VLA path, attach now refuses it."""
    d, site = act.config.dim_model, "decoder.layer0"
    card = {"site": site, "beta": 0.5, "alpha": 1.0, "strategy": "per_step"}
    C = torch.stack([0.1 * (t + 1) * torch.eye(d) for t in range(10)])  # valid conceptors (eigenvalues 0.1 .. 1)
    SteeringArtifact(C, card).save(tmp_path / "ten")
    art = SteeringArtifact.load(tmp_path / "ten", expected_d=d)  # a well-formed artifact: loads
    ref = _chunk(act, 3)
    with pytest.raises(ValueError, match="10 steps.*1 denoising step"):
        art.intervention(act)
    with pytest.raises(ValueError, match="10 steps"):  # the policy node's path (steering parameter)
        SteerablePolicy(act, str(tmp_path / "ten"), 0.5)
    assert np.array_equal(_chunk(act, 3), ref)  # nothing was left installed
    # the matching count (1 step) attaches and steers exactly like its C_0 as a global conceptor
    with SteeringArtifact(C[:1].clone(), card).intervention(act):
        per_step = _chunk(act, 3)
    with steer(act, site, C[0], beta=0.5):
        global_ = _chunk(act, 3)
    np.testing.assert_allclose(per_step, global_, rtol=1e-6, atol=1e-6)
    assert np.abs(per_step - ref).max() > 1e-4  # and it does steer
