"""Policy checkpoints: ``model.safetensors`` + ``config.json`` in one directory. No pickle anywhere.

``config.json``::

    {"format": "latentstack.policy", "format_version": 1, "class": "VLAPolicy",
     "config": {... VLAConfig incl. the tokenizer vocab ...}, "num_parameters": N, "extra": {...}}

The safetensors header metadata repeats format, version and class, plus the architecture part of
the config the weights were saved with. :func:`load_policy` refuses, with a ``ValueError`` naming the
offending keys/fields, any mismatch: wrong format/version/class, missing or unexpected tensors,
shape or dtype mismatches, or an architecture field in ``config.json`` that differs from the one the
weights were trained with (e.g. ``num_heads``, which changes no shape). Runtime fields
(``num_inference_steps``, ``n_action_steps``, ``clip_actions``, ``seed``) and ``name`` may be edited.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from latentstack.policies.vla.configuration_vla import RUNTIME_FIELDS, VLAConfig

FORMAT = "latentstack.policy"
FORMAT_VERSION = 1
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
_FREE_FIELDS = RUNTIME_FIELDS | {"name"}
_MAX_LISTED = 12


def _policy_classes() -> dict[str, tuple[type, type]]:
    from latentstack.policies.vla.modeling_vla import VLAPolicy

    return {"VLAPolicy": (VLAPolicy, VLAConfig)}


def _arch_config(config_dict: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config_dict.items() if k not in _FREE_FIELDS}


def _listing(items: list[str]) -> str:
    shown = items[:_MAX_LISTED]
    more = f" ... and {len(items) - len(shown)} more" if len(items) > len(shown) else ""
    return "[" + ", ".join(shown) + "]" + more


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_policy(
    policy: torch.nn.Module, out_dir: str | os.PathLike, extra: Mapping[str, Any] | None = None
) -> Path:
    """Write ``model.safetensors`` + ``config.json`` into ``out_dir`` (created); returns ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cls_name = type(policy).__name__
    if cls_name not in _policy_classes():
        raise ValueError(f"save_policy: unsupported policy class {cls_name!r}")
    config_dict = policy.config.to_dict()
    state = {k: v.detach().cpu().contiguous() for k, v in policy.state_dict().items()}
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "class": cls_name,
        "arch_config": json.dumps(_arch_config(config_dict), sort_keys=True),
    }
    tmp = out / (WEIGHTS_NAME + ".tmp")
    save_file(state, str(tmp), metadata=metadata)
    os.replace(tmp, out / WEIGHTS_NAME)
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "class": cls_name,
        "config": config_dict,
        "num_parameters": int(sum(p.numel() for p in policy.parameters())),
        "extra": dict(extra or {}),
    }
    _atomic_write_text(out / CONFIG_NAME, json.dumps(doc, indent=2) + "\n")
    return out


def _read_config_doc(path: Path) -> dict[str, Any]:
    cfg_path = path / CONFIG_NAME
    if not cfg_path.is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} in policy checkpoint {path}")
    doc = json.loads(cfg_path.read_text())
    if doc.get("format") != FORMAT:
        raise ValueError(f"{cfg_path}: format {doc.get('format')!r} is not {FORMAT!r}")
    if doc.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{cfg_path}: format_version {doc.get('format_version')!r} unsupported (expected {FORMAT_VERSION})"
        )
    if doc.get("class") not in _policy_classes():
        raise ValueError(
            f"{cfg_path}: class {doc.get('class')!r} unknown; known: {sorted(_policy_classes())}"
        )
    if not isinstance(doc.get("config"), dict):
        raise ValueError(f"{cfg_path}: missing 'config' object")  # noqa: TRY004 (a malformed file)
    return doc


def read_policy_config(path: str | os.PathLike) -> VLAConfig:
    """The (validated) config stored in a checkpoint directory, without loading weights."""
    doc = _read_config_doc(Path(path))
    _, config_cls = _policy_classes()[doc["class"]]
    return config_cls.from_dict(doc["config"])


