"""The project's small pi0-like vision-language-action policy.

Architecture (module paths as in ``named_modules()``)::

    vision.stem.{i}.{conv,norm}   stride-2 3x3 conv + GroupNorm + GELU stages (64² -> 8×8)
    vision.proj                   Linear(C -> d) per grid cell, + learned 2-D (row + col) position embeddings
    language.token_embed          word embeddings (vocab from the training instructions) + learned positions
    state_proj                    Linear(state_dim -> d): one state token
    backbone.layers.{i}           pre-LN transformer layer over [image, language, state] tokens
        .attn.{q,k,v,o}_proj        nn.Linear; .attn.sdpa wraps scaled_dot_product_attention(q, k, v, mask)
        .mlp.{fc1,fc2}              nn.Linear (GELU between)
    backbone                      returns the final-LayerNorm output (B, P, d)   -> site "backbone.out"
    expert.action_in / time_mlp_in / time_mlp_out     noisy action chunk + flow time -> H action tokens
    expert.layers.{i}             pre-LN layer over the H action tokens; its attention queries come from the
                                  action tokens, keys/values over concat(backbone output, action tokens)
                                  (pi0 prefix attention; the prefix K/V are computed once per chunk)
                                  forward returns the action-token residual stream (B, H, d) -> "expert.layer{i}"
    expert.norm, expert.action_out   LayerNorm + Linear(d -> action_dim): flow velocity

Flow matching (pi0 convention): ``x_t = t·ε + (1−t)·a``, target ``u = ε − a``,
``t ~ Beta(1.5, 1)·0.999 + 0.001``; inference integrates ``dx = v dt`` from t = 1 to 0 in K Euler steps,
each wrapped in ``annotate(denoise_step=k)``; each chunk prediction is wrapped in ``annotate(step=t)``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from latentstack.core.device import processor_on
from latentstack.latent.context import annotate
from latentstack.latent.site import Site
from latentstack.policies.protocol import ActionChunkQueue, Observation
from latentstack.policies.vla.configuration_vla import VLAConfig
from latentstack.policies.vla.cuda_graph_vla import ChunkGraphCache
from latentstack.policies.vla.processor_vla import VLAInputs, VLAProcessor
from latentstack.policies.vla.tokenizer import WordTokenizer

# --------------------------------------------------------------------------- building blocks


class SDPA(nn.Module):
    """``scaled_dot_product_attention`` as a module so its inputs are a hookable site.

    Inputs (positional): ``q (B, nh, Lq, hd)``, ``k (B, nh, Lk, hd)``, ``v (B, nh, Lk, hd)``,
    ``attn_mask`` bool ``(B, 1, 1, Lk)`` (True = attend) or None. Logits are
    ``q·kᵀ/√hd``; scaling ``q[:, h]`` scales head h's logits (QuantVLA ATM).
    """

    def forward(self, q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)


class Attention(nn.Module):
    """Multi-head attention with plain ``nn.Linear`` projections ``q_proj, k_proj, v_proj, o_proj``.

    Heads are contiguous slices of the projection outputs: head h = channels ``[h·hd, (h+1)·hd)``.
    No q/k normalization sits between the projections and the logits.
    """

    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.o_proj = nn.Linear(d_model, d_model)
        self.sdpa = SDPA()

    def _split(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def project_kv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values of ``x`` in head layout (B, nh, L, hd)."""
        return self._split(self.k_proj(x)), self._split(self.v_proj(x))

    def forward(
        self, x: Tensor, attn_mask: Tensor | None = None, prefix_kv: tuple[Tensor, Tensor] | None = None
    ) -> Tensor:
        q = self._split(self.q_proj(x))
        k, v = self.project_kv(x)
        if prefix_kv is not None:
            pk, pv = prefix_kv
            if pk.shape[0] != q.shape[0]:  # one prefix shared by several noise samples
                rep = q.shape[0] // pk.shape[0]
                pk, pv = pk.repeat_interleave(rep, 0), pv.repeat_interleave(rep, 0)
            k = torch.cat([pk, k], dim=2)
            v = torch.cat([pv, v], dim=2)
        out = self.sdpa(q, k, v, attn_mask)
        b, _, n, _ = out.shape
        return self.o_proj(out.transpose(1, 2).reshape(b, n, -1))


