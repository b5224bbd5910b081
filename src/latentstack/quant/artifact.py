"""Quantized-policy artifacts (type ``"vla_quantized"`` in the one artifact format): ``quant.safetensors``
(int codes, scales, biases of the replaced layers) + ``config.json`` (layout, preset, replaced layers and their
classes; ``source`` = the float ``"vla"`` artifact by repo-relative path and fingerprint) + ``atm_ohb.json``
(when calibrated, a hashed side file) + ``CARD.md``.

Loading verifies every file's sha256 (``quant.safetensors`` and ``atm_ohb.json`` are read only as files listed,
with their hash, in ``config.json``), refuses α / β outside :data:`~latentstack.quant.calibrate.ATM_OHB_RANGE`
before building anything, refuses a source artifact other than the recorded one, rebuilds the float policy from
the source, checks layout, preset and tensor shapes against the config (any mismatch is
refused with a list of what differs), swaps in the int layers, loads their state and folds ATM/OHB (exact, see
calibrate). Only integer-execution presets are saved: fake-quant presets are a simulation, not a deployable
artifact.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from latentstack.core.artifacts import ArtifactError, load_artifact, save_artifact
from latentstack.core.card import bullet_lines, header_lines, provenance_lines, render, write_card
from latentstack.core.paths import resolve_path
from latentstack.kernels.int_linear import W4A8Linear, W8A8Linear

from .apply import QuantResult, RotatedIntLinear, SmoothedLinear, _replace
from .calibrate import ATMOHBCalibration, fold_atm_ohb
from .layouts import select_linears
from .memory import quantized_memory
from .quantizers import QuantConfig

__all__ = ["TYPE", "ArtifactMismatch", "load_quantized", "load_quantized_policy", "render_quant_card",
           "save_quantized"]

TYPE = "vla_quantized"
WEIGHTS = "quant.safetensors"
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


class ArtifactMismatch(ArtifactError):
    """The artifact does not belong to this checkpoint / layout / preset / code version."""


def save_quantized(model: nn.Module, result: QuantResult, out_dir: str | os.PathLike, *, source: str | os.PathLike,
                   calibration: ATMOHBCalibration | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write the artifact for ``model`` quantized by ``result`` (ATM/OHB *not* folded into ``model``);
    ``source``: the ``"vla"`` artifact ``model`` was quantized from."""
    cfg = result.preset
    if cfg.execution != "int":
        raise ValueError(f"preset {cfg.name!r} is fake-quant; only integer presets are saved as artifacts")
    tensors: dict[str, torch.Tensor] = {}
    for n in result.replaced:
        m = model.get_submodule(n)
        if not isinstance(m.inner if isinstance(m, SmoothedLinear) else m, _INT):
            raise TypeError(f"{n} is {type(m).__name__}, expected an int layer")
        for k, v in m.state_dict().items():
            tensors[f"{n}.{k}"] = v
    config = {"execution": "int", "layout": result.layout, "preset": cfg.as_dict(), "replaced": list(result.replaced),
              "layer_classes": {n: _kind(model.get_submodule(n)) for n in result.replaced},
              "atm_ohb": calibration is not None,
              "calibration": None if calibration is None else {"preset": calibration.preset,
                                                               "scope": calibration.scope, **calibration.meta}}
    files = {} if calibration is None else {ATM_OHB: json.dumps(calibration.to_json(), indent=2)}
    mem = quantized_memory(model, result.replaced, cfg.w_bits, cfg.rotate, cfg.permute, cfg.block)
    out = save_artifact(out_dir, type=TYPE, config=config, tensors={WEIGHTS: tensors}, files=files,
                        source=resolve_path(source), extra={"memory": mem, **(extra or {})})
    # file_bytes: the weight file as written (it is hashed in config.json, so written first, then recorded)
    doc = json.loads((out / "config.json").read_text())
    doc["extra"]["memory"]["file_bytes"] = (out / WEIGHTS).stat().st_size
    (out / "config.json").write_text(json.dumps(doc, indent=2) + "\n")
    write_card(out, render_quant_card(doc))
    return out


