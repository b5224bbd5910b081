"""VLA artifacts (type "vla" in the one artifact format: safetensors + config.json, no pickle), strict loading,
and the policy factory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from latentstack.core.artifacts import ArtifactError, sha256_file
from latentstack.policies.checkpoint import (
    FORMAT_VERSION,
    checkpoint_fingerprint,
    from_pretrained,
    load_policy,
    read_policy_config,
    save_policy,
)
from latentstack.policies.factory import POLICY_REGISTRY, default_vla_config, make_policy
from latentstack.policies.vla import VLAConfig, VLAPolicy, WordTokenizer, get_vla_config

TASKS = ["close the drawer", "open the door"]


def tiny_policy(**kw) -> VLAPolicy:
    cfg = get_vla_config("vla_tiny", vocab=tuple(WordTokenizer.build(TASKS).vocab), **kw)
    p = VLAPolicy(cfg)
    p.set_normalization(
        {
            "state_mean": [0.1, 0.2, 0.3, 0.4],
            "state_std": [1, 2, 3, 4],
            "action_mean": [0.0, 0.1, -0.1, 0.5],
            "action_std": [0.5, 0.5, 0.5, 0.9],
        }
    )
    return p


def batch_for(cfg: VLAConfig, b: int = 2) -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "observation.image": torch.randint(
            0, 256, (b, 3, cfg.image_size, cfg.image_size), generator=g, dtype=torch.uint8
        ),
        "observation.state": torch.randn(b, cfg.state_dim, generator=g),
        "task": ["close the drawer", "open the door"][:b],
    }


def chunk(p: VLAPolicy, seed: int = 0) -> torch.Tensor:
    cfg = p.config
    noise = torch.randn(2, cfg.chunk_size, cfg.action_dim, generator=torch.Generator().manual_seed(seed))
    return p.predict_action_chunk(batch_for(cfg), noise=noise)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[VLAPolicy, Path]:
    p = tiny_policy()
    out = save_policy(p, tmp_path_factory.mktemp("ckpt") / "policy")
    return p, out


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


# ----------------------------------------------------------------------------- format


def test_files_and_config_json(saved):
    p, out = saved
    assert sorted(f.name for f in out.iterdir()) == ["config.json", "model.safetensors"]
    doc = json.loads((out / "config.json").read_text())
    assert doc["type"] == "vla" and doc["format_version"] == FORMAT_VERSION == 2
    assert doc["config"]["vocab"] == list(p.config.vocab)  # self-contained tokenizer
    assert doc["extra"]["num_parameters"] == p.num_parameters()
    assert doc["files"] == {"model.safetensors": sha256_file(out / "model.safetensors")}
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
        assert f.metadata()["type"] == "vla"
    assert "normalizer.state_std" in keys and "normalizer.action_mean" in keys  # stats travel with weights
    assert read_policy_config(out) == p.config


def test_roundtrip_bit_identical(saved):
    p, out = saved
    q = load_policy(out)
    assert isinstance(q, VLAPolicy) and not q.training
    assert q.config == p.config
    for (k, a), (k2, b) in zip(p.state_dict().items(), q.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    assert torch.equal(chunk(p), chunk(q))
    p.reset(42)
    q.reset(42)
    obs = {
        "image": torch.zeros(32, 32, 3, dtype=torch.uint8).numpy(),
        "state": [0.0, 0, 0, 0],
        "instruction": "open the door",
    }
    assert (p.select_action(obs) == q.select_action(obs)).all()


def test_runtime_overrides_only(saved):
    _, out = saved
    q = load_policy(out, num_inference_steps=3, n_action_steps=2)
    assert q.config.num_inference_steps == 3 and q.config.n_action_steps == 2
    with pytest.raises(ValueError, match="d_model"):
        load_policy(out, d_model=64)


# ----------------------------------------------------------------------------- refusals


def _edit_config(out: Path, tmp_path: Path, **changes) -> Path:
    bad = _copy(out, tmp_path / "bad")
    doc = json.loads((bad / "config.json").read_text())
    for k, v in changes.items():
        if k in ("type", "format_version"):
            doc[k] = v
        else:
            doc["config"][k] = v
    (bad / "config.json").write_text(json.dumps(doc))
    return bad


def _rewrite_weights(out: Path, dst: Path, tensors: dict, meta: dict | None) -> Path:
    """A copy whose weights are replaced *and* re-hashed in config.json: a consistently written but wrong
    artifact, so the refusal tested is the model's check, not the hash check."""
    bad = _copy(out, dst)
    save_file(tensors, str(bad / "model.safetensors"), metadata=meta)
    doc = json.loads((bad / "config.json").read_text())
    doc["files"]["model.safetensors"] = sha256_file(bad / "model.safetensors")
    (bad / "config.json").write_text(json.dumps(doc))
    return bad


