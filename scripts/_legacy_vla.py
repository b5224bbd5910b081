"""The VLA family's legacy (v1) readers, kept only to prove conversions: the old-format loads of
``scripts/convert_artifacts.py`` and ``tests/policies/test_artifact_conversion.py``.

The logic is the package's own loading code as of commit ``b6958eb`` (before the one artifact format):
``latentstack.policies.checkpoint.load_policy`` (format ``latentstack.policy`` v1), ``checkpoint_fingerprint``,
``latentstack.quant.artifact.load_quantized`` (``latentstack.quant`` v1, ``card.json``) and
``latentstack.steering.intervention.SteeringArtifact.load`` (``latentstack.coast/1``, ``<stem>.json`` +
``<stem>.safetensors``). The package itself reads only the current format.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

VLA_FORMAT, QUANT_FORMAT, COAST_FORMAT = "latentstack.policy", "latentstack.quant", "latentstack.coast/1"
LEGACY_REV = "b6958eb"  # the last commit with every VLA-family artifact in its legacy format
_FREE_FIELDS = frozenset({"num_inference_steps", "n_action_steps", "clip_actions", "seed", "name"})


# ----------------------------------------------------------------------------------- detection
def legacy_kind(path: Path) -> str | None:
    """``"vla"``, ``"quant"`` or ``"coast"`` for a folder (or conceptor stem) in a legacy format, else None."""
    path = Path(path)
    if (path / "config.json").is_file():
        doc = json.loads((path / "config.json").read_text())
        if doc.get("format") == VLA_FORMAT and doc.get("format_version") == 1:
            return "vla"
    if (path / "card.json").is_file() and json.loads((path / "card.json").read_text()).get("format") == QUANT_FORMAT:
        return "quant"
    js = path.with_name(path.name + ".json")
    if not path.is_dir() and js.is_file() and json.loads(js.read_text()).get("format") == COAST_FORMAT:
        return "coast"
    return None


# ----------------------------------------------------------------------------------- VLA (policy v1)
def legacy_fingerprint(path: str | os.PathLike) -> str:
    """The v1 ``checkpoint_fingerprint``: sha256 over ``config.json`` and ``model.safetensors`` bytes."""
    h = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        h.update(name.encode())
        h.update(Path(path, name).read_bytes())
    return h.hexdigest()


def load_legacy_vla(path: str | os.PathLike, **runtime_overrides: Any) -> torch.nn.Module:
    """The v1 ``load_policy``: every refusal of the old loader, then a strict load."""
    from safetensors import safe_open

    from latentstack.policies.vla.configuration_vla import RUNTIME_FIELDS, VLAConfig
    from latentstack.policies.vla.modeling_vla import VLAPolicy

    path = Path(path)
    doc = json.loads((path / "config.json").read_text())
    if doc.get("format") != VLA_FORMAT or doc.get("format_version") != 1 or doc.get("class") != "VLAPolicy":
        raise ValueError(f"{path}: not a {VLA_FORMAT} v1 VLAPolicy checkpoint")
    bad = sorted(set(runtime_overrides) - RUNTIME_FIELDS)
    if bad:
        raise ValueError(f"only runtime fields can be overridden, got {bad}")
    config = VLAConfig.from_dict({**doc["config"], **runtime_overrides})
    policy = VLAPolicy(config)
    expected = policy.state_dict()
    arch = {k: v for k, v in VLAConfig.from_dict(doc["config"]).to_dict().items()
            if k not in _FREE_FIELDS and k not in ("type", "device", "dtype")}
    problems: list[str] = []
    tensors: dict[str, torch.Tensor] = {}
    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != VLA_FORMAT or meta.get("format_version") != "1" or meta.get("class") != "VLAPolicy":
            problems.append(f"weights header {meta.get('format')!r} v{meta.get('format_version')!r}")
        keys = set(f.keys())
        if keys != set(expected):
            problems.append(f"keys differ: {sorted(keys ^ set(expected))[:8]}")
        for k in sorted(keys & set(expected)):
            t = f.get_tensor(k)
            if tuple(t.shape) != tuple(expected[k].shape) or t.dtype != expected[k].dtype:
                problems.append(f"{k}: {tuple(t.shape)} {t.dtype}")
            tensors[k] = t
        defaults = {k: v for k, v in VLAConfig().to_dict().items() if k not in ("type", "device", "dtype")}
        saved = {**defaults, **json.loads(meta.get("arch_config", "{}"))}
        diff = sorted(k for k in set(saved) | set(arch) if k not in _FREE_FIELDS and saved.get(k) != arch.get(k))
        if diff or "arch_config" not in meta:
            problems.append(f"architecture differs from the weights' header: {diff}")
    if problems:
        raise ValueError(f"legacy checkpoint {path} is inconsistent: " + "; ".join(problems))
    policy.load_state_dict(tensors, strict=True)
    policy.eval()
    return policy


# ----------------------------------------------------------------------------------- quant v1
def load_legacy_quantized(artifact_dir: str | os.PathLike, source: str | os.PathLike, *, impl: str = "auto"
                          ) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The v1 ``load_quantized`` (``source``: the legacy v1 VLA folder it was made from)."""
    from safetensors.torch import load_file

    from latentstack.quant.apply import _replace
    from latentstack.quant.artifact import _skeleton
    from latentstack.quant.calibrate import ATMOHBCalibration, fold_atm_ohb
    from latentstack.quant.layouts import select_linears
    from latentstack.quant.quantizers import QuantConfig

    art = Path(artifact_dir)
    card = json.loads((art / "card.json").read_text())
    if card.get("format") != QUANT_FORMAT or card.get("format_version") != 1:
        raise ValueError(f"{art}: not a {QUANT_FORMAT} v1 artifact")
    if legacy_fingerprint(source) != card["source_fingerprint"]:
        raise ValueError(f"{art}: checkpoint fingerprint of {source} differs from the card's")
    policy = load_legacy_vla(source)
    cfg = QuantConfig(**card["preset"])
    if select_linears(policy, card["layout"]) != card["replaced"]:
        raise ValueError(f"{art}: layout {card['layout']!r} selects other layers")
    tensors = load_file(str(art / "quant.safetensors"))
    used: set[str] = set()
    for n in card["replaced"]:
        new = _skeleton(card["layer_classes"][n], policy.get_submodule(n), cfg, impl)
        sd = new.state_dict()
        for k, v in sd.items():
            t = tensors[f"{n}.{k}"]
            if t.shape != v.shape or t.dtype != v.dtype:
                raise ValueError(f"{art}: {n}.{k} {tuple(t.shape)} {t.dtype}")
            sd[k] = t
            used.add(f"{n}.{k}")
        new.load_state_dict(sd)
        _replace(policy, n, new)
    if set(tensors) != used:
        raise ValueError(f"{art}: unexpected tensors {sorted(set(tensors) - used)[:5]}")
    if card.get("atm_ohb"):
        fold_atm_ohb(policy, ATMOHBCalibration.from_json(json.loads((art / "atm_ohb.json").read_text())))
    policy.eval()
    return policy, card


