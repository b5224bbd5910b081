"""Quantized-policy artifacts: ``quant.safetensors`` (int codes, scales, biases of the replaced
layers) + ``card.json`` (+ ``atm_ohb.json`` when calibrated) + ``CARD.md``.

Loading rebuilds the float policy from the source checkpoint, checks the checkpoint fingerprint,
layout, preset and tensor shapes against the card (any mismatch is refused with a list of what
differs), swaps in the int layers, loads their state and folds ATM/OHB (exact, see calibrate).
Only integer-execution presets are saved: fake-quant presets are a simulation, not a deployable
artifact.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from latentstack.kernels.int_linear import W4A8Linear, W8A8Linear

from .apply import QuantResult, RotatedIntLinear, SmoothedLinear, _replace
from .calibrate import ATMOHBCalibration, fold_atm_ohb
from .layouts import select_linears
from .memory import quantized_memory
from .quantizers import QuantConfig

__all__ = ["ArtifactMismatch", "load_quantized", "save_quantized"]

FORMAT = "latentstack.quant"
FORMAT_VERSION = 1
WEIGHTS = "quant.safetensors"
CARD = "card.json"
ATM_OHB = "atm_ohb.json"


_INT = (W8A8Linear, W4A8Linear, RotatedIntLinear)


def _kind(m: nn.Module) -> str:
    return f"SmoothedLinear({type(m.inner).__name__})" if isinstance(m, SmoothedLinear) else type(m).__name__


def _skeleton(kind: str, lin: nn.Linear, cfg: QuantConfig, impl: str) -> nn.Module:
    """A module of the right class and shapes; its state is overwritten from the artifact."""
    if kind.startswith("SmoothedLinear("):
        return SmoothedLinear(_skeleton(kind[len("SmoothedLinear("):-1], lin, cfg, impl), torch.ones(lin.in_features))
    if kind == "RotatedIntLinear":
        return RotatedIntLinear(lin, cfg, impl)
    if kind in ("W8A8Linear", "W4A8Linear"):
        return {"W8A8Linear": W8A8Linear, "W4A8Linear": W4A8Linear}[kind].from_float(lin, impl=impl)
    raise ArtifactMismatch(f"unknown layer class {kind!r} in card")


class ArtifactMismatch(ValueError):
    """The artifact does not belong to this checkpoint / layout / preset / code version."""


def save_quantized(model: nn.Module, result: QuantResult, out_dir: str | os.PathLike, *, source: str | os.PathLike,
                   calibration: ATMOHBCalibration | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write the artifact for ``model`` quantized by ``result`` (ATM/OHB *not* folded into ``model``)."""
    from latentstack.policies.checkpoint import checkpoint_fingerprint

    cfg = result.preset
    if cfg.execution != "int":
        raise ValueError(f"preset {cfg.name!r} is fake-quant; only integer presets are saved as artifacts")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for n in result.replaced:
        m = model.get_submodule(n)
        if not isinstance(m.inner if isinstance(m, SmoothedLinear) else m, _INT):
            raise TypeError(f"{n} is {type(m).__name__}, expected an int layer")
        for k, v in m.state_dict().items():
            tensors[f"{n}.{k}"] = v.detach().contiguous().cpu()
    save_file(tensors, str(out / WEIGHTS), metadata={"format": FORMAT})
    mem = quantized_memory(model, result.replaced, cfg.w_bits, cfg.rotate, cfg.permute, cfg.block)
    mem["file_bytes"] = (out / WEIGHTS).stat().st_size
    card = {"format": FORMAT, "format_version": FORMAT_VERSION, "execution": "int",
            "source": os.fspath(source), "source_fingerprint": checkpoint_fingerprint(source),
            "layout": result.layout, "preset": cfg.as_dict(), "replaced": list(result.replaced),
            "layer_classes": {n: _kind(model.get_submodule(n)) for n in result.replaced},
            "memory": mem, "atm_ohb": calibration is not None,
            "calibration": None if calibration is None else {"preset": calibration.preset,
                                                             "scope": calibration.scope, **calibration.meta},
            **(extra or {})}
    (out / CARD).write_text(json.dumps(card, indent=2))
    if calibration is not None:
        (out / ATM_OHB).write_text(json.dumps(calibration.to_json(), indent=2))
    (out / "CARD.md").write_text(_card_md(card))
    return out


