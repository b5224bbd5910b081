"""Policy-node integration: wrap a served policy with a KORR residual artifact.

``residual_adapter(policy, params)`` — ``params.residual``: path of a KORR artifact directory (empty/None ⇒
the policy is returned unchanged); optional ``params.residual_enabled`` (default True; False ⇒ the base
action bit-for-bit). The artifact's ``meta.normalization``, else its source base artifact (robosuite), supplies
the state/action min–max; without either the residual works in the env's own units (toy env).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from latentstack.policies.protocol import Policy

from .artifact import load_residual, residual_source
from .base_policy import MinMaxNormalizer
from .residual_policy import ResidualPolicy

log = logging.getLogger(__name__)


def _normalizer(d: dict[str, Any] | None, clamp: float | None) -> MinMaxNormalizer | None:
    if not d:
        return None
    return MinMaxNormalizer(torch.tensor(d["low"]), torch.tensor(d["high"]), clamp)


def residual_normalizers(meta: dict[str, Any], base: str | Path | None = None
                         ) -> tuple[MinMaxNormalizer | None, MinMaxNormalizer | None]:
    """The residual's state/action normalizers: ``meta.normalization`` if present, else those of its source
    chunk base ``base`` (robosuite), else identity (toy env)."""
    norm = meta.get("normalization")
    if norm:
        return _normalizer(norm.get("obs"), norm.get("obs_clamp")), _normalizer(norm.get("action"), None)
    if base is not None:
        from .base_policy import load_chunk_base

        model, _ = load_chunk_base(base)
        return model.obs_norm, model.action_norm
    return None, None


def residual_adapter(policy: Policy, params: Any) -> Policy:
    path = getattr(params, "residual", None)
    if not path:
        return policy
    base = residual_source(path)  # the base artifact it was trained on: its fingerprint is checked on load
    # on the policy node's device (its `device` parameter), next to the policy it wraps
    model, meta = load_residual(path, source=base, device=getattr(params, "device", None))
    obs_norm, action_norm = residual_normalizers(meta, base)
    wrapped = ResidualPolicy(policy, model, obs_norm=obs_norm, action_norm=action_norm,
                             state_key=getattr(params, "residual_state_key", "state"),
                             enabled=bool(getattr(params, "residual_enabled", True)))
    log.info("KORR residual %s (%s) wraps the policy; enabled=%s", path, model.config.kind, wrapped.enabled)
    return wrapped


__all__ = ["residual_adapter", "residual_normalizers"]