def render_quant_card(doc: dict[str, Any], details: list[str] | None = None) -> str:
    """CARD.md of a quantized artifact from its ``config.json`` document; ``details``: lines of further
    sections (how it was made, what it scored) kept between the summary and the provenance block."""
    c, m = doc["config"], doc["extra"]["memory"]
    p = c["preset"]
    src = doc["source"]
    summary = [
        (f"execution: **integer** (torch._int_mm W{p['w_bits']}A{p['a_bits']}, per-token activations"
         f"{', float block rotations/permutation around the GEMM' if p['rotate'] or p['permute'] else ''})"),
        f"source checkpoint: `{src['path']}` (sha256 `{src['sha256'][:16]}…`)",
        f"quantized layers: {len(c['replaced'])}",
        (f"quantized-component bytes: {m['measured_bytes']} vs fp32 {m['fp32_bytes']} "
         f"(saving {m['saving_vs_fp32']:.1%}; vs fp16 {m['saving_vs_fp16']:.1%})"),
        f"ATM/OHB: {'yes, ' + c['calibration']['preset'] + ' clamps' if c['atm_ohb'] else 'no'}",
    ]
    return render(header_lines(f"Quantized policy ({p['name']}, layout {c['layout']})"), bullet_lines(summary),
                  details or [], provenance_lines(doc))


def load_quantized(artifact_dir: str | os.PathLike, source: str | os.PathLike | None = None, *,
                   impl: str = "auto", fold: bool = True, device: str | torch.device | None = None
                   ) -> tuple[nn.Module, dict[str, Any]]:
    """Build the quantized policy from an artifact; returns ``(policy, card)`` (``card``: the stored config
    plus ``memory``, ``source``, ``source_fingerprint``, ``_config`` and, unfolded, ``_calibration``).

    ``source`` defaults to the artifact's recorded one; its fingerprint must match the recorded one."""
    from latentstack.policies.checkpoint import from_pretrained

    art = load_artifact(artifact_dir, expect_type=TYPE)
    src = resolve_path(source) if source is not None else art.source_path()
    try:
        art.check_source(src)
    except (ArtifactError, OSError) as exc:
        raise ArtifactMismatch(f"artifact {art.path} refused: source fingerprint check failed: {exc}") from exc
    card: dict[str, Any] = {**art.config, **art.extra, "source": art.source["path"],
                            "source_fingerprint": art.source["sha256"]}
    cal = None
    if card.get("atm_ohb"):
        try:  # α / β bounded (ATM_OHB_RANGE) before the policy is even built
            cal = ATMOHBCalibration.from_json(art.read_json(ATM_OHB))
        except ValueError as exc:
            raise ArtifactMismatch(f"artifact {art.path} refused: {ATM_OHB}: {exc}") from exc
    policy = from_pretrained(src)
    cfg = QuantConfig(**card["preset"])
    expect = select_linears(policy, card["layout"])
    if expect != card["replaced"]:
        raise ArtifactMismatch(f"layout {card['layout']!r} selects {len(expect)} layers on this model, "
                               f"config lists {len(card['replaced'])}")
    tensors = art.tensors(WEIGHTS)  # its header must carry this very config (no free fields)
    problems: list[str] = []
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
        raise ArtifactMismatch(f"artifact {art.path} refused: " + "; ".join(problems[:10]))
    if cal is not None:
        if fold:
            fold_atm_ohb(policy, cal)
        else:
            card["_calibration"] = cal
    card["_config"] = cfg
    policy.eval()
    if device is not None:
        policy.to(device)
    return policy, card


def load_quantized_policy(path: str | os.PathLike, *, device: str | torch.device | None = None,
                          source: str | os.PathLike | None = None, impl: str = "auto") -> nn.Module:
    """The artifact-table loader of type ``"vla_quantized"`` (``make_policy``): the policy only."""
    return load_quantized(path, source, impl=impl, device=device)[0]