def _check_overrides(overrides: Mapping[str, Any]) -> None:
    bad = sorted(set(overrides) - RUNTIME_FIELDS)
    if bad:
        raise ValueError(
            f"only runtime fields {sorted(RUNTIME_FIELDS)} can be overridden on a trained checkpoint; got {bad}"
        )


def load_policy(path: str | os.PathLike, **runtime_overrides: Any) -> torch.nn.Module:
    """Load a checkpoint directory written by :func:`save_policy`; returns the policy in eval mode.

    ``runtime_overrides``: only ``num_inference_steps``, ``n_action_steps``, ``clip_actions``, ``seed``.
    """
    path = Path(path)
    doc = _read_config_doc(path)
    policy_cls, config_cls = _policy_classes()[doc["class"]]
    _check_overrides(runtime_overrides)
    try:
        config = config_cls.from_dict({**doc["config"], **runtime_overrides})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path / CONFIG_NAME}: invalid config: {exc}") from exc
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"no {WEIGHTS_NAME} in policy checkpoint {path}")

    policy = policy_cls(config)
    expected = policy.state_dict()
    problems: list[str] = []
    tensors: dict[str, torch.Tensor] = {}
    with safe_open(str(weights), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != FORMAT or meta.get("format_version") != str(FORMAT_VERSION):
            problems.append(
                f"weights header format {meta.get('format')!r} v{meta.get('format_version')!r} "
                f"!= {FORMAT!r} v{FORMAT_VERSION}"
            )
        if meta.get("class") != doc["class"]:
            problems.append(
                f"weights were saved from class {meta.get('class')!r}, config.json says {doc['class']!r}"
            )
        keys = set(f.keys())
        missing = sorted(set(expected) - keys)
        unexpected = sorted(keys - set(expected))
        if missing:
            problems.append(f"missing keys {_listing(missing)}")
        if unexpected:
            problems.append(f"unexpected keys {_listing(unexpected)}")
        mismatched: list[str] = []
        for k in sorted(keys & set(expected)):
            t = f.get_tensor(k)
            want = expected[k]
            if tuple(t.shape) != tuple(want.shape) or t.dtype != want.dtype:
                mismatched.append(
                    f"{k}: weights {tuple(t.shape)} {str(t.dtype).removeprefix('torch.')} vs config "
                    f"{tuple(want.shape)} {str(want.dtype).removeprefix('torch.')}"
                )
            tensors[k] = t
        if mismatched:
            problems.append(f"shape/dtype mismatch {_listing(mismatched)}")
        if "arch_config" in meta:
            # a field added to the config class after the checkpoint was written reads as its default
            defaults = config_cls().to_dict()
            saved = {**defaults, **json.loads(meta["arch_config"])}
            now = _arch_config(config.to_dict())
            diff = sorted(
                k for k in set(saved) | set(now) if k not in _FREE_FIELDS and saved.get(k) != now.get(k)
            )
            if diff:
                problems.append(
                    "config.json differs from the config the weights were saved with in fields "
                    + _listing([f"{k}: saved {saved.get(k)!r} vs config.json {now.get(k)!r}" for k in diff])
                )
        else:
            problems.append("weights header has no 'arch_config' (not written by save_policy)")
    if problems:
        raise ValueError(f"policy checkpoint {path} is inconsistent: " + "; ".join(problems))
    policy.load_state_dict(tensors, strict=True)
    policy.eval()
    return policy


def checkpoint_fingerprint(path: str | os.PathLike) -> str:
    """sha256 over ``config.json`` and ``model.safetensors`` bytes: what derived artifacts (quantization
    calibrations, conceptors) record to refuse being applied to a different checkpoint."""
    path = Path(path)
    h = hashlib.sha256()
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        h.update(name.encode())
        with open(path / name, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "checkpoint_fingerprint",
    "load_policy",
    "read_policy_config",
    "save_policy",
]
