"""The small VLA: config, tokenizer, shapes, latent sites, sampling determinism, chunk queue, learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latentstack.latent.context import current_annotations
from latentstack.latent.site import Site
from latentstack.policies.protocol import Policy
from latentstack.policies.vla import VLA_PRESETS, VLAConfig, VLAPolicy, WordTokenizer, get_vla_config
from latentstack.policies.vla.modeling_vla import random_shift

TASKS = ["close the drawer", "open the door", "press the button"]


def tiny_config(**kw) -> VLAConfig:
    vocab = tuple(WordTokenizer.build(TASKS).vocab)
    return get_vla_config("vla_tiny", vocab=vocab, **kw)


@pytest.fixture(scope="module")
def policy() -> VLAPolicy:
    return VLAPolicy(tiny_config())


def make_obs(cfg: VLAConfig, rng: np.random.Generator, task: str = "close the drawer") -> dict:
    return {
        "image": rng.integers(0, 256, (cfg.image_size, cfg.image_size, 3), dtype=np.uint8),
        "state": rng.standard_normal(cfg.state_dim).astype(np.float32),
        "instruction": task,
        "task": task,
    }


def make_batch(cfg: VLAConfig, b: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "observation.image": torch.randint(
            0, 256, (b, 3, cfg.image_size, cfg.image_size), generator=g, dtype=torch.uint8
        ),
        "observation.state": torch.randn(b, cfg.state_dim, generator=g),
        "task": [TASKS[i % len(TASKS)] for i in range(b)],
        "action": torch.rand(b, cfg.chunk_size, cfg.action_dim, generator=g) * 2 - 1,
        "action_is_pad": torch.zeros(b, cfg.chunk_size, dtype=torch.bool),
    }


# ----------------------------------------------------------------------------- config / tokenizer


def test_config_roundtrip_and_registry():
    cfg = tiny_config(d_model=48, num_heads=4)
    d = cfg.to_dict()
    assert isinstance(d["vocab"], list) and isinstance(d["vision_channels"], list)
    assert VLAConfig.from_dict(d) == cfg
    with pytest.raises(ValueError, match="unknown VLAConfig fields"):
        VLAConfig.from_dict({**d, "bogus": 1})
    with pytest.raises(ValueError):
        VLAConfig(d_model=130, num_heads=4)
    with pytest.raises(ValueError):
        VLAConfig(n_action_steps=20, chunk_size=16)
    assert {"vla_small", "vla_tiny"} <= set(VLA_PRESETS)
    assert VLAConfig().grid_size == 8 and VLAConfig().num_image_tokens == 64


def test_tokenizer_roundtrip_unk_and_padding():
    tok = WordTokenizer.build(["Close the drawer.", "open the door", "press the button"], max_len=6)
    assert tok.vocab[:2] == ["<pad>", "<unk>"]
    assert tok.vocab[2:] == sorted(tok.vocab[2:])
    ids = tok.encode("close the drawer .")
    assert tok.decode(ids) == "close the drawer ."
    assert tok.encode("CLOSE   the Drawer.") == ids  # case + punctuation split
    unk = tok.encode("close the window")
    assert unk[-1] == 1 and tok.decode(unk) == "close the <unk>"
    assert len(tok.encode("open the door open the door open")) == 6  # truncation to max_len
    batch_ids, mask = tok(["open the door", ""])
    assert batch_ids.shape == (2, 6) and batch_ids.dtype == torch.long
    assert mask[0].tolist() == [True] * 3 + [False] * 3 and not mask[1].any()
    # the vocab alone reconstructs the tokenizer (it is stored in the checkpoint config)
    assert WordTokenizer(tok.vocab, max_len=6).encode("press the button") == tok.encode("press the button")
    with pytest.raises(ValueError):
        WordTokenizer(["a", "b"])


# ----------------------------------------------------------------------------- shapes and sites


def test_shapes(policy):
    cfg = policy.config
    batch = make_batch(cfg, 3)
    chunk = policy.predict_action_chunk(batch)
    assert chunk.shape == (3, cfg.chunk_size, cfg.action_dim) and chunk.dtype == torch.float32
    assert chunk.abs().max() <= 1.0  # clipped to the action bounds
    policy.train()
    try:
        loss, info = policy.compute_loss(batch)
    finally:
        policy.eval()
    assert loss.ndim == 0 and torch.isfinite(loss) and info["loss"] == pytest.approx(float(loss.detach()))
    # channel-last uint8, numpy, other image size: resized to the config's
    batch2 = dict(batch)
    batch2["observation.image"] = np.random.default_rng(0).integers(0, 256, (3, 48, 48, 3), dtype=np.uint8)
    assert policy.predict_action_chunk(batch2).shape == chunk.shape
    assert isinstance(policy, Policy)


def test_latent_sites_resolve_and_expert_layers_return_tensors(policy):
    cfg = policy.config
    sites = policy.latent_sites()
    assert set(sites) == {f"expert.layer{i}" for i in range(cfg.expert_layers)} | {"backbone.out"}
    outputs: dict[str, list] = {}
    handles = []
    for name, site in sites.items():
        assert isinstance(site, Site) and site.description
        module = site.resolve(policy)
        assert site.module_path in dict(policy.named_modules())

        def hook(mod, args, out, name=name):
            outputs.setdefault(name, []).append((out, current_annotations()))

        handles.append(module.register_forward_hook(hook))
    try:
        b = 2
        policy.reset(0)
        policy._step = 7
        policy.predict_action_chunk(make_batch(cfg, b))
    finally:
        for h in handles:
            h.remove()
    for i in range(cfg.expert_layers):
        calls = outputs[f"expert.layer{i}"]
        assert len(calls) == cfg.num_inference_steps  # once per denoising step
        for k, (out, ann) in enumerate(calls):
            assert isinstance(out, torch.Tensor) and out.shape == (b, cfg.chunk_size, cfg.d_model)
            assert ann["denoise_step"] == k and ann["step"] == 7
    ((bb_out, ann),) = outputs["backbone.out"]  # the prefix is computed once per chunk
    assert bb_out.shape == (b, cfg.prefix_len, cfg.d_model) and "denoise_step" not in ann


def test_module_names_for_quantization(policy):
    names = dict(policy.named_modules())
    cfg = policy.config
    for stack, n in (("backbone", cfg.backbone_layers), ("expert", cfg.expert_layers)):
        for i in range(n):
            for proj in ("attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.o_proj", "mlp.fc1", "mlp.fc2"):
                assert type(names[f"{stack}.layers.{i}.{proj}"]) is torch.nn.Linear
    roles = policy.linear_roles()
    assert roles["backbone.layers.0.attn.q_proj"] == "backbone.attn"
    assert roles["expert.layers.1.mlp.fc2"] == "expert.mlp"
    assert roles["expert.action_out"] == "head" and roles["vision.proj"] == "vision"
    assert roles["expert.time_mlp_in"] == "embed" and roles["state_proj"] == "embed"
    assert set(roles) == {n for n, m in policy.named_modules() if isinstance(m, torch.nn.Linear)}


# ----------------------------------------------------------------------------- sampling


def test_same_seed_bit_identical_actions(policy):
    rng = np.random.default_rng(1)
    obs = [make_obs(policy.config, rng) for _ in range(10)]

    def rollout(seed):
        policy.reset(seed)
        return np.stack([policy.select_action(o) for o in obs])

    a, b, c = rollout(123), rollout(123), rollout(124)
    assert a.dtype == np.float32 and a.shape == (10, policy.config.action_dim)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_chunk_queue_pops_n_action_steps_before_repredicting(policy, monkeypatch):
    cfg = policy.config
    calls = []
    original = VLAPolicy.predict_action_chunk

    def spy(self, batch, *a, **k):
        calls.append(self._step)
        return original(self, batch, *a, **k)

    monkeypatch.setattr(VLAPolicy, "predict_action_chunk", spy)
    policy.reset(0)
    obs = make_obs(cfg, np.random.default_rng(0))
    n = cfg.n_action_steps
    noise = torch.zeros(1, cfg.chunk_size, cfg.action_dim)
    first = policy.predict_action_chunk(
        {k: [v] if isinstance(v, str) else np.asarray(v)[None] for k, v in obs.items()}, noise=noise
    )
    calls.clear()
    actions = [policy.select_action(obs) for _ in range(2 * n + 1)]
    assert calls == [0, n, 2 * n]  # re-predicts exactly every n_action_steps control steps
    assert len(actions) == 2 * n + 1 and first.shape[1] == cfg.chunk_size


def test_noise_argument_and_inference_without_augmentation(policy):
    cfg = policy.config
    batch = make_batch(cfg, 2)
    noise = torch.randn(2, cfg.chunk_size, cfg.action_dim, generator=torch.Generator().manual_seed(5))
    a = policy.predict_action_chunk(batch, noise=noise)
    policy.train()  # augmentation is for training only; inference never shifts
    try:
        b = policy.predict_action_chunk(batch, noise=noise)
    finally:
        policy.eval()
    assert torch.equal(a, b)
    c = policy.predict_action_chunk(batch, noise=noise, num_steps=2)
    assert not torch.equal(a, c)


def test_language_padding_is_masked(policy):
    cfg = policy.config
    batch = make_batch(cfg, 2)
    noise = torch.randn(2, cfg.chunk_size, cfg.action_dim, generator=torch.Generator().manual_seed(0))
    a = policy.predict_action_chunk(batch, noise=noise)
    emb = policy.language.token_embed.weight
    saved = emb.data[0].clone()
    with torch.no_grad():
        emb.data[0] += 10.0  # the <pad> embedding must not matter
    try:
        b = policy.predict_action_chunk(batch, noise=noise)
    finally:
        with torch.no_grad():
            emb.data[0] = saved
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_random_shift_and_normalization():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    assert torch.equal(random_shift(x, 0), x)
    y = random_shift(x, 2, generator=torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    p = VLAPolicy(tiny_config(action_norm="min_max"))
    p.set_normalization(
        {
            "action_min": [-2, -1, 0, 0],
            "action_max": [2, 1, 1, 3],
            "state_mean": [1, 2, 3, 4],
            "state_std": [0, 1, 1, 1],
        }
    )
    assert p.normalizer.state_std[0] == pytest.approx(1e-3)  # std floor
    a = torch.tensor([[[-2.0, 1.0, 0.5, 3.0]]])
    torch.testing.assert_close(p.normalize_action(a), torch.tensor([[[-1.0, 1.0, 0.0, 1.0]]]))
    torch.testing.assert_close(p.unnormalize_action(p.normalize_action(a)), a)


# ----------------------------------------------------------------------------- learning


def test_loss_decreases_and_padding_is_masked():
    torch.manual_seed(0)
    cfg = tiny_config(augment_shift=0)
    policy = VLAPolicy(cfg)
    batch = make_batch(cfg, 16, seed=3)
    # the target: actions depend on the state (learnable), constant over the chunk
    state = batch["observation.state"]
    batch["action"] = torch.tanh(state[:, None, :]).expand(-1, cfg.chunk_size, -1).contiguous()
    flat = batch["action"].reshape(-1, cfg.action_dim)
    policy.set_normalization({"action_mean": flat.mean(0), "action_std": flat.std(0)})
    opt = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    policy.train()
    losses = []
    for _ in range(40):
        loss, _ = policy.compute_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-8:]) < 0.75 * np.mean(losses[:8]), losses

    # padded steps do not contribute: the loss gradient w.r.t. the predicted velocity is zero there
    pad = torch.zeros(16, cfg.chunk_size, dtype=torch.bool)
    pad[:, cfg.chunk_size // 2 :] = True
    captured = []

    def keep(module, args, out):
        out.retain_grad()
        captured.append(out)

    handle = policy.expert.register_forward_hook(keep)
    try:
        loss, _ = policy.compute_loss({**batch, "action_is_pad": pad})
        loss.backward()
    finally:
        handle.remove()
    grad = captured[0].grad
    assert grad.shape == (16, cfg.chunk_size, cfg.action_dim)
    assert torch.all(grad[pad] == 0) and torch.all(grad[~pad].abs().sum(-1) > 0)
