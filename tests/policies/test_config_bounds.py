"""Issue 14, finding 8: a checkpoint's config is validated (types, ranges) and its weights measured against a
memory budget before any tensor is allocated."""

from __future__ import annotations

import json
import resource
import shutil
import time
from pathlib import Path

import pytest

from latentstack.core.artifacts import ArtifactError, sha256_file
from latentstack.policies.vla import VLAConfig

ROOT = Path(__file__).resolve().parents[2]
VLA = ROOT / "policies" / "vla_metaworld_mt6"


def _rewrite_header_config(path: Path, **changes) -> None:
    """Edit the config a safetensors header repeats (tensors untouched), as a forger who re-seals would."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    head = json.loads(raw[8:8 + n])
    cfg = json.loads(head["__metadata__"]["config"])
    head["__metadata__"]["config"] = json.dumps({**cfg, **changes}, sort_keys=True)
    new = json.dumps(head, separators=(",", ":")).encode()
    new += b" " * (-len(new) % 8)
    path.write_bytes(len(new).to_bytes(8, "little") + new + raw[8 + n:])


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def test_d_model_8192_is_refused_quickly_without_allocating(tmp_path):
    """config.json and the weight header both say d_model = 8192 (hashes re-sealed): only validation stops it;
    before the fix this built a 5.4 GB model."""
    from latentstack.policies.checkpoint import from_pretrained

    if not VLA.exists():
        pytest.skip("shipped VLA artifact not present")
    bad = tmp_path / "vla"
    shutil.copytree(VLA, bad)
    _rewrite_header_config(bad / "model.safetensors", d_model=8192)
    doc = json.loads((bad / "config.json").read_text())
    doc["config"]["d_model"] = 8192
    doc["files"]["model.safetensors"] = sha256_file(bad / "model.safetensors")
    (bad / "config.json").write_text(json.dumps(doc))
    peak, t0 = _peak_rss_bytes(), time.perf_counter()
    with pytest.raises(ValueError, match="d_model"):
        from_pretrained(bad)
    assert time.perf_counter() - t0 < 10.0
    assert _peak_rss_bytes() - peak < 1 << 30  # no multi-GB allocation


def test_num_heads_zero_is_a_clear_value_error():
    with pytest.raises(ValueError, match="num_heads"):
        VLAConfig(num_heads=0)
    with pytest.raises(ValueError, match="num_heads"):
        VLAConfig.from_dict({"type": "vla", "num_heads": -4})


@pytest.mark.parametrize("field,value", [("num_inference_steps", 10**6), ("chunk_size", 10**6),
                                         ("d_model", 8192), ("num_heads", True), ("d_model", 128.5),
                                         ("mlp_ratio", float("nan")), ("vision_channels", (32, 10**6)),
                                         ("image_size", 8192)])
def test_vla_config_ranges_and_types(field, value):
    with pytest.raises(ValueError, match=field):
        VLAConfig(**{field: value})


def test_runtime_override_of_inference_steps_is_bounded():
    from latentstack.policies.checkpoint import from_pretrained

    if not VLA.exists():
        pytest.skip("shipped VLA artifact not present")
    with pytest.raises(ValueError, match="num_inference_steps"):
        from_pretrained(VLA, num_inference_steps=10**6)


def test_other_model_configs_are_bounded():
    from latentstack.koopman.base_policy import ChunkBaseConfig
    from latentstack.koopman.configuration_korr import ResidualConfig
    from latentstack.perception.lion.configuration_lion import LionConfig
    from latentstack.perception.stereo.configuration_stereo import StereoConfig
    from latentstack.policies.lerobot_act.configuration_act import ACTAdapterConfig

    for make, field in [(lambda: LionConfig(channels=10**6), "channels"),
                        (lambda: StereoConfig(hidden=0), "hidden"),
                        (lambda: StereoConfig(valid_iters=10**6), "valid_iters"),
                        (lambda: ResidualConfig(obs_dim=4, action_dim=2, lift_dim=10**7), "lift_dim"),
                        (lambda: ChunkBaseConfig(obs_dim=4, action_dim=2, hidden_dim=10**7), "hidden_dim"),
                        (lambda: ACTAdapterConfig(chunk_size=0), "chunk_size"),
                        (lambda: ACTAdapterConfig(image_shape=(3, 64, 10**6)), "image_shape")]:
        with pytest.raises(ValueError, match=field):
            make()


def test_weights_over_the_memory_budget_are_refused_before_loading(tmp_path, monkeypatch):
    """The weight file's header (shapes x dtype sizes) is compared with the budget before any tensor is read."""
    import torch

    from latentstack.core.artifacts import load_artifact, save_artifact

    out = save_artifact(tmp_path / "a", type="t", config={"n": 1},
                        tensors={"model.safetensors": {"w": torch.zeros(256, 256)}})  # 256 KiB
    art = load_artifact(out)
    assert set(art.tensors(budget=1 << 20)) == {"w"}
    with pytest.raises(ArtifactError, match="budget"):
        art.tensors(budget=100_000)
    monkeypatch.setenv("LATENTSTACK_MEMORY_BUDGET", "100000")
    with pytest.raises(ArtifactError, match="LATENTSTACK_MEMORY_BUDGET"):
        art.tensors()


@pytest.mark.parametrize("field,value", [("dim_model", 8192), ("n_heads", 0), ("n_encoder_layers", 10**4),
                                         ("dim_feedforward", 10**7)])
def test_act_lerobot_config_sizes_are_bounded_before_lerobot_builds(tmp_path, field, value):
    """LeRobot's own config.json inside an ACT artifact (re-sealed) is size-checked before ACTPolicy is built."""
    import lerobot.policies.act.configuration_act  # noqa: F401 (registers LeRobot's "act" config for sealing)

    from latentstack.policies.lerobot_act import ACTAdapter
    from latentstack.policies.lerobot_act.artifact import seal_act_artifact

    shipped = ROOT / "policies" / "act_metaworld_mt6"
    if not shipped.exists():
        pytest.skip("shipped ACT artifact not present")
    bad = tmp_path / "act"
    shutil.copytree(shipped, bad)
    lcfg = json.loads((bad / "lerobot" / "config.json").read_text())
    (bad / "lerobot" / "config.json").write_text(json.dumps({**lcfg, field: value}))
    side = [n for n in json.loads((shipped / "config.json").read_text())["files"] if not n.startswith("lerobot/")]
    seal_act_artifact(bad, existing_files=side)
    peak, t0 = _peak_rss_bytes(), time.perf_counter()
    with pytest.raises(ArtifactError, match=field):
        ACTAdapter.from_pretrained(bad)
    assert time.perf_counter() - t0 < 10.0
    assert _peak_rss_bytes() - peak < 1 << 30
