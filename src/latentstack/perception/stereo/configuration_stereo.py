"""SA2-tiny configuration (a :class:`ModelConfig` of type ``"stereo"``; the ``config`` of its artifact)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from latentstack.core.config import ModelConfig, register_config

__all__ = ["PRESETS", "RUNTIME_FIELDS", "StereoConfig"]


@register_config("stereo")
@dataclass(frozen=True)
class StereoConfig(ModelConfig):
    name: str = "sa2_tiny"
    updater: str = "ss2d"  # ss2d (StereoAdapter-2) | gru (ConvGRU twin, StereoAdapter v1 / RAFT-Stereo)
    scan_mode: str = "cross2d"  # cross2d | bidi | unidi (ss2d only)
    enc_channels: tuple[int, ...] = (32, 64, 96, 128)
    feat_dim: int = 64
    fmap_dim: int = 64
    hidden: int = 64
    d_state: int = 8
    ssm_ratio: float = 1.0
    corr_levels: int = 4
    corr_radius: int = 4
    corr_impl: str = "reg"  # reg (materialised pyramid) | alt (on the fly)
    n_downsample: int = 2  # 1/4 resolution updates, convex ×4 upsampling
    train_iters: int = 8
    valid_iters: int = 8
    mono_init: bool = True  # MDE initialisation of the disparity from the mono head
    codyra_rank: int = 4  # 0 = no adapters
    codyra_rule: str = "released"  # released (SA code) | soft (textbook)
    codyra_lambda: float = 1e-4
    codyra_kappa: float = 0.005
    image_size: tuple[int, int] = (64, 128)
    extra: dict[str, Any] = field(default_factory=dict)

    # ranges checked before anything is built (issue 14: a config.json may be hostile); wide for this project
    BOUNDS: ClassVar[Mapping[str, tuple[float, float]]] = {
        "enc_channels": (1, 2048), "feat_dim": (1, 2048), "fmap_dim": (1, 2048), "hidden": (1, 2048),
        "d_state": (1, 256), "ssm_ratio": (0.01, 16.0), "corr_levels": (1, 8), "corr_radius": (0, 64),
        "n_downsample": (0, 8), "train_iters": (1, 256), "valid_iters": (1, 256), "codyra_rank": (0, 1024),
        "codyra_lambda": (0.0, 1e6), "codyra_kappa": (0.0, 1e6), "image_size": (16, 8192),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.updater not in ("ss2d", "gru"):
            raise ValueError(f"updater must be 'ss2d' or 'gru', got {self.updater!r}")
        if self.scan_mode not in ("cross2d", "bidi", "unidi"):
            raise ValueError(f"scan_mode must be cross2d | bidi | unidi, got {self.scan_mode!r}")
        if self.codyra_rule not in ("released", "soft"):
            raise ValueError(f"codyra_rule must be 'released' or 'soft', got {self.codyra_rule!r}")
        if self.corr_impl not in ("reg", "alt"):
            raise ValueError(f"corr_impl must be 'reg' or 'alt', got {self.corr_impl!r}")
        if self.n_downsample != 2:
            raise ValueError("only n_downsample = 2 (1/4 resolution, ×4 convex upsampling) is implemented")
        h, w = self.image_size
        if h % 16 or w % 16:
            raise ValueError(f"image_size must be multiples of 16, got {self.image_size}")


# fields a user may edit in an artifact's config.json (inference iterations, labels): not architecture
RUNTIME_FIELDS = frozenset({"name", "valid_iters", "extra"})

PRESETS: dict[str, StereoConfig] = {
    "sa2_tiny": StereoConfig(),
    "sa2_tiny_bidi": StereoConfig(name="sa2_tiny_bidi", scan_mode="bidi"),
    "sa2_tiny_unidi": StereoConfig(name="sa2_tiny_unidi", scan_mode="unidi"),
    "sa2_tiny_soft": StereoConfig(name="sa2_tiny_soft", codyra_rule="soft"),
    "convgru_tiny": StereoConfig(name="convgru_tiny", updater="gru"),
}