def test_refuses_edited_d_model(saved, tmp_path):
    _, out = saved
    bad = _edit_config(out, tmp_path, d_model=48)
    with pytest.raises(ArtifactError, match="d_model: saved 32 vs config.json 48"):
        load_policy(bad)


def test_refuses_shape_preserving_architecture_edit(saved, tmp_path):
    _, out = saved
    bad = _edit_config(out, tmp_path, num_heads=4)  # no tensor changes shape, the model would be wrong
    with pytest.raises(ValueError, match="num_heads: saved 2 vs config.json 4"):
        load_policy(bad)
    ok = _edit_config(out, tmp_path / "ok", num_inference_steps=5)  # runtime fields may be edited
    assert load_policy(ok).config.num_inference_steps == 5


@pytest.mark.parametrize(
    "change, message",
    [
        ({"type": "act"}, r"is type 'act', expected \['vla'\]"),
        ({"format_version": 99}, "format_version 99 unsupported"),
        ({"format_version": 1}, "convert old artifacts with"),
    ],
)
def test_refuses_wrong_class_version_format(saved, tmp_path, change, message):
    _, out = saved
    with pytest.raises(ValueError, match=message):
        load_policy(_edit_config(out, tmp_path, **change))


def test_refuses_tampered_weights(saved, tmp_path):
    _, out = saved
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(out / "model.safetensors"))

    # any change to a file listed in config.json is refused by its sha256
    bad = _copy(out, tmp_path / "flip")
    raw = bytearray((bad / "model.safetensors").read_bytes())
    raw[-1] ^= 1  # one bit of the last tensor's data
    (bad / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="model.safetensors sha256 differs from config.json"):
        load_policy(bad)

    t = dict(tensors)
    t["expert.action_out.weight"] = torch.zeros(5, t["expert.action_out.weight"].shape[1])
    bad = _rewrite_weights(out, tmp_path / "shape", t, meta)
    with pytest.raises(
        ValueError, match=r"expert\.action_out\.weight: file \(5, 32\) torch.float32 vs model \(4, 32\)"
    ):
        load_policy(bad)

    t = dict(tensors)
    t["expert.action_out.bias"] = t["expert.action_out.bias"].double()
    bad = _rewrite_weights(out, tmp_path / "dtype", t, meta)
    with pytest.raises(ValueError, match=r"expert\.action_out\.bias: file \(4,\) torch.float64 vs model \(4,\) torch.float32"):
        load_policy(bad)

    t = dict(tensors)
    del t["vision.proj.bias"]
    t["extra.tensor"] = torch.zeros(1)
    bad = _rewrite_weights(out, tmp_path / "keys", t, meta)
    with pytest.raises(
        ValueError, match=r"missing keys \[vision\.proj\.bias\].*unexpected keys \[extra\.tensor\]"
    ):
        load_policy(bad)

    bad = _rewrite_weights(out, tmp_path / "nometa", dict(tensors), None)
    with pytest.raises(ArtifactError, match="not written by save_artifact"):
        load_policy(bad)


def test_dataset_recorded_by_name_and_hash(saved, tmp_path):
    p, _ = saved
    ds = tmp_path / "demos"
    ds.mkdir()
    (ds / "episode_0.parquet").write_bytes(b"frames")
    out = save_policy(p, tmp_path / "with_ds", extra={"train_step": 7, "dataset": str(ds)})
    doc = json.loads((out / "config.json").read_text())
    assert doc["extra"] == {"num_parameters": p.num_parameters(), "train_step": 7}
    assert doc["provenance"]["dataset"]["path"] == "demos" and len(doc["provenance"]["dataset"]["sha256"]) == 64
    assert str(tmp_path) not in (out / "config.json").read_text()  # no path of this machine


def test_fingerprint(saved, tmp_path):
    _, out = saved
    fp = checkpoint_fingerprint(out)
    assert fp == checkpoint_fingerprint(_copy(out, tmp_path / "same")) and len(fp) == 64
    assert fp == sha256_file(out / "config.json")  # config.json lists every file's sha256
    q = load_policy(out)
    with torch.no_grad():
        q.expert.action_out.bias += 1.0
    assert checkpoint_fingerprint(save_policy(q, tmp_path / "changed")) != fp


