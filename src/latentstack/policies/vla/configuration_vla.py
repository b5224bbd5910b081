"""Configuration of the project's small pi0-like VLA (``VLAPolicy``).

A frozen :class:`~latentstack.core.config.ModelConfig` registered as type ``"vla"``; artifacts store it as
JSON (``to_dict`` / ``from_dict``), including the word-level tokenizer vocabulary, so an artifact folder is
self-contained.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from latentstack.core.config import PLACEMENT_FIELDS, ModelConfig, register_config

# Fields that only change how an already-trained model is *run*, never its weights;
# ``from_pretrained``/``make_policy`` accept overrides for these and the placement fields (``device``,
# ``dtype``) and nothing else.
RUNTIME_FIELDS: frozenset[str] = frozenset({"num_inference_steps", "n_action_steps", "clip_actions", "seed"})
# Fields a trained artifact may be loaded with different values of (never part of the architecture check).
OVERRIDABLE_FIELDS: frozenset[str] = RUNTIME_FIELDS | PLACEMENT_FIELDS


@register_config("vla")
@dataclass(frozen=True)
class VLAConfig(ModelConfig):
    """Hyper-parameters of :class:`latentstack.policies.vla.VLAPolicy`.

    Token layout of the backbone prefix: ``[image tokens (grid²), language tokens (max_lang_len),
    state token]``; the action expert runs over ``chunk_size`` action tokens.
    """

    # --- observation / action spaces
    image_size: int = 64  # square RGB input, H = W
    state_dim: int = 4
    action_dim: int = 4
    # --- vision: conv stem, each stage a stride-2 3x3 conv + GroupNorm + GELU
    vision_channels: tuple[int, ...] = (32, 64, 128)  # 64² -> 8×8 grid with 3 stages
    vision_groups: int = 8
    augment_shift: int = 4  # DrQ random shift (pad + random crop), train only; 0 = off
    # --- language
    vocab: tuple[str, ...] = ("<pad>", "<unk>")  # filled from the training instructions
    max_lang_len: int = 12
    # --- transformer widths
    d_model: int = 128
    num_heads: int = 4
    mlp_ratio: float = 4.0
    backbone_layers: int = 4
    expert_layers: int = 4
    norm_eps: float = 1e-5
    # --- flow matching action expert (pi0 convention)
    chunk_size: int = 16  # H, actions per predicted chunk
    n_action_steps: int = 8  # actions executed from each chunk before re-predicting
    num_inference_steps: int = 10  # K Euler steps from t=1 to t=0
    time_beta_alpha: float = 1.5  # t ~ Beta(alpha, beta) * (1 - min_t) + min_t
    time_beta_beta: float = 1.0
    min_time: float = 0.001
    time_embed_min_period: float = 4e-3
    time_embed_max_period: float = 4.0
    flow_samples_per_obs: int = 1  # noise/time draws per observation per training step
    # --- normalization / output
    action_norm: str = "mean_std"  # "mean_std" | "min_max" (to [-1, 1])
    clip_actions: bool = True  # clip de-normalized actions to [action_low, action_high]
    action_low: float = -1.0
    action_high: float = 1.0
    # --- init / sampling
    seed: int = 0  # weight-init seed (fresh models) and default noise seed
    name: str = "vla_small"

    # Ranges checked before anything is built (issue 14): wide enough for any model this project trains (the
    # shipped one is d_model 128, 64² images), narrow enough that a hostile config.json cannot ask for a
    # multi-GB model or a million denoising steps per action.
    BOUNDS: ClassVar[Mapping[str, tuple[float, float]]] = {
        "image_size": (8, 1024), "state_dim": (1, 4096), "action_dim": (1, 4096),
        "vision_channels": (1, 2048), "vision_groups": (1, 512), "augment_shift": (0, 256),
        "max_lang_len": (1, 1024), "d_model": (1, 4096), "num_heads": (1, 256), "mlp_ratio": (0.01, 16.0),
        "backbone_layers": (0, 64), "expert_layers": (1, 64), "norm_eps": (1e-12, 1.0),
        "chunk_size": (1, 1024), "n_action_steps": (1, 1024), "num_inference_steps": (1, 1000),
        "time_beta_alpha": (1e-3, 1e3), "time_beta_beta": (1e-3, 1e3), "min_time": (0.0, 1.0),
        "time_embed_min_period": (1e-9, 1e9), "time_embed_max_period": (1e-9, 1e9),
        "flow_samples_per_obs": (1, 1024), "action_low": (-1e9, 1e9), "action_high": (-1e9, 1e9),
        "seed": (-(2**63), 2**64 - 1),  # what torch.manual_seed accepts
    }
    MAX_VOCAB: ClassVar[int] = 1_000_000
    MAX_VISION_STAGES: ClassVar[int] = 8

    def __post_init__(self) -> None:
        # JSON/YAML give lists; keep the dataclass hashable and immutable
        if not 1 <= len(self.vision_channels) <= self.MAX_VISION_STAGES:
            raise ValueError(f"vision_channels needs 1..{self.MAX_VISION_STAGES} stages, got {self.vision_channels}")
        if len(self.vocab) > self.MAX_VOCAB:
            raise ValueError(f"vocab has {len(self.vocab)} words (at most {self.MAX_VOCAB})")
        object.__setattr__(self, "vision_channels", tuple(self.vision_channels))
        object.__setattr__(self, "vocab", tuple(str(w) for w in self.vocab))
        super().__post_init__()  # device / dtype / BOUNDS (before any arithmetic on the sizes below)
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model={self.d_model} not divisible by num_heads={self.num_heads}")
        if self.image_size % (2 ** len(self.vision_channels)):
            raise ValueError(
                f"image_size={self.image_size} not divisible by 2**{len(self.vision_channels)} (conv stages)"
            )
        if not 1 <= self.n_action_steps <= self.chunk_size:
            raise ValueError(
                f"n_action_steps={self.n_action_steps} must be in [1, chunk_size={self.chunk_size}]"
            )
        if self.num_inference_steps < 1:
            raise ValueError("num_inference_steps must be >= 1")
        if self.action_norm not in ("mean_std", "min_max"):
            raise ValueError(f"action_norm must be 'mean_std' or 'min_max', got {self.action_norm!r}")
        if len(self.vocab) < 2 or self.vocab[0] != "<pad>" or self.vocab[1] != "<unk>":
            raise ValueError("vocab must start with '<pad>', '<unk>'")
        if self.flow_samples_per_obs < 1:
            raise ValueError("flow_samples_per_obs must be >= 1")

    # ----------------------------------------------------------------- derived
    @property
    def grid_size(self) -> int:
        return self.image_size // (2 ** len(self.vision_channels))

    @property
    def num_image_tokens(self) -> int:
        return self.grid_size**2

    @property
    def prefix_len(self) -> int:
        return self.num_image_tokens + self.max_lang_len + 1

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def mlp_dim(self) -> int:
        return round(self.d_model * self.mlp_ratio)


# A small registry of named presets. ``vla_small`` mirrors configs/vla_small.yaml (``policy:``).
VLA_PRESETS: dict[str, VLAConfig] = {
    "vla_small": VLAConfig(),
    # for unit tests and smoke runs: ~0.1 M params, 32² images, 4×4 grid
    "vla_tiny": VLAConfig(
        image_size=32,
        vision_channels=(16, 32, 32),
        vision_groups=4,
        d_model=32,
        num_heads=2,
        mlp_ratio=2.0,
        backbone_layers=2,
        expert_layers=2,
        chunk_size=8,
        n_action_steps=4,
        num_inference_steps=4,
        max_lang_len=8,
        name="vla_tiny",
    ),
}


def register_vla_config(name: str, config: VLAConfig, *, overwrite: bool = False) -> None:
    if name in VLA_PRESETS and not overwrite:
        raise ValueError(f"VLA preset {name!r} already registered")
    VLA_PRESETS[name] = config


def get_vla_config(name: str, **overrides: Any) -> VLAConfig:
    try:
        base = VLA_PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown VLA preset {name!r}; known: {sorted(VLA_PRESETS)}") from None
    return base.replace(**overrides) if overrides else base


__all__ = ["OVERRIDABLE_FIELDS", "RUNTIME_FIELDS", "VLA_PRESETS", "VLAConfig", "get_vla_config", "register_vla_config"]
