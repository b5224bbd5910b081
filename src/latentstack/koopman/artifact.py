"""KORR artifacts: ``residual.safetensors`` + ``config.json`` (residual config, normalizers, provenance).

No pickle. The loader checks the format tag, the config and every tensor name/shape, and refuses a
mismatched checkpoint with a clear error.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .configuration_korr import ResidualConfig
from .modeling_korr import ResidualActorCritic, make_residual

FORMAT = "latentstack.korr.residual/1"
WEIGHTS = "residual.safetensors"
CONFIG = "config.json"


def save_residual(model: ResidualActorCritic, directory: str | Path, meta: dict[str, Any] | None = None,
                  state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Write the residual (``state_dict`` overrides the model's current weights, e.g. the best checkpoint)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    sd = state_dict if state_dict is not None else model.state_dict()
    save_file({k: v.detach().contiguous().cpu() for k, v in sd.items()}, str(out / WEIGHTS))
    cfg = {"format": FORMAT, "residual": model.config.to_dict(), "meta": meta or {}}
    (out / CONFIG).write_text(json.dumps(cfg, indent=2, default=float))
    return out


def read_residual_config(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"no KORR artifact at {directory}: missing {CONFIG}")
    cfg = json.loads(path.read_text())
    if cfg.get("format") != FORMAT:
        raise ValueError(f"{path}: format {cfg.get('format')!r} is not {FORMAT!r}")
    return cfg


def load_residual(directory: str | Path, expect: ResidualConfig | None = None
                  ) -> tuple[ResidualActorCritic, dict[str, Any]]:
    """(model in eval mode, meta). ``expect``: refuse when the stored config differs from it."""
    cfg = read_residual_config(directory)
    config = ResidualConfig.from_dict(cfg["residual"])
    if expect is not None and expect != config:
        diff = {k: (v, getattr(config, k)) for k, v in expect.to_dict().items() if getattr(config, k) != v}
        raise ValueError(f"{directory}: residual config mismatch (expected, stored): {diff}")
    model = make_residual(config)
    weights = Path(directory) / WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{directory}: missing {WEIGHTS}")
    sd = load_file(str(weights))
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    bad_shape = {k: (tuple(sd[k].shape), tuple(own[k].shape)) for k in set(sd) & set(own) if sd[k].shape != own[k].shape}
    if missing or unexpected or bad_shape:
        raise ValueError(f"{directory}: checkpoint does not match its config ({config.kind}): missing {missing}, "
                         f"unexpected {unexpected}, shape (stored, expected) {bad_shape}")
    model.load_state_dict(sd)
    model.eval()
    return model, cfg.get("meta", {})


__all__ = ["load_residual", "read_residual_config", "save_residual"]