def _card_md(card: dict[str, Any]) -> str:
    m = card["memory"]
    p = card["preset"]
    return (f"# Quantized policy ({p['name']}, layout {card['layout']})\n\n"
            f"- execution: **integer** (torch._int_mm W{p['w_bits']}A{p['a_bits']}, per-token activations"
            f"{', float block rotations/permutation around the GEMM' if p['rotate'] or p['permute'] else ''})\n"
            f"- source checkpoint: `{card['source']}` (sha256 `{card['source_fingerprint'][:16]}…`)\n"
            f"- quantized layers: {len(card['replaced'])}\n"
            f"- quantized-component bytes: {m['measured_bytes']} vs fp32 {m['fp32_bytes']} "
            f"(saving {m['saving_vs_fp32']:.1%}; vs fp16 {m['saving_vs_fp16']:.1%})\n"
            f"- ATM/OHB: {'yes, ' + card['calibration']['preset'] + ' clamps' if card['atm_ohb'] else 'no'}\n")


def _resolve_source(src: str) -> str:
    """A card's relative source path: as given when it exists from the cwd, else under the repo root."""
    if os.path.isabs(src) or Path(src).exists():
        return src
    from latentstack.cli import repo_root

    cand = repo_root() / src
    return str(cand) if cand.exists() else src


def load_quantized(artifact_dir: str | os.PathLike, source: str | os.PathLike | None = None, *,
                   impl: str = "auto", fold: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """Build the quantized policy from an artifact; returns ``(policy, card)``.

    ``source`` defaults to the card's; its fingerprint must match the card's.
    """
    from latentstack.policies.checkpoint import checkpoint_fingerprint
    from latentstack.policies.factory import make_policy

    art = Path(artifact_dir)
    card = json.loads((art / CARD).read_text())
    problems: list[str] = []
    if card.get("format") != FORMAT or card.get("format_version") != FORMAT_VERSION:
        problems.append(f"format {card.get('format')} v{card.get('format_version')} (want {FORMAT} v{FORMAT_VERSION})")
    src = os.fspath(source) if source is not None else _resolve_source(card["source"])
    fp = checkpoint_fingerprint(src)
    if fp != card["source_fingerprint"]:
        problems.append(f"checkpoint fingerprint {fp[:12]}… != card {card['source_fingerprint'][:12]}…")
    if problems:
        raise ArtifactMismatch(f"artifact {art} refused: " + "; ".join(problems))
    policy = make_policy(src)
    cfg = QuantConfig(**card["preset"])
    expect = select_linears(policy, card["layout"])
    if expect != card["replaced"]:
        raise ArtifactMismatch(f"layout {card['layout']!r} selects {len(expect)} layers on this model, "
                               f"card lists {len(card['replaced'])}")
    tensors = load_file(str(art / WEIGHTS))
    used: set[str] = set()
    for n in card["replaced"]:
        lin = policy.get_submodule(n)
        new = _skeleton(card["layer_classes"][n], lin, cfg, impl)
        sd = new.state_dict()
        for k, v in sd.items():
            key = f"{n}.{k}"
            t = tensors.get(key)
            if t is None or t.shape != v.shape or t.dtype != v.dtype:
                problems.append(f"{key}: {None if t is None else (tuple(t.shape), t.dtype)} vs {(tuple(v.shape), v.dtype)}")
            else:
                sd[k] = t
                used.add(key)
        if not problems:
            new.load_state_dict(sd)
            _replace(policy, n, new)
    extra = sorted(set(tensors) - used)
    if extra:
        problems.append(f"unexpected tensors {extra[:5]}")
    if problems:
        raise ArtifactMismatch(f"artifact {art} refused: " + "; ".join(problems[:10]))
    if card.get("atm_ohb"):
        cal = ATMOHBCalibration.from_json(json.loads((art / ATM_OHB).read_text()))
        if fold:
            fold_atm_ohb(policy, cal)
        else:
            card["_calibration"] = cal
    card["_config"] = cfg
    policy.eval()
    return policy, card