# ----------------------------------------------------------------------------------- COAST v1
def load_legacy_conceptor(stem: str | os.PathLike, expected_d: int | None = None):
    """The v1 ``SteeringArtifact.load``: ``<stem>.json`` card + ``<stem>.safetensors`` tensors."""
    from safetensors.torch import load_file

    from latentstack.steering.intervention import SteeringArtifact, _check_operator

    stem = Path(stem)
    card = json.loads(stem.with_name(stem.name + ".json").read_text())
    if card.get("format") != COAST_FORMAT:
        raise ValueError(f"{stem}: not a {COAST_FORMAT} artifact")
    t = load_file(str(stem.with_name(stem.name + ".safetensors")))
    C = t.pop("C")
    _check_operator(C)
    d = int(C.shape[-1])
    if int(card.get("d", -1)) != d or (expected_d is not None and int(expected_d) != d):
        raise ValueError(f"{stem}: d mismatch")
    return SteeringArtifact(C, card, t.pop("C_success", None), t.pop("C_failure", None), t.pop("direction", None), t)


# ----------------------------------------------------------------------------------- from git history
def legacy_from_git(repo: Path, rel: str, dest: Path, rev: str = LEGACY_REV) -> Path:
    """Rebuild ``rel`` (a folder, or a conceptor stem's ``<rel>.*`` files) as it was at ``rev`` under ``dest``
    (same relative layout); returns ``dest / rel``. Raises ``FileNotFoundError`` without that history."""
    try:
        names = subprocess.run(["git", "-C", str(repo), "ls-tree", "-r", "--name-only", rev, "--",
                                str(Path(rel).parent)], check=True, capture_output=True, text=True).stdout.split()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise FileNotFoundError(f"git history {rev} not available: {exc}") from exc
    names = [n for n in names if n.startswith(rel + "/") or (n.startswith(rel + ".") and "/" not in n[len(rel):])]
    if not names:
        raise FileNotFoundError(f"{rel} is not in {rev}")
    for n in names:
        out = dest / n
        out.parent.mkdir(parents=True, exist_ok=True)
        blob = subprocess.run(["git", "-C", str(repo), "show", f"{rev}:{n}"], check=True, capture_output=True).stdout
        out.write_bytes(blob)
    return dest / rel


# ----------------------------------------------------------------------------------- fixed inputs
def fixed_batch(config: Any, b: int = 3) -> dict[str, Any]:
    """Fixed synthetic observations for a VLA config (seeded numpy; words from its own vocabulary)."""
    import numpy as np

    rng = np.random.default_rng(0)
    words = [w for w in config.vocab[2:]] or ["go"]
    instr = [" ".join(words[(3 * i + j) % len(words)] for j in range(4)) for i in range(b)]
    return {"image": rng.integers(0, 256, (b, config.image_size, config.image_size, 3), dtype=np.uint8),
            "state": rng.standard_normal((b, config.state_dim)).astype(np.float32), "instruction": instr}


def chunk(policy: Any, batch: Mapping[str, Any], seed: int = 0) -> torch.Tensor:
    """The policy's action chunk on ``batch`` with a seeded flow-noise generator (same ops on both loads)."""
    with torch.no_grad():
        return policy.predict_action_chunk(dict(batch), generator=torch.Generator().manual_seed(seed))
