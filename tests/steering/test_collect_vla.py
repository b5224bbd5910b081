"""Collection through the harness's episode loop (fake env, real shipped VLA), and fitting on real taps."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from latentstack.steering import conceptors as cz
from latentstack.steering.collect import collect_rollouts, split_by_label
from latentstack.steering.fit import fit_contrastive
from latentstack.steering.intervention import SteeringArtifact

from .conftest import run_vla

SITES = ["expert.layer1", "expert.layer3"]


class FakeEnv:
    """Random images; success at the last step iff the seed is even; ``length`` steps."""

    def __init__(self, task, image_size, camera, max_episode_steps, instruction):
        self.task, self.size, self.length, self.instruction = task, image_size, max_episode_steps, instruction

    def reset(self, seed):
        self.g, self.t, self.seed = np.random.default_rng(seed), 0, seed
        return self._obs(), {}

    def _obs(self):
        return {"image": self.g.integers(0, 256, (self.size, self.size, 3), dtype=np.uint8),
                "state": self.g.standard_normal(4).astype(np.float32), "instruction": self.instruction}

    def step(self, action):
        self.t += 1
        done = self.t >= self.length
        return self._obs(), 0.0, False, done, {"success": done and self.seed % 2 == 0}

    def close(self):
        pass


def fake_suite(n_tasks=1):
    tasks = [SimpleNamespace(name=f"t{i}", instruction="press the button", max_episode_steps=12) for i in range(n_tasks)]
    return SimpleNamespace(name="fake", image_size=64, camera="x", tasks=tasks,
                           seeds={"train": range(100), "select": range(100, 200), "test": range(200, 300)})


@pytest.fixture(scope="module")
def rollouts(vla):
    return collect_rollouts(fake_suite(), vla, SITES, split="train", n=6, env_factory=FakeEnv)


def test_collect_labels_and_shapes(rollouts):
    assert [r.seed for r in rollouts] == list(range(6))
    assert [r.success for r in rollouts] == [s % 2 == 0 for s in range(6)]
    for r in rollouts:
        assert r.length == 12
        for site in SITES:
            assert r.states[site].shape == (2, 10, 16, 128)  # 12 steps / 8-action chunks = 2 calls
    s, f = split_by_label(rollouts, SITES[0])
    assert len(s) == 3 and len(f) == 3


def test_collect_refuses_test_seeds(vla):
    with pytest.raises(ValueError):
        collect_rollouts(fake_suite(), vla, SITES, split="test", n=2, env_factory=FakeEnv)
    with pytest.raises(ValueError):
        collect_rollouts(fake_suite(), vla, SITES, seeds=[5, 250], env_factory=FakeEnv)


def test_collect_keep_mean_matches_tokens(vla, rollouts):
    pooled = collect_rollouts(fake_suite(), vla, SITES[:1], seeds=[0, 1], keep="mean", env_factory=FakeEnv)
    for r in pooled:
        full = rollouts[r.seed].states[SITES[0]]
        assert r.states[SITES[0]].shape == (2, 10, 1, 128)
        assert torch.allclose(r.states[SITES[0]], full.mean(2, keepdim=True))


@pytest.mark.parametrize("preset,strategy", [("paper", "global"), ("paper", "per_step"),
                                             ("repo", "global"), ("repo", "per_step")])
def test_fit_on_real_taps_and_steer(vla, vla_batch, rollouts, tmp_path, preset, strategy):
    s, f = split_by_label(rollouts, SITES[0])
    fits = fit_contrastive(s, f, [0.5, 10.0], preset, strategy, site=SITES[0])
    fit = next(iter(fits.values()))
    K = fit.C.double()
    assert torch.isfinite(K).all()
    if preset == "paper":
        for Kt in (K if K.ndim == 3 else K[None]):
            assert cz.is_conceptor(Kt, 1e-5)
    art = SteeringArtifact.from_fit(fit, beta=0.3, layer=1, seeds={"fit": [r.seed for r in rollouts]})
    art.save(tmp_path / "a")
    back = SteeringArtifact.load(tmp_path / "a", expected_d=128)
    ref = run_vla(vla, vla_batch)
    with back.intervention(vla, beta=0.0):
        assert torch.equal(run_vla(vla, vla_batch), ref)
    with back.intervention(vla):
        out = run_vla(vla, vla_batch)
    assert torch.isfinite(out).all() and out.shape == ref.shape
    with back.intervention(vla, condition="linear", magnitude=0.5):
        assert torch.isfinite(run_vla(vla, vla_batch)).all()
