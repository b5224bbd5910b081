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
    doc = json.loads((SHIPPED / "config.json").read_text())
    assert doc["type"] == "lerobot_act" and doc["format_version"] == 2
    # LeRobot's own files sit, hashed, in the artifact's LeRobot folder
    assert json.loads((SHIPPED / "lerobot" / "config.json").read_text())["type"] == "act"
    assert {"lerobot/config.json", "lerobot/model.safetensors", "lerobot/policy_preprocessor.json"} <= set(doc["files"])
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
    assert (tiny_dir / "config.json").is_file() and (tiny_dir / "lerobot" / "model.safetensors").is_file()
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
    from latentstack.core.artifacts import ArtifactError, sha256_file

    bad = tmp_path / "bad"
    shutil.copytree(tiny_dir, bad)
    doc = json.loads((bad / "config.json").read_text())

    def write(d: dict) -> None:
        (bad / "config.json").write_text(json.dumps(d))

    # LeRobot's config edited: its hash no longer matches; re-hashed, the weights do not fit it
    original = (bad / "lerobot" / "config.json").read_bytes()
    lcfg = json.loads(original)
    (bad / "lerobot" / "config.json").write_text(json.dumps({**lcfg, "dim_model": 48}))  # saved with 32
    with pytest.raises(ArtifactError, match="sha256"):
        ACTAdapter.from_pretrained(bad)
    write({**doc, "files": {**doc["files"], "lerobot/config.json": sha256_file(bad / "lerobot" / "config.json")}})
    with pytest.raises(ArtifactError, match="do not fit"):
        ACTAdapter.from_pretrained(bad)
    (bad / "lerobot" / "config.json").write_bytes(original)
    # our config disagreeing with LeRobot's, a wrong type / version, an unknown key, a missing file
    write({**doc, "config": {**doc["config"], "chunk_size": 8}})
    with pytest.raises(ArtifactError, match="disagrees"):
        ACTAdapter.from_pretrained(bad)
    write({**doc, "config": {**doc["config"], "weights_dtype": "float16"}})
    with pytest.raises(ArtifactError, match="stored in float32"):
        ACTAdapter.from_pretrained(bad)
    write({**doc, "config": {**doc["config"], "extra_key": 1}})
    with pytest.raises(ValueError, match="extra_key"):
        ACTAdapter.from_pretrained(bad)
    write({**doc, "type": "act"})
    with pytest.raises(ArtifactError, match="expected"):
        ACTAdapter.from_pretrained(bad)
    write({**doc, "format_version": 1})
    with pytest.raises(ArtifactError, match="format_version"):
        ACTAdapter.from_pretrained(bad)
    assert not is_act_checkpoint(bad)
    write(doc)
    assert is_act_checkpoint(bad)
    ACTAdapter.from_pretrained(bad)  # restored: loads again
    (bad / "lerobot" / "policy_preprocessor.json").unlink()
    with pytest.raises(ArtifactError, match="policy_preprocessor.json missing"):
        ACTAdapter.from_pretrained(bad)


def test_saved_processors_are_cpu_and_load_on_the_requested_device(tiny_dir):
    from latentstack.policies.lerobot_act.processor_act import pipeline_devices

    for name in ("policy_preprocessor.json", "policy_postprocessor.json"):
        steps = json.loads((tiny_dir / "lerobot" / name).read_text())["steps"]
        assert [s["config"]["device"] for s in steps if s["registry_name"] == "device_processor"] == ["cpu"]
    a = ACTAdapter.from_pretrained(tiny_dir, device="cpu")
    assert a.device == torch.device("cpu") and pipeline_devices(a.preprocessor) == ["cpu"]
    if torch.cuda.is_available():  # the GPU box: the pipelines follow the load call's device
        g = ACTAdapter.from_pretrained(tiny_dir, device="cuda")
        assert g.device.type == "cuda" and pipeline_devices(g.preprocessor)[0].startswith("cuda")


