"""A small frozen, state-only, action-chunked base policy for KORR on robosuite.

An MLP maps the min–max-normalized state to a chunk of ``horizon`` normalized actions, trained by
behaviour cloning (MSE) on scripted-expert demos; the first ``n_action_steps`` are executed open loop
(``ActionChunkQueue``), as the spec's Diffusion Policy base does (obs_horizon 1, pred 32 / act 8 there;
smaller here). Saved as an artifact of type ``"korr_base"`` (:mod:`latentstack.core.artifacts`); the loader
refuses mismatches.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from latentstack.core.config import ModelConfig, register_config
from latentstack.core.pretrained import load_pretrained, save_pretrained
from latentstack.policies.protocol import ActionChunkQueue, Observation

from .processor_korr import KorrProcessor, module_device


# keyword-only: obs_dim / action_dim have no default and follow the base's defaulted device / dtype
@register_config("korr_base")
@dataclass(frozen=True, kw_only=True)
class ChunkBaseConfig(ModelConfig):
    obs_dim: int
    action_dim: int
    horizon: int = 16
    n_action_steps: int = 8
    hidden_dim: int = 256
    num_layers: int = 3
    obs_clamp: float | None = 3.0  # clamp of the normalized state (spec §2: ±3); None = no clamp

    # ranges checked before anything is built (issue 14: a config.json may be hostile); wide for this project
    BOUNDS: ClassVar[Mapping[str, tuple[float, float]]] = {
        "obs_dim": (1, 65536), "action_dim": (1, 4096), "horizon": (1, 4096), "n_action_steps": (1, 4096),
        "hidden_dim": (1, 65536), "num_layers": (1, 64), "obs_clamp": (0.0, 1e6),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.obs_dim < 1 or self.action_dim < 1:
            raise ValueError(f"dims must be positive: obs {self.obs_dim}, action {self.action_dim}")
        if self.n_action_steps > self.horizon:
            raise ValueError(f"n_action_steps {self.n_action_steps} > horizon {self.horizon}")


class MinMaxNormalizer(nn.Module):
    """``x_n = 2(x − min)/(max − min) − 1`` (demo statistics), optionally clamped (obs: ±3, spec §2)."""

    def __init__(self, low: torch.Tensor, high: torch.Tensor, clamp: float | None = None) -> None:
        super().__init__()
        self.register_buffer("low", low.float().clone())
        self.register_buffer("high", high.float().clone())
        self.clamp = clamp

    @classmethod
    def fit(cls, x: np.ndarray | torch.Tensor, clamp: float | None = None, min_range: float = 1e-4
            ) -> MinMaxNormalizer:
        t = torch.as_tensor(np.asarray(x), dtype=torch.float32).reshape(-1, np.shape(x)[-1])
        lo, hi = t.min(0).values, t.max(0).values
        mid, half = (lo + hi) / 2, ((hi - lo) / 2).clamp_min(min_range / 2)  # constant dims stay finite
        return cls(mid - half, mid + half, clamp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = 2 * (x - self.low) / (self.high - self.low) - 1
        return y if self.clamp is None else y.clamp(-self.clamp, self.clamp)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return (y + 1) / 2 * (self.high - self.low) + self.low


class ChunkMLPBase(nn.Module):
    """Normalized state → (horizon, action_dim) normalized action chunk."""

    def __init__(self, config: ChunkBaseConfig, obs_norm: MinMaxNormalizer, action_norm: MinMaxNormalizer) -> None:
        super().__init__()
        self.config = config
        c = config
        layers: list[nn.Module] = []
        d = c.obs_dim
        for _ in range(c.num_layers):
            layers += [nn.Linear(d, c.hidden_dim), nn.GELU()]
            d = c.hidden_dim
        layers.append(nn.Linear(d, c.horizon * c.action_dim))
        self.net = nn.Sequential(*layers)
        self.obs_norm = obs_norm
        self.action_norm = action_norm

    @property
    def device(self) -> torch.device:
        """Where the weights (and the normalizers' buffers) live."""
        return module_device(self)

    def forward(self, obs_n: torch.Tensor) -> torch.Tensor:
        return self.net(obs_n).reshape(*obs_n.shape[:-1], self.config.horizon, self.config.action_dim)

    def latent_sites(self) -> dict[str, Any]:
        from latentstack.latent import Site

        return {"base.hidden": Site(f"net.{2 * self.config.num_layers - 1}", description="last hidden layer")}


def chunk_targets(actions: Sequence[np.ndarray], horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """(episode step → next ``horizon`` actions) pairs, padding past the end with the last action."""
    idx, tgt = [], []
    for ep, a in enumerate(actions):
        pad = np.concatenate([a, np.repeat(a[-1:], horizon, 0)], 0)
        for t in range(len(a)):
            idx.append((ep, t))
            tgt.append(pad[t:t + horizon])
    return np.asarray(idx), np.stack(tgt)


def train_chunk_base(obs: Sequence[np.ndarray], actions: Sequence[np.ndarray], config: ChunkBaseConfig,
                     steps: int = 3000, batch_size: int = 256, lr: float = 1e-3, seed: int = 0,
                     progress: bool = True) -> tuple[ChunkMLPBase, list[float]]:
    """Behaviour cloning (MSE on normalized chunks), AdamW with cosine decay, on the shared loop
    :func:`latentstack.training.train_supervised`. Returns (model, per-step losses)."""
    from latentstack.training import train_supervised

    torch.manual_seed(seed)
    all_obs = np.concatenate(obs, 0)
    all_act = np.concatenate(actions, 0)
    obs_norm = MinMaxNormalizer.fit(all_obs, clamp=config.obs_clamp)
    act_norm = MinMaxNormalizer.fit(all_act)
    model = ChunkMLPBase(config, obs_norm, act_norm)
    _, tgt = chunk_targets(actions, config.horizon)
    x = obs_norm(torch.from_numpy(all_obs).float())
    y = act_norm(torch.from_numpy(tgt).float())
    opt = torch.optim.AdamW(model.net.parameters(), lr=lr, weight_decay=1e-6)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(seed)

    def step_fn(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        b = torch.randint(0, len(x), (batch_size,), generator=g)
        return torch.mean((model(x[b]) - y[b]) ** 2), {}

    result = train_supervised(model, step_fn, opt, steps=steps, scheduler=sched, state={"sampler": g},
                              progress=progress, desc="BC base")
    model.eval()
    return model, [h["loss"] for h in result.history]


def save_chunk_base(model: ChunkMLPBase, directory: str | Path, meta: Mapping[str, Any] | None = None) -> Path:
    """A ``"korr_base"`` artifact (weights incl. the normalizers' min/max); ``meta``: provenance of the demos."""
    if model.obs_norm.clamp != model.config.obs_clamp:
        raise ValueError(f"obs normalizer clamp {model.obs_norm.clamp} != config.obs_clamp {model.config.obs_clamp}")
    return save_pretrained(model, directory, model.config, extra=dict(meta or {}))


def _build_chunk_base(config: ChunkBaseConfig) -> ChunkMLPBase:
    d_o, d_a = config.obs_dim, config.action_dim  # normalizer statistics come with the weights
    return ChunkMLPBase(config, MinMaxNormalizer(torch.zeros(d_o), torch.ones(d_o), config.obs_clamp),
                        MinMaxNormalizer(torch.zeros(d_a), torch.ones(d_a)))


def load_chunk_base(directory: str | Path, device: str | None = None) -> tuple[ChunkMLPBase, dict[str, Any]]:
    """(model in eval mode, meta) of a ``"korr_base"`` artifact."""
    model, art = load_pretrained(directory, _build_chunk_base, expect_type=ChunkBaseConfig.type, device=device)
    return model, art.extra


def load_base_policy(directory: str | Path, *, device: str | None = None) -> ChunkBasePolicy:
    """The base as a Policy (the artifact-type loader of ``"korr_base"``)."""
    return ChunkBasePolicy(load_chunk_base(directory, device=device)[0])


class BatchedChunkBase:
    """Trainer-side view of the base: one chunk queue shared by all envs (they reset together), normalized
    actions out, raw observations in."""

    def __init__(self, model: ChunkMLPBase) -> None:
        self.model = model
        self._queue: list[torch.Tensor] = []

    def reset(self, num_envs: int, seed: int) -> None:
        self._queue = []

    @torch.no_grad()
    def action(self, obs: torch.Tensor) -> torch.Tensor:
        if not self._queue:
            chunk = self.model(self.model.obs_norm(obs.float().to(self.model.device)))
            self._queue = [chunk[:, i] for i in range(self.model.config.n_action_steps)]
        return self._queue.pop(0)

    def normalize_obs(self, obs: torch.Tensor) -> torch.Tensor:
        return self.model.obs_norm(obs.float())

    def denormalize_action(self, a: torch.Tensor) -> torch.Tensor:
        return self.model.action_norm.inverse(a)


class ChunkBasePolicy:
    """The base as a :class:`latentstack.policies.Policy` (single env, ``obs["state"]``)."""

    def __init__(self, model: ChunkMLPBase) -> None:
        self.model = model
        self.queue = ActionChunkQueue(model.config.n_action_steps)
        self.processor = KorrProcessor()  # follows the model's device on every call

    @property
    def device(self) -> torch.device:
        return self.model.device

    def to(self, device: torch.device | str) -> ChunkBasePolicy:
        """Move the base model (it is not an ``nn.Module`` wrapper itself)."""
        self.model.to(device)
        return self

    def reset(self, seed: int | None = None) -> None:
        self.queue.clear()

    @torch.no_grad()
    def select_action(self, obs: Observation) -> np.ndarray:
        state = np.asarray(obs["state"], dtype=np.float32)
        if state.shape != (self.model.config.obs_dim,):
            raise ValueError(f"obs['state'] must have shape ({self.model.config.obs_dim},), got {state.shape}")
        if self.queue.needs_chunk():
            proc = self.processor.to(self.model.device)
            chunk = self.model(self.model.obs_norm(proc.tensor(state)[None]))[0]
            self.queue.push_chunk(proc.numpy(self.model.action_norm.inverse(chunk)))
        return self.queue.pop()

    def latent_sites(self) -> Mapping[str, Any]:
        return self.model.latent_sites()


__all__ = ["BatchedChunkBase", "ChunkBaseConfig", "ChunkBasePolicy", "ChunkMLPBase", "MinMaxNormalizer",
           "chunk_targets", "load_base_policy", "load_chunk_base", "save_chunk_base", "train_chunk_base"]