class MLP(nn.Module):
    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class BackboneLayer(nn.Module):
    """Pre-LN transformer layer over the prefix tokens (optionally attending to extra prefix K/V)."""

    def __init__(self, cfg: VLAConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attn = Attention(cfg.d_model, cfg.num_heads)
        self.ln2 = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.mlp = MLP(cfg.d_model, cfg.mlp_dim)

    def forward(
        self, x: Tensor, attn_mask: Tensor | None = None, prefix_kv: tuple[Tensor, Tensor] | None = None
    ) -> Tensor:
        x = x + self.attn(self.ln1(x), attn_mask, prefix_kv=prefix_kv)
        return x + self.mlp(self.ln2(x))


class Backbone(nn.Module):
    """Transformer over ``[image, language, state]`` tokens; returns the final-LN output (B, P, d)."""

    def __init__(self, cfg: VLAConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(BackboneLayer(cfg) for _ in range(cfg.backbone_layers))
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)

    def forward(self, tokens: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        x = tokens
        for layer in self.layers:
            x = layer(x, attn_mask)
        return self.norm(x)


class ExpertLayer(BackboneLayer):
    """Action-expert layer: same block, queries from the action tokens, keys/values over
    concat(backbone output, action tokens); returns the action tokens' residual stream (B, H, d)."""

    def forward(self, x: Tensor, prefix_kv: tuple[Tensor, Tensor], attn_mask: Tensor | None = None) -> Tensor:
        return super().forward(x, attn_mask, prefix_kv=prefix_kv)


def sinusoidal_time_embedding(t: Tensor, dim: int, min_period: float, max_period: float) -> Tensor:
    """pi0's sine-cosine embedding of flow time ``t (B,)`` -> (B, dim)."""
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=torch.float64, device=t.device)
    period = min_period * (max_period / min_period) ** fraction
    scaling = (2 * math.pi / period).to(t.dtype)
    x = scaling[None, :] * t[:, None]
    return torch.cat([torch.sin(x), torch.cos(x)], dim=-1)


class ActionExpert(nn.Module):
    def __init__(self, cfg: VLAConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.action_in = nn.Linear(cfg.action_dim, d)
        self.time_mlp_in = nn.Linear(2 * d, d)
        self.time_mlp_out = nn.Linear(d, d)
        self.pos_embed = nn.Parameter(torch.zeros(cfg.chunk_size, d))
        self.layers = nn.ModuleList(ExpertLayer(cfg) for _ in range(cfg.expert_layers))
        self.norm = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.action_out = nn.Linear(d, cfg.action_dim)

    def prefix_cache(self, prefix: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Per-layer keys/values of the backbone output: computed once per chunk, reused over K steps."""
        return [layer.attn.project_kv(prefix) for layer in self.layers]

    def forward(
        self, x_t: Tensor, t: Tensor, cache: Sequence[tuple[Tensor, Tensor]], attn_mask: Tensor | None
    ) -> Tensor:
        """``x_t (B, H, A)`` noisy (normalized) actions, ``t (B,)`` flow time -> velocity (B, H, A)."""
        cfg = self.cfg
        cdt = self.pos_embed.dtype  # the compute dtype (bf16 after set_inference_dtype); casts are no-ops in fp32
        a = self.action_in(x_t.to(cdt))
        te = sinusoidal_time_embedding(t, a.shape[-1], cfg.time_embed_min_period, cfg.time_embed_max_period)
        h = torch.cat([a, te[:, None, :].expand_as(a).to(a.dtype)], dim=-1)
        h = self.time_mlp_out(F.silu(self.time_mlp_in(h))) + self.pos_embed[: x_t.shape[1]]
        for layer, kv in zip(self.layers, cache):
            h = layer(h, kv, attn_mask)
        return self.action_out(self.norm(h)).to(x_t.dtype)


class VisionEncoder(nn.Module):
    """Conv stem (stride-2 stages) -> per-cell Linear -> + learned 2-D position embeddings."""

    def __init__(self, cfg: VLAConfig) -> None:
        super().__init__()
        stages = []
        c_in = 3
        for c in cfg.vision_channels:
            stage = nn.Sequential()
            stage.add_module("conv", nn.Conv2d(c_in, c, 3, stride=2, padding=1))
            stage.add_module("norm", nn.GroupNorm(min(cfg.vision_groups, c), c))
            stage.add_module("act", nn.GELU())
            stages.append(stage)
            c_in = c
        self.stem = nn.Sequential(*stages)
        self.proj = nn.Linear(c_in, cfg.d_model)
        g = cfg.grid_size
        self.row_embed = nn.Parameter(torch.zeros(g, cfg.d_model))
        self.col_embed = nn.Parameter(torch.zeros(g, cfg.d_model))

    def forward(self, images: Tensor) -> Tensor:
        """``images`` float (B, 3, H, W) in [0, 1] -> (B, g², d)."""
        f = self.stem(images * 2.0 - 1.0)  # (B, C, g, g)
        tokens = self.proj(f.flatten(2).transpose(1, 2))
        pos = (self.row_embed[:, None, :] + self.col_embed[None, :, :]).reshape(-1, tokens.shape[-1])
        return tokens + pos


class LanguageEmbedding(nn.Module):
    def __init__(self, cfg: VLAConfig) -> None:
        super().__init__()
        self.token_embed = nn.Embedding(len(cfg.vocab), cfg.d_model)
        self.pos_embed = nn.Parameter(torch.zeros(cfg.max_lang_len, cfg.d_model))

    def forward(self, ids: Tensor) -> Tensor:
        return self.token_embed(ids) + self.pos_embed[: ids.shape[1]]


class Normalizer(nn.Module):
    """Dataset statistics as persistent buffers (they live in ``model.safetensors``)."""

    def __init__(self, state_dim: int, action_dim: int) -> None:
        super().__init__()
        self.register_buffer("state_mean", torch.zeros(state_dim))
        self.register_buffer("state_std", torch.ones(state_dim))
        self.register_buffer("action_mean", torch.zeros(action_dim))
        self.register_buffer("action_std", torch.ones(action_dim))
        self.register_buffer("action_min", -torch.ones(action_dim))
        self.register_buffer("action_max", torch.ones(action_dim))


def random_shift(images: Tensor, pad: int, generator: torch.Generator | None = None) -> Tensor:
    """DrQ augmentation: replicate-pad by ``pad`` and crop back at a random integer offset per sample."""
    if pad <= 0:
        return images
    b, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=images.device)
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=images.device)
    rows = dy[:, None] + torch.arange(h, device=images.device)[None, :]  # (B, H)
    cols = dx[:, None] + torch.arange(w, device=images.device)[None, :]  # (B, W)
    bidx = torch.arange(b, device=images.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[bidx, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


# --------------------------------------------------------------------------- the policy


class VLAPolicy(nn.Module):
    """Small pi0-like VLA implementing the :class:`latentstack.policies.protocol.Policy` protocol."""

    def __init__(self, config: VLAConfig) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = WordTokenizer(config.vocab, max_len=config.max_lang_len)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.vision = VisionEncoder(config)
            self.language = LanguageEmbedding(config)
            self.state_proj = nn.Linear(config.state_dim, config.d_model)
            self.backbone = Backbone(config)
            self.expert = ActionExpert(config)
            self.normalizer = Normalizer(config.state_dim, config.action_dim)
            self._init_weights()
        self._processor = VLAProcessor(config, self.tokenizer)
        self._queue = ActionChunkQueue(config.n_action_steps)
        # Sampling noise is drawn on this CPU generator on every device and then moved: the noise stream of an
        # evaluation seed (and so its outputs up to float rounding) is the same on CPU and GPU.
        self._generator = torch.Generator().manual_seed(config.seed)
        self._step = 0
        # CUDA-graph chunk prediction: None = whenever on CUDA (see predict_action_chunk); False = always eager
        self.cuda_graph: bool | None = None
        self._graphs = ChunkGraphCache()
        self._graph_version = 0  # bumped by .to() & co.: captured graphs re-check the weights' storages
        self.eval()

    # ---------------------------------------------------------------- device / processor
    @property
    def device(self) -> torch.device:
        """Where the weights live (``.to(device)`` moves them; the processor follows)."""
        return self.normalizer.state_mean.device

    @property
    def processor(self) -> VLAProcessor:
        """The observation processor, placed on the model's current device."""
        return processor_on(self._processor, self.device)

    # ---------------------------------------------------------------- init / stats
    def _init_weights(self) -> None:
        n_layers = self.config.backbone_layers + self.config.expert_layers
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear):
                std = 0.02
                if name.endswith(("o_proj", "fc2")):
                    std = 0.02 / math.sqrt(2 * n_layers)
                nn.init.normal_(m.weight, std=std)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
        for p in (
            self.vision.row_embed,
            self.vision.col_embed,
            self.language.pos_embed,
            self.expert.pos_embed,
        ):
            nn.init.normal_(p, std=0.02)

    @torch.no_grad()
    def set_normalization(self, stats: Mapping[str, Any]) -> None:
        """Copy dataset statistics (keys ``state_mean``, ``state_std``, ``action_mean``, ``action_std``,
        ``action_min``, ``action_max``; any subset) into the normalizer buffers. Stds are floored at 1e-3."""
        for key, value in stats.items():
            buf = getattr(self.normalizer, key, None)
            if not isinstance(buf, Tensor):
                raise KeyError(f"unknown normalization statistic {key!r}")
            v = torch.as_tensor(np.asarray(value), dtype=buf.dtype).reshape(buf.shape).to(buf.device)
            if key.endswith("_std"):
                v = v.clamp_min(1e-3)
            buf.copy_(v)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ---------------------------------------------------------------- normalization
    def normalize_state(self, s: Tensor) -> Tensor:
        n = self.normalizer
        return (s - n.state_mean) / n.state_std

    def normalize_action(self, a: Tensor) -> Tensor:
        n = self.normalizer
        if self.config.action_norm == "mean_std":
            return (a - n.action_mean) / n.action_std
        span = (n.action_max - n.action_min).clamp_min(1e-3)
        return (a - n.action_min) / span * 2.0 - 1.0

    def unnormalize_action(self, a: Tensor) -> Tensor:
        n = self.normalizer
        if self.config.action_norm == "mean_std":
            return a * n.action_std + n.action_mean
        span = (n.action_max - n.action_min).clamp_min(1e-3)
        return (a + 1.0) * 0.5 * span + n.action_min

    # ---------------------------------------------------------------- inputs
    def embed_prefix(
        self, images: Tensor, state: Tensor, lang_ids: Tensor, lang_mask: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        """Prefix tokens (B, P, d) and the key mask ``(B, 1, 1, P)``. ``lang_mask`` None means nothing is
        padded (the processor decides that on the host), and then no mask is built: no device sync here."""
        cdt = self.compute_dtype  # float32 unless set_inference_dtype: then these casts are no-ops
        img = self.vision(images.to(cdt))
        lang = self.language(lang_ids)
        st = self.state_proj(self.normalize_state(state.float()).to(cdt))[:, None, :]
        tokens = torch.cat([img, lang, st], dim=1)
        if lang_mask is None:
            return tokens, None
        b = tokens.shape[0]
        ones_img = torch.ones(b, img.shape[1], dtype=torch.bool, device=tokens.device)
        ones_st = torch.ones(b, 1, dtype=torch.bool, device=tokens.device)
        key_mask = torch.cat([ones_img, lang_mask, ones_st], dim=1)
        return tokens, key_mask[:, None, None, :]

    def encode_prefix(
        self, batch: Mapping[str, Any] | VLAInputs, augment: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """Backbone output (B, P, d) and prefix key mask for a batch of observations (raw: converted by the
        processor; :class:`VLAInputs`: used as is, moved to the model's device if needed)."""
        inputs = self.processor(batch)
        images = inputs.images
        if augment and self.config.augment_shift > 0:
            images = random_shift(images, self.config.augment_shift)
        tokens, key_mask = self.embed_prefix(images, inputs.state, inputs.lang_ids, inputs.lang_mask)
        return self.backbone(tokens, key_mask), key_mask

    def _expert_mask(self, prefix_mask: Tensor | None, horizon: int, repeat: int = 1) -> Tensor | None:
        if prefix_mask is None:
            return None
        m = prefix_mask
        if repeat > 1:
            m = m.repeat_interleave(repeat, 0)
        act = torch.ones(*m.shape[:-1], horizon, dtype=torch.bool, device=m.device)
        return torch.cat([m, act], dim=-1)

    # ---------------------------------------------------------------- training
    def compute_loss(self, batch: Mapping[str, Any]) -> tuple[Tensor, dict[str, float]]:
        """Flow-matching loss. ``batch``: image, state, instruction (or ``lang_tokens``), ``action``
        (B, H, A) raw actions, optional ``action_is_pad`` (B, H) bool (True = past the episode end)."""
        cfg = self.config
        inputs = self.processor(batch)
        if inputs.action is None:
            raise KeyError("compute_loss needs 'action' in the batch")
        prefix, prefix_mask = self.encode_prefix(inputs, augment=self.training)
        actions = self.normalize_action(inputs.action)
        b, h, _ = actions.shape
        if h != cfg.chunk_size:
            raise ValueError(f"action chunk has {h} steps, config.chunk_size={cfg.chunk_size}")
        dev = actions.device
        valid = (
            torch.ones(b, h, dtype=torch.bool, device=dev)
            if inputs.action_is_pad is None
            else ~inputs.action_is_pad
        )
        n = cfg.flow_samples_per_obs
        if n > 1:
            actions = actions.repeat_interleave(n, 0)
            valid = valid.repeat_interleave(n, 0)
        noise = torch.randn_like(actions)
        # Beta parameters as float32 tensors on the device: on the CPU the same draw as Beta(float, float)
        alpha = torch.tensor(cfg.time_beta_alpha, dtype=torch.float32, device=dev)
        beta = torch.tensor(cfg.time_beta_beta, dtype=torch.float32, device=dev)
        t = torch.distributions.Beta(alpha, beta).sample((actions.shape[0],))
        t = t * (1.0 - cfg.min_time) + cfg.min_time
        tb = t[:, None, None]
        x_t = tb * noise + (1.0 - tb) * actions
        target = noise - actions
        cache = self.expert.prefix_cache(prefix)
        v = self.expert(x_t, t, cache, self._expert_mask(prefix_mask, h, n))
        err = (v - target).pow(2).mean(-1)  # (B·n, H)
        w = valid.float()
        loss = (err * w).sum() / w.sum().clamp_min(1.0)
        return loss, {"loss": float(loss.detach())}

    def forward(self, batch: Mapping[str, Any]) -> tuple[Tensor, dict[str, float]]:
        return self.compute_loss(batch)

    # ---------------------------------------------------------------- inference
    def sample_actions(
        self,
        prefix: Tensor,
        prefix_mask: Tensor | None,
        noise: Tensor | None = None,
        num_steps: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """K Euler steps of the flow from t=1 (noise) to t=0; returns normalized actions (B, H, A)."""
        cfg = self.config
        b = prefix.shape[0]
        k_steps = int(num_steps or cfg.num_inference_steps)
        if noise is None:
            # drawn on the generator's own device (the policy's is a CPU one: same noise on every device,
            # bit-identical to the pre-device code on the CPU), then moved to the model
            gen = generator or self._generator
            noise = torch.randn(b, cfg.chunk_size, cfg.action_dim, generator=gen, device=gen.device)
        # the flow state stays at least fp32 (bf16 networks still integrate in fp32); fp32 models: unchanged
        x = noise.to(device=prefix.device, dtype=torch.promote_types(prefix.dtype, torch.float32))
        cache = self.expert.prefix_cache(prefix)
        mask = self._expert_mask(prefix_mask, x.shape[1])
        dt = -1.0 / k_steps
        for k in range(k_steps):
            t = torch.full((b,), 1.0 + k * dt, dtype=x.dtype, device=x.device)
            with annotate(denoise_step=k):
                v = self.expert(x, t, cache, mask)
            x = x + dt * v
        return x

    def _chunk(
        self,
        batch: Mapping[str, Any] | VLAInputs,
        noise: Tensor | None,
        num_steps: int | None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """The chunk computation itself (eager, or what the CUDA graph captures with static buffers)."""
        prefix, prefix_mask = self.encode_prefix(batch, augment=False)
        x = self.sample_actions(prefix, prefix_mask, noise=noise, num_steps=num_steps, generator=generator)
        actions = self.unnormalize_action(x)
        if self.config.clip_actions:
            actions = actions.clamp(self.config.action_low, self.config.action_high)
        return actions

    @torch.inference_mode()
    def predict_action_chunk(
        self,
        batch: Mapping[str, Any],
        noise: Tensor | None = None,
        num_steps: int | None = None,
        generator: torch.Generator | None = None,
        graph: bool | None = None,
    ) -> Tensor:
        """Batched chunk prediction -> de-normalized actions (B, H, A) (clipped if ``clip_actions``).

        Accepts ``observation.image``/``image`` (uint8 or float [0,1], channel-first or -last),
        ``observation.state``/``state``, and ``task``/``instruction`` (str or list) or ``lang_tokens``.
        Noise comes from ``generator`` or the policy's own generator (reseeded by :meth:`reset`).

        ``graph``: run the whole chunk as a captured CUDA graph (:mod:`.cuda_graph_vla`); ``None`` follows
        ``self.cuda_graph`` (``None``: on whenever the model is on CUDA, so ``lstack eval --device cuda`` and the
        policy node's ``device: cuda`` use it; ``LATENTSTACK_CUDA_GRAPH=0`` turns that default off). On the
        CPU, in training mode, or with hooks that must run per call (Taps), this is the eager path, unchanged.
        Graph and eager draw the same noise from the same generator in the same order.
        """
        with annotate(step=self._step):
            if self._graph_wanted(graph):
                actions = self._predict_graph(batch, noise, num_steps, generator)
                if actions is not None:
                    return actions
            return self._chunk(batch, noise, num_steps, generator)

    # ---------------------------------------------------------------- GPU inference
    @property
    def compute_dtype(self) -> torch.dtype:
        """dtype the networks run in (float32, or what :meth:`set_inference_dtype` set); normalizer stays fp32."""
        return self.vision.row_embed.dtype

    def set_inference_dtype(self, dtype: torch.dtype | str) -> VLAPolicy:
        """Cast the networks (vision, language, state projection, backbone, expert) to ``dtype`` for inference,
        e.g. ``torch.bfloat16`` on a GPU; the normalization statistics, the flow state ``x`` and the returned
        actions stay float32. ``torch.float32`` undoes it (up to the rounding already applied)."""
        dt = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        for m in (self.vision, self.language, self.state_proj, self.backbone, self.expert):
            m.to(dt)
        self.clear_cuda_graphs()
        return self

    def clear_cuda_graphs(self) -> None:
        """Drop captured chunk graphs (they are also re-captured automatically when weights move or change)."""
        self._graphs.clear()
        self._graph_version += 1

    def _apply(self, *args: Any, **kwargs: Any) -> Any:
        # .to() / .cuda() / .float() may move every storage a captured graph reads
        self.__dict__["_graph_version"] = self.__dict__.get("_graph_version", 0) + 1
        return super()._apply(*args, **kwargs)

    def _graph_wanted(self, graph: bool | None) -> bool:
        if graph is None and os.environ.get("LATENTSTACK_CUDA_GRAPH", "1") == "0":  # process-wide escape hatch
            return False
        want = self.cuda_graph if graph is None else graph
        on_cuda = self.device.type == "cuda"
        if want is None:
            return on_cuda and not self.training
        return bool(want) and on_cuda and not self.training  # CPU / training: the eager no-op fallback

    def _predict_graph(
        self, batch: Mapping[str, Any], noise: Tensor | None, num_steps: int | None,
        generator: torch.Generator | None,
    ) -> Tensor | None:
        cfg = self.config
        inputs = self.processor(batch)  # host-side conversions, outside the graph
        if noise is None:  # the same draw sample_actions makes, on the same generator
            gen = generator or self._generator
            noise = torch.randn(inputs.batch_size, cfg.chunk_size, cfg.action_dim, generator=gen, device=gen.device)
        noise = noise.to(self.device)
        k = int(num_steps or cfg.num_inference_steps)
        return self._graphs.run(self, lambda i, n, s: self._chunk(i, n, s), inputs, noise, k)

    # ---------------------------------------------------------------- Policy protocol
    def reset(self, seed: int | None = None) -> None:
        """New episode: clear the chunk queue and step counter; ``seed`` reseeds the sampling noise
        (``None`` continues the current noise stream)."""
        self._queue.clear()
        self._step = 0
        if seed is not None:
            self._generator.manual_seed(int(seed))

    def select_action(self, obs: Observation) -> np.ndarray:
        if self._queue.needs_chunk():
            # the processor converts (on the model's device) inside predict_action_chunk; kept as a call on
            # self so instance-level wrappers of predict_action_chunk (benchmarks, steering) still see it
            batch = self._processor.observation_batch(obs)
            chunk = self.predict_action_chunk(batch)[0]
            self._queue.push_chunk(self._processor.postprocess(chunk))
        self._step += 1
        return self._queue.pop()

    def latent_sites(self) -> dict[str, Site]:
        sites = {
            f"expert.layer{i}": Site(
                f"expert.layers.{i}",
                description=f"action-expert layer {i} output: action-token residual stream (B, H, d); "
                "called once per denoising step (annotation 'denoise_step')",
            )
            for i in range(self.config.expert_layers)
        }
        sites["backbone.out"] = Site(
            "backbone",
            description="final backbone output (B, P, d) over [image, language, state] tokens; "
            "computed once per chunk",
        )
        return sites

    def linear_roles(self) -> dict[str, str]:
        """Role of every ``nn.Linear`` by module path: ``backbone.attn``, ``backbone.mlp``,
        ``expert.attn``, ``expert.mlp``, ``vision``, ``embed`` (state/action/time embeddings) or ``head``."""
        roles: dict[str, str] = {}
        for name, m in self.named_modules():
            if not isinstance(m, nn.Linear):
                continue
            if name.startswith(("backbone.layers.", "expert.layers.")):
                part = "attn" if ".attn." in name else "mlp"
                roles[name] = f"{name.split('.')[0]}.{part}"
            elif name.startswith("vision."):
                roles[name] = "vision"
            elif name == "expert.action_out":
                roles[name] = "head"
            else:
                roles[name] = "embed"
        return roles


__all__ = ["SDPA", "Attention", "VLAConfig", "VLAInputs", "VLAPolicy", "VLAProcessor", "random_shift",
           "sinusoidal_time_embedding"]
