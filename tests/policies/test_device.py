"""VLA and ACT adapter on a device: ``.to(device)`` then the Policy entry points run there, the processors put
the inputs where the weights are, and results match the CPU within fp32 tolerances (``device`` fixture: cpu,
and cuda marked ``gpu``). CPU-only checks catch tensors created without an explicit device."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from latentstack.policies.vla import VLAInputs, VLAPolicy, get_vla_config

VOCAB = ("<pad>", "<unk>", "close", "the", "drawer", "press", "button", "top", "open", "window")
TOL = {"rtol": 1e-3, "atol": 1e-3}  # fp32 on another device's kernels (TF32 off in the fixture)


def _vla() -> VLAPolicy:
    p = VLAPolicy(get_vla_config("vla_tiny", vocab=VOCAB, seed=3))
    g = torch.Generator().manual_seed(0)
    p.set_normalization({"state_mean": torch.randn(4, generator=g), "state_std": torch.rand(4, generator=g) + 0.5,
                         "action_mean": torch.randn(4, generator=g) * 0.1,
                         "action_std": torch.rand(4, generator=g) + 0.5})
    return p


def _batch(b: int = 3, size: int = 48) -> dict:
    rng = np.random.default_rng(1)
    texts = ["close the drawer", "press the button top", "open the window now please"][:b]
    return {"image": rng.integers(0, 256, (b, size, size, 3), dtype=np.uint8),  # resized by the processor
            "state": rng.normal(size=(b, 4)).astype(np.float32), "instruction": texts}


def test_vla_chunk_on_device_matches_cpu(device: str) -> None:
    cpu = _vla()
    dev = copy.deepcopy(cpu).to(device)
    assert dev.device.type == device and dev.processor.device.type == device
    batch = _batch()  # unequal instruction lengths: the padded-language mask path runs
    ref = cpu.predict_action_chunk(batch, generator=torch.Generator().manual_seed(5))
    out = dev.predict_action_chunk(batch, generator=torch.Generator().manual_seed(5))
    assert out.device.type == device and out.shape == ref.shape
    torch.testing.assert_close(out.cpu(), ref, **TOL)
    # the policy's own noise stream is a CPU generator on every device: same seed, same noise
    cpu.reset(seed=9)
    dev.reset(seed=9)
    one = {k: v[:1] for k, v in batch.items()}  # no padding: the mask-free path
    torch.testing.assert_close(dev.predict_action_chunk(one).cpu(), cpu.predict_action_chunk(one), **TOL)


def test_vla_select_action_on_device(device: str) -> None:
    cpu = _vla()
    dev = copy.deepcopy(cpu).to(device)
    rng = np.random.default_rng(2)
    cpu.reset(seed=4)
    dev.reset(seed=4)
    for _ in range(cpu.config.n_action_steps + 2):  # two chunk predictions
        obs = {"image": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
               "state": rng.normal(size=4).astype(np.float32), "instruction": "press the button"}
        a_dev, a_cpu = dev.select_action(obs), cpu.select_action(obs)
        assert isinstance(a_dev, np.ndarray) and a_dev.dtype == np.float32
        np.testing.assert_allclose(a_dev, a_cpu, **TOL)


def test_vla_training_step_on_device(device: str) -> None:
    p = _vla().to(device).train()
    b = _batch(2, 32)
    b["action"] = np.random.default_rng(3).normal(size=(2, p.config.chunk_size, 4)).astype(np.float32)
    b["action_is_pad"] = np.zeros((2, p.config.chunk_size), bool)
    b["action_is_pad"][1, -3:] = True
    loss, info = p.compute_loss(b)
    loss.backward()
    assert loss.device.type == device and np.isfinite(info["loss"])
    assert p.expert.action_in.weight.grad is not None and p.expert.action_in.weight.grad.device.type == device


def test_vla_processor_output_is_on_the_model_device(device: str) -> None:
    p = _vla().to(device)
    x = p.processor(_batch(2))
    assert isinstance(x, VLAInputs)
    for t in (x.images, x.state, x.lang_ids, x.lang_mask):
        assert t is not None and t.device.type == device
    assert x.images.shape == (2, 3, p.config.image_size, p.config.image_size)
    same_len = p.processor({**_batch(1), "instruction": ["close the drawer"]})
    assert same_len.lang_mask is not None  # padded to max_lang_len
    full = p.processor({**_batch(1), "lang_tokens": torch.full((1, p.config.max_lang_len), 3)})
    assert full.lang_mask is None  # nothing padded: the model builds no mask and never syncs on it


def test_vla_creates_no_tensor_off_its_device() -> None:
    """Run the CPU model with ``meta`` as the default device: any tensor made without ``device=`` (the old flow
    time ``t``, noise, masks) lands on meta and breaks the computation; a clean model is unaffected."""
    p = _vla()
    batch = _batch()
    ref = p.predict_action_chunk(batch, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(0)
    with torch.device("meta"):
        out = p.predict_action_chunk(batch, generator=gen)
    assert out.device.type == "cpu"
    assert torch.equal(out, ref)  # same ops on the same machine


def test_vla_meta_check_catches_a_device_less_tensor(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above can fail: a flow time made without ``device=`` (the pre-fix code) is caught."""
    import latentstack.policies.vla.modeling_vla as m

    original = m.ActionExpert.forward

    def forward_with_cpu_time(self, x_t, t, cache, attn_mask):
        return original(self, x_t, torch.full(t.shape, float(t[0]), dtype=t.dtype), cache, attn_mask)

    monkeypatch.setattr(m.ActionExpert, "forward", forward_with_cpu_time)
    p = _vla()
    with torch.device("meta"), pytest.raises((RuntimeError, NotImplementedError)):
        p.predict_action_chunk(_batch(), generator=torch.Generator().manual_seed(0))


