"""LeRobot ACT adapter: protocol, batch-first latent sites, LeRobot-format IO and its refusals."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from latentstack.latent import Tap
from latentstack.policies.lerobot_act import ACTAdapter, is_act_checkpoint, make_act_config
from latentstack.policies.lerobot_act.configuration_act import act_dataset_stats
from latentstack.policies.protocol import Policy

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "policies" / "act_metaworld_mt6"
VLA = ROOT / "policies" / "vla_metaworld_mt6"


def _obs(seed: int) -> dict:
    g = np.random.default_rng(seed)
    return {"image": g.integers(0, 256, (64, 64, 3), dtype=np.uint8),
            "state": (g.standard_normal(4) * 0.1 + [0.0, 0.6, 0.2, 0.5]).astype(np.float32),
            "instruction": "press the button", "task": "button-press-topdown-v3"}


@pytest.fixture(scope="module")
def act():
    from latentstack.policies.factory import make_policy

    if not SHIPPED.exists():
        pytest.skip("shipped ACT checkpoint not present")
    return make_policy(str(SHIPPED))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A fresh act_tiny checkpoint written LeRobot's way (no training)."""
    stats = act_dataset_stats(torch.zeros(4), torch.ones(4), torch.zeros(4), torch.ones(4))
    tiny = ACTAdapter.from_config(make_act_config("act_tiny"), stats, seed=0)
    out = tmp_path_factory.mktemp("act_tiny")
    tiny.save_pretrained(out)
    return out


def test_factory_dispatch_and_protocol(act):
    assert isinstance(act, ACTAdapter) and isinstance(act, Policy)
    assert is_act_checkpoint(SHIPPED) and not is_act_checkpoint(VLA)
    assert json.loads((SHIPPED / "config.json").read_text())["type"] == "act"
    assert not act.training


def test_select_action_chunks_and_determinism(act):
    n = act.config.n_action_steps
    act.reset(seed=3)
    with Tap(act, ["decoder.layer0"]) as tap:
        first = [act.select_action(_obs(t)) for t in range(2 * n + 1)]
    # one model call per n_action_steps control steps, annotated with the step it was made at
    assert [r.meta["step"] for r in tap.records["decoder.layer0"]] == [0, n, 2 * n]
    assert all(r.meta["denoise_step"] == 0 for r in tap.records["decoder.layer0"])
    for a in first:
        assert a.dtype == np.float32 and a.shape == (4,) and np.isfinite(a).all()
    # the queued actions are the chunk's first n rows
    np.testing.assert_array_equal(np.stack(first[:n]), act.predict_action_chunk(_obs(0))[:n])
    act.reset(seed=99)  # inference is deterministic: the seed changes nothing
    again = [act.select_action(_obs(t)) for t in range(2 * n + 1)]
    np.testing.assert_array_equal(np.stack(first), np.stack(again))


def test_sites_are_batch_first_views_of_act_outputs(act):
    sites = act.latent_sites()
    L = act.config.n_decoder_layers
    assert set(sites) == {f"decoder.layer{i}" for i in range(L)} | {"decoder.out", "encoder.out"}
    raw = {}
    layer = act.policy.model.decoder.layers[L - 1]
    h = layer.register_forward_hook(lambda m, a, o: raw.setdefault("last", o.detach().clone()))
    try:
        with Tap(act, list(sites)) as tap:
            act.predict_action_chunk(_obs(1))
    finally:
        h.remove()
    d, S = act.config.dim_model, act.config.chunk_size
    for i in range(L):
        assert tap.records[f"decoder.layer{i}"][0].value.shape == (1, S, d)
    assert tap.records["decoder.out"][0].value.shape == (1, S, d)
    enc = tap.records["encoder.out"][0].value
    assert enc.shape[0] == 1 and enc.shape[-1] == d
    # ACT runs sequence-first (S, B, d); the site is its exact transpose
    assert raw["last"].shape == (S, 1, d)
    assert torch.equal(tap.records[f"decoder.layer{L - 1}"][0].value, raw["last"].transpose(0, 1))
    # decoder.out is the action head's input: the head reproduces the normalised chunk
    head = act.policy.model.action_head(tap.records["decoder.out"][0].value)
    chunk = act.postprocessor(head.detach())[0].numpy()
    np.testing.assert_allclose(chunk, act.predict_action_chunk(_obs(1)), rtol=1e-5, atol=1e-6)


def test_bad_observations_raise(act):
    good = _obs(0)
    with pytest.raises(ValueError, match="uint8"):
        act.predict_action_chunk({**good, "image": good["image"].astype(np.float32)})
    with pytest.raises(ValueError, match="uint8"):
        act.predict_action_chunk({**good, "image": good["image"][:32]})
    with pytest.raises(ValueError, match="state"):
        act.predict_action_chunk({**good, "state": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match="non-finite"):
        act.predict_action_chunk({**good, "state": np.full(4, np.nan, np.float32)})
    with pytest.raises(KeyError):
        act.predict_action_chunk({"image": good["image"]})


def test_roundtrip_is_exact(tiny_dir):
    from latentstack.policies.factory import make_policy

    a = ACTAdapter.from_pretrained(tiny_dir)
    b = make_policy(str(tiny_dir))
    assert set(tiny_dir.iterdir()) >= {tiny_dir / "config.json", tiny_dir / "model.safetensors"}
    np.testing.assert_array_equal(a.predict_action_chunk(_obs(2)), b.predict_action_chunk(_obs(2)))


def test_untrained_twin_shares_stats_not_weights(act):
    from latentstack.policies.factory import make_policy

    twin = make_policy(f"random:{SHIPPED}", seed=0)
    assert isinstance(twin, ACTAdapter)
    w, tw = act.policy.model.action_head.weight, twin.policy.model.action_head.weight
    assert w.shape == tw.shape and not torch.equal(w, tw)
    # same LeRobot normaliser statistics
    s1 = act.preprocessor.steps[-1].stats["observation.state"]["mean"]
    s2 = twin.preprocessor.steps[-1].stats["observation.state"]["mean"]
    assert torch.equal(torch.as_tensor(s1), torch.as_tensor(s2))


def test_loader_refuses_mismatched_checkpoints(tiny_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_dir, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["dim_model"] = 48  # weights were saved with dim_model 32
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="do not match"):
        ACTAdapter.from_pretrained(bad)
    cfg["type"] = "diffusion"
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="not a LeRobot ACT checkpoint"):
        ACTAdapter.from_pretrained(bad)
    cfg["type"] = "act"
    cfg["dim_model"] = 32
    (bad / "config.json").write_text(json.dumps(cfg))
    (bad / "policy_preprocessor.json").unlink()
    with pytest.raises(FileNotFoundError, match="policy_preprocessor.json"):
        ACTAdapter.from_pretrained(bad)


def test_compact_weights_stores_fp16_and_loads_the_rounded_weights(tiny_dir, tmp_path):
    import shutil

    import torch

    src = ACTAdapter.from_pretrained(tiny_dir)
    dst = tmp_path / "compact"
    shutil.copytree(tiny_dir, dst)
    size_before = (dst / "model.safetensors").stat().st_size
    assert ACTAdapter.compact_weights(dst) < 0.6 * size_before
    got = ACTAdapter.from_pretrained(dst)  # strict load, fp32 model
    want = {k: v.detach().to(torch.float16).float() for k, v in src.state_dict().items() if v.is_floating_point()}
    for k, v in got.state_dict().items():
        if k in want:
            assert v.dtype == torch.float32 and torch.equal(v, want[k]), k
