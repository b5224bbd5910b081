"""VLA artifacts (type ``"vla"``): ``config.json`` + ``model.safetensors`` through the one artifact format
(:mod:`latentstack.core.artifacts`). No pickle anywhere.

``config.json``::

    {"type": "vla", "format_version": 2, "config": {... VLAConfig incl. the tokenizer vocab ...},
     "files": {"model.safetensors": sha256}, "source": null, "provenance": {...},
     "extra": {"num_parameters": N, ...}}

:func:`from_pretrained` refuses, with an :class:`~latentstack.core.artifacts.ArtifactError` (a ``ValueError``)
naming what differs: a wrong ``type`` or ``format_version``, a file whose sha256 differs from ``config.json``,
an architecture field in ``config.json`` that differs from the config the weights were saved with (e.g.
``num_heads``, which changes no shape), and missing / unexpected tensors or shape / dtype mismatches. Runtime
fields (``num_inference_steps``, ``n_action_steps``, ``clip_actions``, ``seed``), the placement fields
(``device``, ``dtype``) and ``name`` may differ; overrides at load time are limited to runtime and placement
fields. ``save_policy`` / ``load_policy`` are the historical names of :func:`save_pretrained` /
:func:`from_pretrained`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from latentstack.core.artifacts import (
    FORMAT_VERSION,
    ArtifactError,
    artifact_fingerprint,
    check_state_dict,
    describe_file,
    load_artifact,
    save_artifact,
)
from latentstack.core.paths import portable_path
from latentstack.policies.vla.configuration_vla import OVERRIDABLE_FIELDS, RUNTIME_FIELDS, VLAConfig

TYPE = "vla"
WEIGHTS_NAME = "model.safetensors"
# config fields that may differ between config.json and the weights' header (never the architecture)
_FREE_FIELDS = OVERRIDABLE_FIELDS | {"name"}


def save_pretrained(
    policy: torch.nn.Module,
    out_dir: str | os.PathLike,
    extra: Mapping[str, Any] | None = None,
    *,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Write a ``"vla"`` artifact (``model.safetensors`` + ``config.json``) into ``out_dir``; returns it.

    ``provenance``: data and code it was made from, by :func:`latentstack.core.artifacts.describe_file`
    (repo-relative path + sha256); an ``extra["dataset"]`` path is moved there the same way."""
    from latentstack.policies.vla.modeling_vla import VLAPolicy

    if not isinstance(policy, VLAPolicy):
        raise TypeError(f"save_pretrained: unsupported policy class {type(policy).__name__!r}")
    n_params = int(sum(p.numel() for p in policy.parameters()))
    extra, provenance = dict(extra or {}), dict(provenance or {})
    dataset = extra.pop("dataset", None)
    if dataset is not None and "dataset" not in provenance:
        # training passes its dataset folder: recorded by repo-relative name + content hash, never a machine path
        ds = Path(dataset)
        provenance["dataset"] = describe_file(ds) if ds.exists() else {"path": portable_path(ds), "sha256": None}
    return save_artifact(
        out_dir,
        type=TYPE,
        config=policy.config.to_dict(),
        tensors={WEIGHTS_NAME: dict(policy.state_dict())},
        provenance=provenance,
        extra={"num_parameters": n_params, **extra},
    )


def read_policy_config(path: str | os.PathLike) -> VLAConfig:
    """The (validated) config stored in a ``"vla"`` artifact, without loading weights or hashing files."""
    art = load_artifact(path, expect_type=TYPE, verify=False)
    return _config(art.path, art.config, {})


def _check_overrides(overrides: Mapping[str, Any]) -> None:
    bad = sorted(set(overrides) - OVERRIDABLE_FIELDS)
    if bad:
        raise ValueError(
            f"only runtime fields {sorted(RUNTIME_FIELDS)} (and placement fields device, dtype) can be "
            f"overridden on a trained checkpoint; got {bad}"
        )


def _config(path: Path, stored: Mapping[str, Any], overrides: Mapping[str, Any]) -> VLAConfig:
    try:
        config = VLAConfig.from_dict({**stored, **overrides})
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"{path / 'config.json'}: invalid config: {exc}") from exc
    if config.dtype != "float32":
        # refused rather than cast: the processor makes float32 inputs, so a cast model would fail mid-forward
        raise ValueError(f"dtype={config.dtype!r}: the VLA runs in float32 only (its processor and model are not "
                         "dtype-aware yet)")
    return config


def _place(policy: torch.nn.Module, config: VLAConfig) -> torch.nn.Module:
    policy.to(config.device)
    policy.eval()
    return policy


def _overrides(device: str | torch.device | None, overrides: Mapping[str, Any]) -> dict[str, Any]:
    _check_overrides(overrides)
    out = dict(overrides)
    if device is not None:
        out["device"] = str(device)
    return out


def from_pretrained(path: str | os.PathLike, *, device: str | torch.device | None = None,
                    **overrides: Any) -> torch.nn.Module:
    """Load a ``"vla"`` artifact; returns the policy in eval mode on ``device`` (default: the stored one).

    ``overrides``: runtime fields (``num_inference_steps``, ``n_action_steps``, ``clip_actions``, ``seed``) and the
    placement fields (``dtype``: ``"float32"`` only for now)."""
    from latentstack.policies.vla.modeling_vla import VLAPolicy

    overrides = _overrides(device, overrides)
    art = load_artifact(path, expect_type=TYPE)
    config = _config(art.path, art.config, overrides)
    # a field added to VLAConfig after the artifact was written reads as its default
    tensors = art.tensors(WEIGHTS_NAME, free_fields=_FREE_FIELDS, defaults=VLAConfig().to_dict())
    policy = VLAPolicy(config)
    problems = check_state_dict(policy.state_dict(), tensors)
    if problems:
        raise ArtifactError(f"policy checkpoint {art.path} is inconsistent: " + "; ".join(problems))
    policy.load_state_dict(tensors, strict=True)
    return _place(policy, config)


def random_like(path: str | os.PathLike, *, seed: int | None = None, device: str | torch.device | None = None,
                **overrides: Any) -> torch.nn.Module:
    """Same config, vocabulary and normalization statistics as the ``"vla"`` artifact at ``path``; fresh weights
    (seeded by ``seed``, default the artifact config's): the "untrained policy" baseline of the evaluation."""
    from latentstack.policies.vla.modeling_vla import VLAPolicy

    overrides = _overrides(device, overrides)
    art = load_artifact(path, expect_type=TYPE)
    config = _config(art.path, art.config, overrides)
    config = config.replace(seed=config.seed if seed is None else int(seed))
    # read (budget- and header-checked) before building: a config the weights were not saved with is refused
    stats = art.tensors(WEIGHTS_NAME, free_fields=_FREE_FIELDS, defaults=VLAConfig().to_dict())
    policy = VLAPolicy(config)
    with torch.no_grad():
        for key, value in stats.items():
            if key.startswith("normalizer."):
                getattr(policy.normalizer, key.removeprefix("normalizer.")).copy_(value)  # exact (no std floor)
    return _place(policy, config)


# historical names (training, nodes and tests use them)
save_policy = save_pretrained
load_policy = from_pretrained
checkpoint_fingerprint = artifact_fingerprint

__all__ = [
    "FORMAT_VERSION",
    "TYPE",
    "WEIGHTS_NAME",
    "checkpoint_fingerprint",
    "from_pretrained",
    "load_policy",
    "random_like",
    "read_policy_config",
    "save_policy",
    "save_pretrained",
]