# --------------------------------------------------------------------------- LeRobot ACT adapter


@pytest.fixture(scope="module")
def act_cpu():
    pytest.importorskip("lerobot")
    from latentstack.policies.lerobot_act import ACTAdapter, make_act_config
    from latentstack.policies.lerobot_act.configuration_act import act_dataset_stats

    g = torch.Generator().manual_seed(0)
    stats = act_dataset_stats(torch.randn(4, generator=g), torch.rand(4, generator=g) + 0.5,
                              torch.randn(4, generator=g) * 0.1, torch.rand(4, generator=g) + 0.5)
    return ACTAdapter.from_config(make_act_config("act_tiny"), stats, seed=0)


def _act_obs(seed: int) -> dict:
    g = np.random.default_rng(seed)
    return {"image": g.integers(0, 256, (64, 64, 3), dtype=np.uint8),
            "state": g.normal(size=4).astype(np.float32)}


def test_act_select_action_on_device_matches_cpu(act_cpu, device: str) -> None:
    from latentstack.policies.lerobot_act.processor_act import pipeline_devices

    dev = copy.deepcopy(act_cpu).to(device)
    assert dev.device.type == device
    chunk = dev.predict_action_chunk(_act_obs(0))  # the processor follows .to() on the first call
    assert dev.processor.device.type == device
    assert pipeline_devices(dev.preprocessor) == [device]
    assert pipeline_devices(dev.postprocessor) == ["cpu"]  # LeRobot's "back to host" step stays
    assert isinstance(chunk, np.ndarray) and chunk.dtype == np.float32
    np.testing.assert_allclose(chunk, act_cpu.predict_action_chunk(_act_obs(0)), **TOL)
    dev.reset()
    act_cpu.reset()
    for k in range(dev.config.n_action_steps + 1):
        np.testing.assert_allclose(dev.select_action(_act_obs(k)), act_cpu.select_action(_act_obs(k)), **TOL)


def test_act_saved_processors_name_the_cpu(act_cpu, tmp_path) -> None:
    """Processors are saved as CPU pipelines whatever device the adapter runs on (a saved ``cuda`` would not load
    on a CPU-only machine), and the running processor keeps its device."""
    from latentstack.policies.lerobot_act import ACTAdapter

    a = copy.deepcopy(act_cpu)
    a.processor.to("meta")  # any non-CPU device (no GPU needed)
    a.save_pretrained(tmp_path)
    assert a._processor.device.type == "meta"
    for name in ("policy_preprocessor.json", "policy_postprocessor.json"):
        (found,) = tmp_path.rglob(name)  # LeRobot's pipeline files, wherever the artifact layout puts them
        steps = json.loads(found.read_text())["steps"]
        assert [s["config"]["device"] for s in steps if s["registry_name"] == "device_processor"] == ["cpu"]
    b = ACTAdapter.from_pretrained(tmp_path)
    np.testing.assert_array_equal(b.predict_action_chunk(_act_obs(1)), act_cpu.predict_action_chunk(_act_obs(1)))


def test_act_adapters_sharing_pipelines_each_run_on_their_device(act_cpu) -> None:
    """An adapter and its twin share LeRobot's pipelines (``make_act_random_like``); when one points them at
    another device, the other finds that out from the pipeline itself and points them back before running."""
    from lerobot.policies.act.modeling_act import ACTPolicy

    from latentstack.policies.lerobot_act import ACTAdapter

    a = copy.deepcopy(act_cpu)
    policy = ACTPolicy(a.config)
    policy.load_state_dict(act_cpu.policy.state_dict())
    twin = ACTAdapter(policy, a.preprocessor, a.postprocessor)
    a.processor.to("meta")  # the other adapter "running elsewhere" (no GPU needed)
    assert twin.processor.device.type == "cpu"
    np.testing.assert_array_equal(twin.predict_action_chunk(_act_obs(2)), act_cpu.predict_action_chunk(_act_obs(2)))
