"""Small-config presets for LeRobot 0.4.4's real ACT (``lerobot.policies.act``), sized for this CPU box.

The model is LeRobot's own ``ACTConfig`` / ``ACTPolicy``; this module only fixes the presets and the
features of the project's MetaWorld demonstrations (``observation.image`` 64x64 RGB, ``observation.state``
(4,), ``action`` (4,)). Normalisation in LeRobot 0.4.4 is *not* inside the model: it lives in the
processor pipelines from ``make_act_pre_post_processors`` (saved next to the weights as
``policy_preprocessor*.json/.safetensors`` and ``policy_postprocessor*``).

Language: ACT has no language input. The task is not given to the model; it is implied by the image
(every task of ``metaworld_mt6`` shows a different object), as in the ACT paper's single-task setting.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from latentstack.core.config import DTYPES, ModelConfig, register_config

ACT_TYPE = "act"  # the "type" LeRobot writes into its own config.json (inside the artifact's LeRobot folder)
IMAGE_KEY = "observation.image"
STATE_KEY = "observation.state"
ACTION_KEY = "action"

# LeRobot's `DatasetConfig.use_imagenet_stats=True` (its training default) replaces camera statistics by
# these before building the normaliser; we do the same (the dataset's own image "std" is the spread of
# per-image means, ~0.014, which would blow pixels up by ~70x).
IMAGENET_STATS = {"mean": [[[0.485]], [[0.456]], [[0.406]]], "std": [[[0.229]], [[0.224]], [[0.225]]]}

# "act_small": ACT with the paper's structure (ResNet18 -> transformer encoder -> decoder over chunk queries,
# L1 loss) at CPU size. VAE off: demos are from a deterministic scripted expert, the case in which the ACT
# paper's CVAE ablation matters least; with it off, inference is deterministic (the latent is zero either way).
# n_decoder_layers=2 (LeRobot default 1) so that one decoder layer is followed by another one, not only by
# the final LayerNorm (a scale-invariant op that absorbs a uniform shrink; see modeling_act.py).
# lr 1e-4 for all parameters (LeRobot's 1e-5 is for fine-tuning an ImageNet backbone; ours starts random).
ACT_PRESETS: dict[str, dict[str, Any]] = {
    "act_small": {
        "vision_backbone": "resnet18",
        "pretrained_backbone_weights": None,  # no downloads
        "dim_model": 128,
        "n_heads": 4,
        "dim_feedforward": 512,
        "n_encoder_layers": 2,
        "n_decoder_layers": 2,
        "use_vae": False,
        "chunk_size": 16,
        "n_action_steps": 8,
        "dropout": 0.1,
        "optimizer_lr": 1e-4,
        "optimizer_lr_backbone": 1e-4,
        "optimizer_weight_decay": 1e-4,
    },
    # a unit-test-sized twin (same structure)
    "act_tiny": {
        "vision_backbone": "resnet18",
        "pretrained_backbone_weights": None,
        "dim_model": 32,
        "n_heads": 2,
        "dim_feedforward": 64,
        "n_encoder_layers": 1,
        "n_decoder_layers": 2,
        "use_vae": False,
        "chunk_size": 16,
        "n_action_steps": 8,
    },
}


@register_config("lerobot_act")
@dataclass(frozen=True)
class ACTAdapterConfig(ModelConfig):
    """The artifact config of the ACT adapter (type ``"lerobot_act"``).

    The model itself is described by LeRobot's own ``config.json`` (draccus-parsed ``ACTConfig``), kept with
    the weights and processor files, unchanged, in the artifact's ``lerobot_dir`` and hashed in ``files``. The
    fields below repeat what the project relies on (feature shapes, chunking) plus how the weights are stored;
    the loader refuses an artifact whose LeRobot config disagrees with them."""

    lerobot_dir: str = "lerobot"
    chunk_size: int = 16
    n_action_steps: int = 8
    image_shape: tuple[int, ...] = (3, 64, 64)
    state_dim: int = 4
    action_dim: int = 4
    weights_dtype: str = "float32"  # floating tensors of lerobot_dir/model.safetensors (loaded into fp32)

    # ranges checked before anything is built (issue 14: a config.json may be hostile); wide for this project
    BOUNDS: ClassVar[Mapping[str, tuple[float, float]]] = {
        "chunk_size": (1, 1024), "n_action_steps": (1, 1024), "image_shape": (1, 4096), "state_dim": (1, 4096),
        "action_dim": (1, 4096),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.weights_dtype not in DTYPES:
            raise ValueError(f"weights_dtype must be one of {DTYPES}, got {self.weights_dtype!r}")
        if len(self.image_shape) != 3:
            raise ValueError(f"image_shape is (C, H, W), got {self.image_shape}")

    @classmethod
    def from_lerobot(cls, config: Any, **fields: Any) -> ACTAdapterConfig:
        """The fields LeRobot's ``ACTConfig`` determines (``fields``: the rest, e.g. ``weights_dtype``)."""
        return cls(chunk_size=int(config.chunk_size), n_action_steps=int(config.n_action_steps),
                   image_shape=tuple(int(x) for x in config.input_features[IMAGE_KEY].shape),
                   state_dim=int(config.input_features[STATE_KEY].shape[0]),
                   action_dim=int(config.output_features[ACTION_KEY].shape[0]), **fields)


def make_act_config(preset: str = "act_small", image_size: int = 64, state_dim: int = 4, action_dim: int = 4,
                    **overrides: Any):
    """A LeRobot ``ACTConfig`` from a named preset with the project's feature layout (CPU device)."""
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.act.configuration_act import ACTConfig

    if preset not in ACT_PRESETS:
        raise ValueError(f"unknown ACT preset {preset!r}; known: {sorted(ACT_PRESETS)}")
    kwargs = {**ACT_PRESETS[preset], **overrides}
    return ACTConfig(
        input_features={
            IMAGE_KEY: PolicyFeature(type=FeatureType.VISUAL, shape=(3, image_size, image_size)),
            STATE_KEY: PolicyFeature(type=FeatureType.STATE, shape=(state_dim,)),
        },
        output_features={ACTION_KEY: PolicyFeature(type=FeatureType.ACTION, shape=(action_dim,))},
        device="cpu",
        push_to_hub=False,
        **kwargs,
    )


def act_dataset_stats(state_mean: torch.Tensor, state_std: torch.Tensor, action_mean: torch.Tensor,
                      action_std: torch.Tensor) -> dict[str, dict[str, torch.Tensor]]:
    """Statistics in LeRobot's ``{feature: {"mean", "std"}}`` layout (images: ImageNet, as LeRobot trains)."""
    return {
        IMAGE_KEY: {k: torch.tensor(v, dtype=torch.float32) for k, v in IMAGENET_STATS.items()},
        STATE_KEY: {"mean": state_mean.float(), "std": state_std.float()},
        ACTION_KEY: {"mean": action_mean.float(), "std": action_std.float()},
    }


def stats_from_frames(stats: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """``FrameCache.stats()`` (``state_mean``...) -> LeRobot layout."""
    return act_dataset_stats(stats["state_mean"], stats["state_std"], stats["action_mean"], stats["action_std"])