# ----------------------------------------------------------------------------- factory


def test_make_policy_registry_and_yaml_default():
    assert {"vla", "vla_small", "vla_tiny"} <= set(POLICY_REGISTRY)
    cfg = default_vla_config()
    assert cfg == VLAConfig()  # configs/vla_small.yaml mirrors the vla_small preset
    p = make_policy("vla_tiny", vocab=("<pad>", "<unk>", "go"))
    assert isinstance(p, VLAPolicy) and p.config.d_model == 32
    with pytest.raises(KeyError, match="unknown policy"):
        make_policy("no-such-policy")


def test_make_policy_small_vla_size():
    p = make_policy("vla")
    n = p.num_parameters()
    assert 1_000_000 <= n <= 4_000_000, n
    assert p.config.d_model == 128 and len(p.latent_sites()) == p.config.expert_layers + 1


def test_make_policy_checkpoint_and_random_baseline(saved):
    p, out = saved
    q = make_policy(out)
    assert torch.equal(chunk(p), chunk(q))
    r1 = make_policy(f"random:{out}", seed=1)
    r1b = make_policy(f"random:{out}", seed=1)
    r2 = make_policy(f"random:{out}", seed=2)
    assert r1.config.vocab == p.config.vocab and r1.config.d_model == p.config.d_model
    for name, buf in p.normalizer.named_buffers():
        assert torch.equal(buf, getattr(r1.normalizer, name))
    w = "backbone.layers.0.attn.q_proj.weight"
    sd, sd1, sd1b, sd2 = p.state_dict(), r1.state_dict(), r1b.state_dict(), r2.state_dict()
    assert not torch.equal(sd[w], sd1[w]) and torch.equal(sd1[w], sd1b[w]) and not torch.equal(sd1[w], sd2[w])
    assert torch.equal(chunk(r1), chunk(r1b)) and not torch.equal(chunk(r1), chunk(p))
    with pytest.raises(ValueError, match="runtime fields"):
        make_policy(f"random:{out}", d_model=16)


def test_fields_added_later_read_as_defaults(saved, tmp_path):
    """Forward compatibility: a checkpoint written before a config field existed still loads."""
    _, out = saved
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        meta = dict(f.metadata())
    saved_cfg = json.loads(meta["config"])
    del saved_cfg["flow_samples_per_obs"]  # pretend the field did not exist yet
    meta["config"] = json.dumps(saved_cfg, sort_keys=True)
    bad = _rewrite_weights(out, tmp_path / "old", load_file(str(out / "model.safetensors")), meta)
    doc = json.loads((bad / "config.json").read_text())
    del doc["config"]["flow_samples_per_obs"]
    (bad / "config.json").write_text(json.dumps(doc))
    assert load_policy(bad).config.flow_samples_per_obs == VLAConfig().flow_samples_per_obs
    # ... but only where the field has its default: a saved non-default value is an architecture edit
    doc["config"]["flow_samples_per_obs"] = 2
    (bad / "config.json").write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match="flow_samples_per_obs: saved 1 vs config.json 2"):
        load_policy(bad)


def test_placement_overrides_and_device(saved):
    p, out = saved
    q = from_pretrained(out, device="cpu")
    assert q.config.device == "cpu" and next(q.parameters()).device.type == "cpu"
    assert torch.equal(chunk(p), chunk(q))
    assert make_policy(out, device="cpu").config.device == "cpu"
    with pytest.raises(ValueError, match="device"):
        from_pretrained(out, device="")  # validated by ModelConfig
    with pytest.raises(ValueError, match="only runtime fields"):
        from_pretrained(out, vocab=("<pad>", "<unk>"))
    with pytest.raises(ValueError, match="float32 only"):
        from_pretrained(out, dtype="bfloat16")


def test_factory_dispatches_on_type_without_importing_other_stacks(saved):
    """make_policy on a "vla" artifact imports neither quant nor steering (dispatch by the type table)."""
    import subprocess
    import sys

    _, out = saved
    code = (
        "import sys; from latentstack.policies.factory import make_policy; "
        f"make_policy({str(out)!r}); "
        "bad = [m for m in sys.modules if m.startswith(('latentstack.quant', 'latentstack.steering', "
        "'latentstack.perception', 'latentstack.koopman'))]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