def test_compact_weights_stores_fp16_and_loads_the_rounded_weights(tiny_dir, tmp_path):
    import shutil

    import torch

    src = ACTAdapter.from_pretrained(tiny_dir)
    dst = tmp_path / "compact"
    shutil.copytree(tiny_dir, dst)
    size_before = (dst / "lerobot" / "model.safetensors").stat().st_size
    assert ACTAdapter.compact_weights(dst) < 0.6 * size_before
    assert json.loads((dst / "config.json").read_text())["config"]["weights_dtype"] == "float16"
    got = ACTAdapter.from_pretrained(dst)  # strict load, fp32 model
    want = {k: v.detach().to(torch.float16).float() for k, v in src.state_dict().items() if v.is_floating_point()}
    for k, v in got.state_dict().items():
        if k in want:
            assert v.dtype == torch.float32 and torch.equal(v, want[k]), k


def test_trainer_saves_a_loadable_artifact(tmp_path):
    """``train_act`` writes a ``lerobot_act`` artifact (LeRobot's files in lerobot/, the log hashed with them)."""
    import importlib.util

    from latentstack.core.artifacts import load_artifact
    from latentstack.policies.factory import make_policy
    from latentstack.policies.lerobot_act.train import ACTTrainConfig, train_act

    spec = importlib.util.spec_from_file_location("_act_train_data", Path(__file__).with_name("test_train.py"))
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    data = helpers.make_synthetic_dataset(tmp_path / "data")
    out = train_act(ACTTrainConfig(dataset_root=str(data), repo_id="test/synthetic", out_dir=str(tmp_path / "act"),
                                   preset="act_tiny", steps=2, batch_size=2, time_budget_s=None, log_every=1,
                                   progress=False))
    art = load_artifact(out, expect_type="lerobot_act")
    assert "train_log.json" in art.files and "lerobot/model.safetensors" in art.files
    assert art.read_json("train_log.json")["steps_done"] == 2
    policy = make_policy(str(out))
    size = helpers.IMAGE
    chunk = policy.predict_action_chunk({"image": np.zeros((size, size, 3), np.uint8), "state": np.zeros(4, np.float32)})
    assert chunk.shape == (policy.config.chunk_size, 4) and np.isfinite(chunk).all()


def test_shipped_card_renders_from_its_files(monkeypatch):
    """CARD.md is what the card renderer makes of the artifact's files (numbers copied, never typed in)."""
    from latentstack.policies.lerobot_act.card import render_act_card

    monkeypatch.chdir(ROOT)  # the training log names its out_dir repo-relative
    card = (SHIPPED / "CARD.md").read_text()
    commands = card.split("```bash\n")[1].split("\n```")[0].split("\n")
    notes = [ln[2:] for ln in card.split("## Notes\n\n")[1].split("\n## ")[0].split("\n") if ln.startswith("- ")]
    doc = json.loads((SHIPPED / "config.json").read_text())
    got = render_act_card(SHIPPED.name, json.loads((SHIPPED / "lerobot" / "config.json").read_text()),
                          json.loads((SHIPPED / "train_log.json").read_text()),
                          json.loads((SHIPPED / "eval" / "eval.json").read_text()), commands, notes, artifact=doc)
    assert got == card


