"""Policy registry and lazy factory.

``make_policy(spec, *, device=None, **overrides)``:

- an artifact folder (``policies/<name>`` or any path; ``config.json`` with ``type`` and ``format_version``)
  -> the loader its ``type`` names in :mod:`latentstack.core.registry`, e.g. ``"vla"`` ->
  :func:`latentstack.policies.checkpoint.from_pretrained` (overrides: runtime fields only),
  ``"vla_quantized"`` -> the integer policy from ``latentstack.quant.artifact`` (source artifact recorded in
  it, fingerprint checked, ATM/OHB folded; overrides ``source=``, ``impl=``); ``"quant:<dir>"`` insists on a
  quantized artifact. The factory imports no loader's stack until its type is asked for;
- ``"random:<artifact dir>"`` -> the artifact's config, vocabulary and normalization statistics with
  freshly initialised weights (seeded by ``seed=``, default the config's seed): the "untrained policy"
  baseline of the evaluation;
- a registered name (``"vla"`` = ``configs/vla_small.yaml`` ``policy:`` section, or a preset such as
  ``"vla_small"``, ``"vla_tiny"``) -> a fresh model; overrides are any :class:`VLAConfig` fields.

``device``: where the policy runs (moved there after loading / building).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from latentstack.core.artifacts import (
    ArtifactError,
    artifact_type,
    is_artifact,
    read_artifact_doc,
    resolve_target,
)
from latentstack.core.paths import data_dirs, find_config, resolve_path

# The checkout's configs/ or an install's share/latentstack/configs (the one data resolver).
CONFIG_DIR = next(iter(data_dirs("configs")), Path("configs"))
DEFAULT_VLA_YAML = CONFIG_DIR / "vla_small.yaml"

PolicyBuilder = Callable[..., torch.nn.Module]
POLICY_REGISTRY: dict[str, PolicyBuilder] = {}


def register_policy(name: str, builder: PolicyBuilder, *, overwrite: bool = False) -> None:
    if name in POLICY_REGISTRY and not overwrite:
        raise ValueError(f"policy {name!r} already registered")
    POLICY_REGISTRY[name] = builder


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """A config YAML by path (checkout-relative paths work from any cwd) or by name (``vla_small``: the data
    resolver's ``configs``)."""
    import yaml

    with open(find_config(path)) as fh:
        return yaml.safe_load(fh) or {}


def default_vla_config(**overrides: Any):
    """``VLAConfig`` from ``configs/vla_small.yaml`` (``policy:`` section), falling back to the
    ``vla_small`` preset when the file is not there (e.g. an installed wheel)."""
    from latentstack.policies.vla.configuration_vla import VLAConfig, get_vla_config

    if DEFAULT_VLA_YAML.is_file():
        section = load_yaml(DEFAULT_VLA_YAML).get("policy", {})
        return VLAConfig.from_dict({**section, **overrides})
    return get_vla_config("vla_small", **overrides)


def _build_vla(**overrides: Any) -> torch.nn.Module:
    from latentstack.policies.vla.modeling_vla import VLAPolicy

    return VLAPolicy(default_vla_config(**overrides))


def _preset_builder(preset: str) -> PolicyBuilder:
    def build(**overrides: Any) -> torch.nn.Module:
        from latentstack.policies.vla.configuration_vla import get_vla_config
        from latentstack.policies.vla.modeling_vla import VLAPolicy

        return VLAPolicy(get_vla_config(preset, **overrides))

    return build


register_policy("vla", _build_vla)
register_policy("vla_small", _preset_builder("vla_small"))
register_policy("vla_tiny", _preset_builder("vla_tiny"))


def make_random_like(checkpoint: str | os.PathLike, seed: int | None = None, **overrides: Any) -> torch.nn.Module:
    """Same config and normalization statistics as the policy artifact ``checkpoint``; fresh weights (its type's
    ``random`` loader, e.g. :func:`latentstack.policies.checkpoint.random_like` for a ``"vla"``)."""
    return _dispatch(checkpoint, random=True, seed=seed, **overrides)


QUANT_PREFIX = "quant:"
RANDOM_PREFIX = "random:"


def is_quantized_artifact(path: str | os.PathLike) -> bool:
    """True for a folder holding a ``"vla_quantized"`` artifact (see ``latentstack.quant.save_quantized``)."""
    return is_artifact(path, "vla_quantized")


def _dispatch(path: str | os.PathLike, *, random: bool = False, **overrides: Any) -> Any:
    """Load (or, ``random``, build the untrained twin of) the artifact at ``path`` with the loader its
    ``type`` names in :mod:`latentstack.core.registry` (imports that stack only)."""
    p = resolve_path(path)
    doc = read_artifact_doc(p)  # refuses a missing / old format_version with the conversion command
    entry = artifact_type(doc["type"])
    if entry.kind != "policy":
        raise ArtifactError(f"{p} is a {doc['type']!r} artifact ({entry.kind}), not a policy")
    target = entry.random if random else entry.load
    if target is None:
        raise ArtifactError(f"artifact type {doc['type']!r} has no untrained twin ('random:')")
    if random and overrides.get("seed") is None:
        overrides.pop("seed", None)
    return resolve_target(target)(p, **overrides)


def make_policy(spec: str | os.PathLike, *, device: str | torch.device | None = None,
                **overrides: Any) -> torch.nn.Module:
    """Build or load a policy (see the module docstring) and put it on ``device`` (``None``: where its config
    says, ``cpu`` by default). Artifacts dispatch on their ``type`` through :mod:`latentstack.core.registry`."""
    spec = os.fspath(spec)
    random = spec.startswith(RANDOM_PREFIX)
    if spec.startswith(QUANT_PREFIX):
        spec = spec.removeprefix(QUANT_PREFIX)
        if not is_quantized_artifact(resolve_path(spec)):
            raise FileNotFoundError(f"{spec!r} is not a quantized-policy artifact (type 'vla_quantized')")
    path = resolve_path(spec.removeprefix(RANDOM_PREFIX))
    if path.is_dir():  # every artifact loader takes device= (core/registry.py) and puts the policy there
        return _dispatch(path, random=random, device=device, **overrides)
    if not random and spec in POLICY_REGISTRY:
        policy = POLICY_REGISTRY[spec](**overrides)
        return policy if device is None else policy.to(device)
    raise KeyError(
        f"unknown policy {spec!r}: not an artifact folder, not 'random:<dir>' or 'quant:<dir>', "
        f"and not a registered name {sorted(POLICY_REGISTRY)}"
    )


__all__ = [
    "POLICY_REGISTRY",
    "QUANT_PREFIX",
    "RANDOM_PREFIX",
    "default_vla_config",
    "is_quantized_artifact",
    "make_policy",
    "make_random_like",
    "register_policy",
]
