"""SA2-tiny configuration (frozen dataclass; saved as JSON next to the safetensors weights)."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["PRESETS", "StereoConfig"]


@dataclass(frozen=True)
class StereoConfig:
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

    def __post_init__(self) -> None:
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

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StereoConfig:
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ValueError(f"unknown StereoConfig keys {unknown}")
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**kw)

    def save(self, path: Path | str) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path | str) -> StereoConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


PRESETS: dict[str, StereoConfig] = {
    "sa2_tiny": StereoConfig(),
    "sa2_tiny_bidi": StereoConfig(name="sa2_tiny_bidi", scan_mode="bidi"),
    "sa2_tiny_unidi": StereoConfig(name="sa2_tiny_unidi", scan_mode="unidi"),
    "sa2_tiny_soft": StereoConfig(name="sa2_tiny_soft", codyra_rule="soft"),
    "convgru_tiny": StereoConfig(name="convgru_tiny", updater="gru"),
}