def test_trainer_on_device(tmp_path, device):
    """``ACTTrainConfig.device``: ACT, its optimizer state and LeRobot's preprocessor (so every batch tensor) live on
    the device. On the CPU the run equals the default run bit for bit; on CUDA it is checked to train (finite
    losses, weights moved from the seed's initial weights), not to equal the CPU run (other kernels)."""
    import importlib.util

    from lerobot.policies.act.modeling_act import ACTPolicy
    from safetensors.torch import load_file

    from latentstack.core.artifacts import load_artifact
    from latentstack.policies.lerobot_act.train import ACTTrainConfig, train_act

    spec = importlib.util.spec_from_file_location("_act_train_data", Path(__file__).with_name("test_train.py"))
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    data = helpers.make_synthetic_dataset(tmp_path / "data")

    def run(name: str, **kw) -> dict[str, torch.Tensor]:
        out = train_act(ACTTrainConfig(dataset_root=str(data), repo_id="test/synthetic", out_dir=str(tmp_path / name),
                                       preset="act_tiny", steps=3, batch_size=2, time_budget_s=None, log_every=1,
                                       progress=False, **kw))
        log = load_artifact(out, expect_type="lerobot_act").read_json("train_log.json")
        assert log["train_config"]["device"] == kw.get("device", "cpu")
        assert log["steps_done"] == 3 and all(np.isfinite(h["loss"]) for h in log["history"])
        steps = json.loads((out / "lerobot" / "policy_preprocessor.json").read_text())["steps"]
        assert [st["config"]["device"] for st in steps if st["registry_name"] == "device_processor"] == ["cpu"]
        return load_file(str(out / "lerobot" / "model.safetensors"))

    got = run("dev", device=device)
    torch.manual_seed(0)  # the trainer's seed, drawn just before it builds the policy
    init = ACTPolicy(make_act_config("act_tiny", image_size=helpers.IMAGE, state_dim=4, action_dim=4))
    params = [k for k, _ in init.named_parameters()]  # the rest are frozen batch-norm buffers of the backbone
    moved = [k for k in params if not torch.equal(got[k], init.state_dict()[k])]
    assert len(moved) >= 0.9 * len(params)  # it trained (79 of 80 on the CPU after 3 steps)
    if device == "cpu":
        ref = run("default")
        assert got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in ref)


def test_pipeline_step_outside_the_allow_list_is_refused_and_never_runs(tmp_path, monkeypatch):
    """Issue 14, finding 1: a processor step naming ``subprocess.Popen`` in a re-sealed copy of the shipped
    artifact (hashes valid, so only the step allow-list can stop it) is refused before LeRobot sees the JSON."""
    import subprocess
    import sys

    import lerobot.policies.act.configuration_act  # noqa: F401 (registers LeRobot's "act" config for sealing)

    from latentstack.core.artifacts import ArtifactError
    from latentstack.policies.lerobot_act.artifact import seal_act_artifact

    if not SHIPPED.exists():
        pytest.skip("shipped ACT checkpoint not present")
    bad = tmp_path / "act"
    shutil.copytree(SHIPPED, bad)
    marker = tmp_path / "pwned"
    pre = bad / "lerobot" / "policy_preprocessor.json"
    doc = json.loads(pre.read_text())
    doc["steps"].insert(0, {"class": "subprocess.Popen",
                            "config": {"args": [sys.executable, "-c", f"open({str(marker)!r}, 'w').close()"]}})
    pre.write_text(json.dumps(doc))
    side = [n for n in json.loads((SHIPPED / "config.json").read_text())["files"] if not n.startswith("lerobot/")]
    seal_act_artifact(bad, existing_files=side)  # every hash matches the tampered files
    real_popen = subprocess.Popen

    def popen_and_wait(*args, **kwargs):  # if anything ever runs it, the marker exists before the assert
        p = real_popen(*args, **kwargs)
        p.wait(timeout=60)
        return p

    monkeypatch.setattr(subprocess, "Popen", popen_and_wait)
    with pytest.raises(ArtifactError, match="subprocess.Popen"):
        ACTAdapter.from_pretrained(bad)
    assert not marker.exists()
    # a registry name outside the allow-list is refused the same way (the registry holds more than ACT needs)
    doc["steps"][0] = {"registry_name": "tokenizer_processor", "config": {}}
    pre.write_text(json.dumps(doc))
    seal_act_artifact(bad, existing_files=side)
    with pytest.raises(ArtifactError, match="tokenizer_processor"):
        ACTAdapter.from_pretrained(bad)
