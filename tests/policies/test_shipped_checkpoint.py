"""Acceptance checks on the shipped VLA: latent API guarantees on the real model."""

from pathlib import Path

import numpy as np
import pytest
import torch

from latentstack.latent import Intervention, Tap, assert_model_unchanged, module_snapshot
from latentstack.policies.checkpoint import load_policy

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "policies" / "vla_metaworld_mt6"


@pytest.fixture(scope="module")
def policy():
    if not (SHIPPED / "model.safetensors").exists():
        pytest.fail(f"shipped checkpoint missing at {SHIPPED}")
    return load_policy(SHIPPED)


def _obs(policy, seed=0):
    rng = np.random.default_rng(seed)
    size = policy.config.image_size
    return {
        "image": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        "state": rng.normal(size=policy.config.state_dim).astype(np.float32) * 0.1,
        "instruction": "close the drawer",
        "task": "drawer-close-v3",
    }


def test_shipped_checkpoint_is_small_and_has_card():
    size = sum(p.stat().st_size for p in SHIPPED.iterdir() if p.is_file())
    assert size <= 20 * 2**20
    card = (SHIPPED / "CARD.md").read_text()
    for word in ("tasks", "demos", "steps", "seed", "wall", "untrained"):
        assert word in card.lower()


def test_tap_returns_exactly_what_the_expert_layer_produced(policy):
    name = "expert.layer1"
    module = policy.get_submodule(policy.latent_sites()[name].module_path)
    manual = []
    handle = module.register_forward_hook(lambda m, i, o: manual.append(o.detach().clone()))
    try:
        with Tap(policy, [name]) as tap:
            policy.reset(seed=3)
            policy.select_action(_obs(policy))
    finally:
        handle.remove()
    recorded = tap.records[name]
    assert len(recorded) == len(manual) == policy.config.num_inference_steps
    for rec, ref in zip(recorded, manual):
        assert torch.equal(rec.value, ref)
    assert [r.meta["denoise_step"] for r in recorded] == list(range(policy.config.num_inference_steps))


def test_identity_intervention_is_bit_identical_and_model_unchanged(policy):
    snap = module_snapshot(policy)
    obs = _obs(policy, 1)
    policy.reset(seed=5)
    base = [policy.select_action(obs) for _ in range(3)]
    sites = [n for n in policy.latent_sites() if n.startswith("expert.")]
    with Intervention(policy, {n: (lambda v, meta: v) for n in sites}):
        policy.reset(seed=5)
        steered = [policy.select_action(obs) for _ in range(3)]
    assert all(np.array_equal(a, b) for a, b in zip(base, steered))
    with Intervention(policy, {sites[-1]: (lambda v, meta: torch.zeros_like(v))}):
        policy.reset(seed=5)
        zeroed = policy.select_action(obs)
    assert not np.array_equal(base[0], zeroed)
    assert_model_unchanged(policy, snap)
