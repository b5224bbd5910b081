"""KORR residual heads as artifacts of type ``"korr_residual"`` (:mod:`latentstack.core.artifacts`).

``residual.safetensors`` + ``config.json`` (the :class:`ResidualConfig`, the training ``meta`` as ``extra``, and
for a residual trained on a saved base policy its ``source``: the base artifact's repo-relative path and
fingerprint). No pickle. The loader refuses a wrong type or version, a tampered file, a config that differs from
the one the weights were saved with (or from ``expect``), tensors that do not fit, and a base other than the one
the residual was trained on.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from latentstack.core.artifacts import load_artifact
from latentstack.core.pretrained import load_pretrained, save_pretrained

from .configuration_korr import ResidualConfig
from .modeling_korr import ResidualActorCritic, make_residual

WEIGHTS = "residual.safetensors"


def save_residual(model: ResidualActorCritic, directory: str | Path, meta: dict[str, Any] | None = None,
                  state_dict: dict[str, torch.Tensor] | None = None,
                  source: str | os.PathLike | None = None) -> Path:
    """Write the residual (``state_dict`` overrides the model's current weights, e.g. the best checkpoint);
    ``source``: the base-policy artifact it was trained on (recorded with its fingerprint)."""
    import json

    extra = json.loads(json.dumps(meta or {}, default=float))  # numpy / tensor scalars -> plain JSON numbers
    return save_pretrained(model, directory, model.config, weights=WEIGHTS, state_dict=state_dict,
                           source=source, extra=extra)


def residual_source(directory: str | Path) -> Path | None:
    """The base-policy artifact a residual names as its source, or ``None`` (hashes are checked on load)."""
    art = load_artifact(directory, expect_type=ResidualConfig.type, verify=False)
    return art.source_path() if art.source else None


def load_residual(directory: str | Path, expect: ResidualConfig | None = None,
                  source: str | os.PathLike | None = None, device: str | None = None
                  ) -> tuple[ResidualActorCritic, dict[str, Any]]:
    """(model in eval mode, meta). ``expect``: refuse when the stored config differs from it; ``source``:
    refuse unless the residual was trained on that base artifact."""
    model, art = load_pretrained(directory, make_residual, expect_type=ResidualConfig.type, weights=WEIGHTS,
                                 device=device, expect=expect, source=source)
    return model, art.extra


def load_residual_head(directory: str | Path, *, device: str | None = None, **kw: Any) -> ResidualActorCritic:
    """The residual model alone (the artifact-type loader of ``"korr_residual"``)."""
    return load_residual(directory, device=device, **kw)[0]


__all__ = ["load_residual", "load_residual_head", "residual_source", "save_residual"]
