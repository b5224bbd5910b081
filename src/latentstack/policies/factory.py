"""Policy registry and lazy factory.

``make_policy(name_or_path, **overrides)``:

- a checkpoint directory -> :func:`load_policy` (overrides: runtime fields only); a LeRobot ACT
  checkpoint (``config.json`` with ``"type": "act"``) -> :class:`latentstack.policies.lerobot_act.ACTAdapter`
  (``"random:<ACT dir>"``: its untrained twin, ``seed=``);
- a quantized-policy artifact directory (``card.json`` written by
  :func:`latentstack.quant.save_quantized`), or ``"quant:<artifact dir>"`` -> the integer policy from
  :func:`latentstack.quant.load_quantized` (source checkpoint from the card, fingerprint checked,
  ATM/OHB folded); overrides: ``source=`` (checkpoint dir) and ``impl=`` (int kernel path);
- ``"random:<checkpoint dir>"`` -> the checkpoint's config, vocabulary and normalization statistics with
  freshly initialised weights (seeded by ``seed=``, default the checkpoint config's seed): the
  "untrained policy" baseline of the evaluation;
- a registered name (``"vla"`` = ``configs/vla_small.yaml`` ``policy:`` section, or a preset such as
  ``"vla_small"``, ``"vla_tiny"``) -> a fresh model; overrides are any :class:`VLAConfig` fields.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs"
DEFAULT_VLA_YAML = CONFIG_DIR / "vla_small.yaml"

PolicyBuilder = Callable[..., torch.nn.Module]
POLICY_REGISTRY: dict[str, PolicyBuilder] = {}


def register_policy(name: str, builder: PolicyBuilder, *, overwrite: bool = False) -> None:
    if name in POLICY_REGISTRY and not overwrite:
        raise ValueError(f"policy {name!r} already registered")
    POLICY_REGISTRY[name] = builder


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    import yaml

    with open(path) as fh:
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


def make_random_like(checkpoint: str | os.PathLike, seed: int | None = None, **runtime_overrides: Any):
    """Same config, vocabulary and normalization statistics as ``checkpoint``; random weights."""
    from safetensors import safe_open

    from latentstack.policies.checkpoint import WEIGHTS_NAME, _check_overrides, read_policy_config
    from latentstack.policies.vla.modeling_vla import VLAPolicy

    _check_overrides(runtime_overrides)
    cfg = read_policy_config(checkpoint)
    cfg = cfg.replace(seed=cfg.seed if seed is None else int(seed), **runtime_overrides)
    policy = VLAPolicy(cfg)
    stats = {}
    with safe_open(str(Path(checkpoint) / WEIGHTS_NAME), framework="pt") as f:
        for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
            if key.startswith("normalizer."):
                stats[key.removeprefix("normalizer.")] = f.get_tensor(key)
    with torch.no_grad():
        for k, v in stats.items():
            getattr(policy.normalizer, k).copy_(v)  # exact copy (no std floor re-applied)
    policy.eval()
    return policy


QUANT_PREFIX = "quant:"


def _is_act_checkpoint(path: str | os.PathLike) -> bool:
    """A LeRobot ACT checkpoint directory (``config.json`` with ``"type": "act"``, as LeRobot writes it)."""
    from latentstack.policies.lerobot_act.modeling_act import is_act_checkpoint

    return is_act_checkpoint(path)


def is_quantized_artifact(path: str | os.PathLike) -> bool:
    """True for a directory holding a ``latentstack.quant`` ``card.json`` (see ``save_quantized``)."""
    import json

    card = Path(path) / "card.json"
    if not card.is_file():
        return False
    try:
        return json.loads(card.read_text()).get("format") == "latentstack.quant"
    except (OSError, ValueError):
        return False


def _load_quantized(path: str, **overrides: Any) -> torch.nn.Module:
    from latentstack.quant.artifact import load_quantized

    unknown = set(overrides) - {"source", "impl"}
    if unknown:
        raise TypeError(f"quantized artifacts accept overrides source= and impl= only, got {sorted(unknown)}")
    policy, _card = load_quantized(path, overrides.get("source"), impl=overrides.get("impl", "auto"))
    return policy


def make_policy(name_or_path: str | os.PathLike, *, device: str | torch.device | None = None,
                **overrides: Any) -> torch.nn.Module:
    """Build or load a policy (see the module docstring); ``device``: move it there (``None``: where it loads)."""
    policy = _make_policy(name_or_path, **overrides)
    if device is not None:
        policy = policy.to(device)
    return policy


def _make_policy(name_or_path: str | os.PathLike, **overrides: Any) -> torch.nn.Module:
    spec = os.fspath(name_or_path)
    if spec.startswith(QUANT_PREFIX):
        path = spec.removeprefix(QUANT_PREFIX)
        if not is_quantized_artifact(path):
            raise FileNotFoundError(f"{path!r} is not a quantized-policy artifact (no latentstack.quant card.json)")
        return _load_quantized(path, **overrides)
    if Path(spec).is_dir() and is_quantized_artifact(spec):
        return _load_quantized(spec, **overrides)
    if spec.startswith("random:"):
        if _is_act_checkpoint(spec.removeprefix("random:")):  # LeRobot ACT: untrained twin, same stats
            from latentstack.policies.lerobot_act.modeling_act import make_act_random_like

            return make_act_random_like(spec.removeprefix("random:"), **overrides)
        return make_random_like(spec.removeprefix("random:"), **overrides)
    if Path(spec).is_dir() and _is_act_checkpoint(spec):  # LeRobot checkpoint: config.json "type": "act"
        from latentstack.policies.lerobot_act.modeling_act import load_act_policy

        if overrides:
            raise TypeError(f"LeRobot ACT checkpoints take no overrides, got {sorted(overrides)}")
        return load_act_policy(spec)
    if Path(spec).is_dir():
        from latentstack.policies.checkpoint import load_policy

        return load_policy(spec, **overrides)
    if spec in POLICY_REGISTRY:
        return POLICY_REGISTRY[spec](**overrides)
    raise KeyError(
        f"unknown policy {spec!r}: not a checkpoint directory, not 'random:<dir>', "
        f"and not a registered name {sorted(POLICY_REGISTRY)}"
    )


__all__ = ["POLICY_REGISTRY", "QUANT_PREFIX", "default_vla_config", "is_quantized_artifact", "make_policy", "make_random_like", "register_policy"]
