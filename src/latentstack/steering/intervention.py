"""COAST steering as a latent ``Intervention`` + controls + artifacts (coast.md §6-7, §10).

The gate is ``h ← h Mᵀ``, ``M = (1 − β) I + β C`` (the shared kernel's precomputed-M path,
:func:`latentstack.kernels.conceptor.gate_matrix` + one matmul) on every action token of the chosen site's
output, at every denoising step (``global``: one C) or with ``C_t`` selected by the sampler's
``denoise_step`` annotation (``per_step``: C of shape ``(D, d, d)``; an out-of-range or missing step
raises). β = 0 is an exact no-op: the edit returns its input object, which ``Intervention`` treats
as "leave the output untouched", so outputs are bit-identical to the unhooked model.

Conditions / controls (§7): ``conceptor`` (C_steer), ``shrinkage`` (C = 0 ⇒ h' = (1 − β) h),
``random_matched`` (same spectrum, random eigenvectors, seed independent of β), ``positive_only``
(C = C_s), ``linear`` (CAA: h' = h + m·v, m a magnitude, β ignored).

Artifacts (type ``"conceptor"`` in the one artifact format): a folder ``<stem>/`` with ``conceptor.safetensors``
(float32 tensors ``C`` and, when known, ``C_success``, ``C_failure``, ``direction``), ``config.json`` (the card:
kind, preset, site/layer, strategy, α, β, seeds, d, D, sample counts; ``source`` = the policy artifact the
rollouts came from, by repo-relative path and fingerprint) and ``CARD.md``. Loading verifies the sha256 of the
files and refuses a card/tensor or an expected ``d`` mismatch, a matrix that is not a conceptor (symmetric,
eigenvalues in [0, 1]: :func:`check_conceptor`), and (``source=``) a different policy artifact; attaching it to a
policy (:meth:`SteeringArtifact.intervention`) refuses a per-step operator whose step count differs from the
policy's denoising steps per chunk (:func:`denoise_steps`: the VLA's ``num_inference_steps``, 1 for ACT).
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from latentstack.core.artifacts import ArtifactError, is_artifact, load_artifact, save_artifact
from latentstack.core.card import bullet_lines, header_lines, provenance_lines, render, write_card
from latentstack.core.paths import portable_path, resolve_path
from latentstack.kernels.conceptor import gate_matrix, mark_graph_safe
from latentstack.latent import Intervention, Site

from . import conceptors as cz
from .fit import SteeringFit

__all__ = [
    "ARTIFACT_FORMAT",
    "ARTIFACT_TYPE",
    "Condition",
    "SteeredPolicy",
    "SteeringArtifact",
    "check_conceptor",
    "conceptor_edit",
    "denoise_steps",
    "gate_diagnostics",
    "linear_edit",
    "make_operator",
    "render_conceptor_card",
    "steer",
    "steer_linear",
]

ARTIFACT_FORMAT = "latentstack.coast/1"  # the legacy (v1) card format, converted by scripts/convert_artifacts.py
ARTIFACT_TYPE = "conceptor"
TENSORS = "conceptor.safetensors"
Condition = Literal["conceptor", "shrinkage", "random_matched", "positive_only", "linear"]
Edit = Callable[[torch.Tensor, dict[str, Any]], torch.Tensor]


def _check_operator(C: torch.Tensor) -> None:
    if C.ndim not in (2, 3) or C.shape[-1] != C.shape[-2]:
        raise ValueError(f"C must be (d, d) or (D, d, d), got {tuple(C.shape)}")
    if not torch.isfinite(C).all():
        raise ValueError("C has non-finite entries")


CONCEPTOR_ATOL = 1e-6  # how far from symmetric / outside [0, 1] an artifact's eigenvalues may be (float32 rounding)


def check_conceptor(C: torch.Tensor, what: str = "C", *, symmetric: bool = True) -> None:
    """Refuse (ValueError) a matrix that is not a conceptor: ``(d, d)`` or ``(D, d, d)``, finite, symmetric and
    with every eigenvalue in [0, 1] (within :data:`CONCEPTOR_ATOL`). The gate ``(1 − β) I + β C`` of a
    conceptor only shrinks a latent; ``C = 1000·I`` would multiply it by ~500. Checked when an artifact is
    loaded or attached; :func:`steer` itself stays open to any operator (research controls).

    ``symmetric=False``: the released COAST code's AND (preset ``and_mode="repo"``, ``A (A + B − AB)⁻¹ B``) is
    not symmetric unless its operands commute (and its eigenvalues may then be slightly complex); it is still
    refused unless the real parts of its eigenvalues lie in [0, 1] and its spectral norm is at most 1 (so the
    gate never amplifies)."""
    _check_operator(C)
    C64 = C.detach().to(torch.float64)
    tol = CONCEPTOR_ATOL
    asym = (C64 - C64.transpose(-1, -2)).abs().max().item() if C64.numel() else 0.0
    if symmetric:
        if asym > tol:
            raise ValueError(f"{what} is not symmetric (max |C - Cᵀ| = {asym:.3g} > {tol})")
        ev = torch.linalg.eigvalsh(0.5 * (C64 + C64.transpose(-1, -2)))
    else:
        # The released AND of two noisy per-step estimates can have slightly complex eigenvalue pairs (|Im| ~ 1e-3
        # measured on real taps); what keeps the gate safe is that it never amplifies: spectral norm <= 1.
        ev_c = torch.linalg.eigvals(C64)
        ev = ev_c.real
        norm = torch.linalg.matrix_norm(C64, 2).max().item()
        if norm > 1.0 + tol:
            raise ValueError(f"{what} is not a conceptor: spectral norm {norm:.6g} > 1 (its gate would amplify)")
    lo, hi = ev.min().item(), ev.max().item()
    if lo < -tol or hi > 1.0 + tol:
        raise ValueError(f"{what} is not a conceptor: eigenvalues in [{lo:.6g}, {hi:.6g}], outside [0, 1] "
                         f"(tolerance {tol})")


def _symmetric_by_card(card: Mapping[str, Any]) -> bool:
    """Only the released-code AND (preset ``and_mode="repo"``) makes a non-symmetric operator."""
    preset = card.get("preset")
    return not (isinstance(preset, Mapping) and preset.get("and_mode") == "repo")


def denoise_steps(model: Any) -> int | None:
    """The number of denoising steps a policy runs per chunk, if it says: ``num_denoise_steps`` on the policy
    (a policy without a denoising loop, e.g. the ACT adapter: 1, every chunk call annotated ``denoise_step=0``)
    or else ``config.num_inference_steps`` (the flow-matching VLA)."""
    n = getattr(model, "num_denoise_steps", None)
    if n is None:
        n = getattr(getattr(model, "config", None), "num_inference_steps", None)
    return int(n) if isinstance(n, int) and not isinstance(n, bool) else None


def conceptor_edit(C: torch.Tensor, beta: float, step_key: str = "denoise_step") -> Edit:
    """The edit ``fn(value, meta)`` applying ``h Mᵀ`` over the last dim (all tokens).

    ``C (d, d)``: global. ``C (D, d, d)``: per step, indexed by ``meta[step_key]``.
    ``Mᵀ`` is built once (float64, then cast once per dtype/device), so a call costs one matmul:
    on a model as small as ours the gate's per-call Python/dispatch work is what the policy call
    notices, not its FLOPs (``reports/coast/``: overhead ratio).
    """
    beta = float(beta)
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    C = C.detach()
    _check_operator(C)
    per_step = C.ndim == 3
    d = C.shape[-1]
    Mt64 = gate_matrix(C.to(torch.float64), beta).transpose(-1, -2).contiguous()
    cache: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}

    def edit(value: torch.Tensor, meta: dict[str, Any]) -> torch.Tensor:
        if value.shape[-1] != d:
            raise ValueError(f"steering operator has d = {d}, site value has d = {value.shape[-1]}")
        if beta == 0.0:
            return value  # short-circuit: bit-identical
        key = (value.dtype, value.device)
        Mt = cache.get(key)
        if Mt is None:
            Mt = cache[key] = Mt64.to(device=value.device, dtype=value.dtype)
        if per_step:
            t = meta.get(step_key)
            if t is None:
                raise KeyError(f"per-step steering needs the {step_key!r} annotation; meta = {sorted(meta)}")
            t = int(t)
            if not 0 <= t < Mt.shape[0]:
                raise IndexError(f"{step_key} = {t} out of range for {Mt.shape[0]} per-step conceptors")
            return torch.matmul(value, Mt[t])
        return torch.matmul(value, Mt)

    return mark_graph_safe(edit)  # pure in (value, denoise_step): the VLA's CUDA graph captures it


def linear_edit(direction: torch.Tensor, magnitude: float) -> Edit:
    """CAA / linear control: ``h' = h + m·v`` on every token; ``m = 0`` returns the input (no-op)."""
    v = direction.detach().reshape(-1)
    m = float(magnitude)

    def edit(value: torch.Tensor, meta: dict[str, Any]) -> torch.Tensor:
        if value.shape[-1] != v.shape[0]:
            raise ValueError(f"direction has d = {v.shape[0]}, site value has d = {value.shape[-1]}")
        if m == 0.0:
            return value
        return value + m * v.to(device=value.device, dtype=value.dtype)

    return edit


STEER_MODE = "wrap"  # latent.Intervention mode: same outputs as "hook", without torch's hooked-call cost


def steer(model: nn.Module, site: str | Site, C: torch.Tensor, beta: float,
          step_key: str = "denoise_step", mode: str = STEER_MODE) -> Intervention:
    """An ``Intervention`` gating ``site`` with ``M = (1 − β) I + β C`` (use as a ``with`` block).

    ``mode="wrap"`` (default) edits inside a forward wrapper, so a Tap on the *same* site sees the
    steered value; pass ``mode="hook"`` to order it after such a Tap instead.
    """
    return Intervention(model, {site: conceptor_edit(C, beta, step_key)}, mode=mode)


def steer_linear(model: nn.Module, site: str | Site, direction: torch.Tensor, magnitude: float,
                 mode: str = STEER_MODE) -> Intervention:
    return Intervention(model, {site: linear_edit(direction, magnitude)}, mode=mode)


def make_operator(condition: Condition, fit: SteeringFit | SteeringArtifact, seed: int = 0) -> torch.Tensor:
    """The float32 operator of a conceptor-type condition from a fit/artifact (same layout as its C).

    ``random_matched`` draws eigenvectors from ``seed`` (per-step: ``seed + t``), never from β.
    """
    C = fit.C
    if condition == "conceptor":
        return C.float()
    if condition == "shrinkage":
        return torch.zeros_like(C, dtype=torch.float32)
    if condition == "positive_only":
        if fit.C_success is None:
            raise ValueError("positive_only needs C_success")
        return fit.C_success.float()
    if condition == "random_matched":
        if C.ndim == 2:
            return cz.random_matched(C, seed).float()
        return torch.stack([cz.random_matched(C[t], seed + t) for t in range(C.shape[0])]).float()
    raise ValueError(f"no operator for condition {condition!r} (linear uses steer_linear)")


def gate_diagnostics(h: torch.Tensor, C: torch.Tensor, beta: float) -> dict[str, float]:
    """Offline gate diagnostic on stored states ``h (..., d)`` (§7): means over rows of
    ``‖Δh‖/‖h‖``, ``cos(Δh, h)`` and ``hᵀCh/‖h‖²``. ``‖Δh‖/‖h‖ ≈ β`` with ``cos ≈ −1`` means the
    gate is shrinkage-dominated. Per-step C: ``h`` must be ``(D, ..., d)``."""
    h = h.detach().to(torch.float64)
    C = C.detach().to(torch.float64)
    if C.ndim == 3:
        if h.shape[0] != C.shape[0]:
            raise ValueError(f"per-step C has {C.shape[0]} steps, h has leading dim {h.shape[0]}")
        hs = [h[t].reshape(-1, h.shape[-1]) for t in range(C.shape[0])]
        h2 = torch.cat(hs)
        hC = torch.cat([x @ C[t].T for t, x in enumerate(hs)])
    else:
        h2 = h.reshape(-1, h.shape[-1])
        hC = h2 @ C.T
    dh = float(beta) * (hC - h2)
    hn = h2.norm(dim=-1).clamp_min(1e-300)
    dn = dh.norm(dim=-1)
    cos = torch.where(dn > 0, (dh * h2).sum(-1) / (dn * hn).clamp_min(1e-300), torch.zeros_like(dn))
    return {"rel_change": float((dn / hn).mean()), "cos": float(cos.mean()),
            "hCh": float(((h2 * hC).sum(-1) / hn**2).mean()), "beta": float(beta)}


def _stem(path: str | Path) -> Path:
    """The artifact folder (names may contain dots, e.g. ``expert.layer1``): a file inside it names the folder;
    the legacy ``<stem>.json`` / ``<stem>.safetensors`` suffixes are stripped."""
    p = Path(path)
    if p.name in ("config.json", TENSORS):
        return p.parent
    for suf in (".safetensors", ".json"):
        if p.name.endswith(suf):
            return p.with_name(p.name[: -len(suf)])
    return p


def _with(stem: Path, suffix: str) -> Path:
    return stem.with_name(stem.name + suffix)


@dataclass
class SteeringArtifact:
    """Fitted steering tensors + card. ``C``: ``(d, d)`` or ``(D, d, d)`` float32."""

    C: torch.Tensor
    card: dict[str, Any]
    C_success: torch.Tensor | None = None
    C_failure: torch.Tensor | None = None
    direction: torch.Tensor | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def d(self) -> int:
        return int(self.C.shape[-1])

    @classmethod
    def from_fit(cls, fit: SteeringFit, *, beta: float | None = None, layer: int | None = None,
                 seeds: Mapping[str, Any] | None = None, **card: Any) -> SteeringArtifact:
        c = {"site": fit.site, "layer": layer, "strategy": fit.strategy, "alpha": fit.alpha, "beta": beta,
             "preset": fit.preset.to_dict(), "seeds": dict(seeds or {}), "n_samples": fit.n_samples,
             "n_episodes": fit.n_episodes,
             "diagnostics": {k: v for k, v in fit.diagnostics.items() if k != "per_step"}, **card}
        return cls(fit.C.float(), c, fit.C_success.float(), fit.C_failure.float(), fit.direction.float())

    def save(self, stem: str | Path, *, source: str | Path | None = None) -> tuple[Path, Path]:
        """Write the artifact folder ``<stem>/``; returns its ``(conceptor.safetensors, config.json)``.

        ``source``: the policy artifact it was fitted on (default: the card's ``policy`` when that is an
        artifact folder); recorded by path and fingerprint so a different policy can be refused."""
        stem = _stem(stem)
        tensors = {"C": self.C}
        for k in ("C_success", "C_failure", "direction"):
            if getattr(self, k) is not None:
                tensors[k] = getattr(self, k)
        tensors |= self.extra
        tensors = {k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}
        card = {**{k: v for k, v in self.card.items() if k != "format"}, "d": self.d,
                "num_steps": int(self.C.shape[0]) if self.C.ndim == 3 else None, "dtype": "float32"}
        card = json.loads(json.dumps(card, sort_keys=True, default=str))  # plain JSON (paths, numpy scalars)
        if isinstance(card.get("policy"), str):
            policy = resolve_path(card["policy"])
            if source is None and is_artifact(policy):
                source = policy
            if Path(card["policy"]).is_absolute():  # recorded repo-relative, never a machine's path
                card["policy"] = portable_path(policy)
        save_artifact(stem, type=ARTIFACT_TYPE, config=card, tensors={TENSORS: tensors}, source=source)
        write_card(stem, render_conceptor_card(stem))
        return stem / TENSORS, stem / "config.json"

    @classmethod
    def load(cls, stem: str | Path, expected_d: int | None = None, *,
             source: str | Path | None = None) -> SteeringArtifact:
        """Read an artifact folder; refuses tampered files, a card whose ``d`` disagrees with the tensors or
        with ``expected_d``, and (``source``) a policy artifact other than the one it was fitted on."""
        stem = _stem(stem)
        if not stem.is_dir() and _with(stem, ".json").is_file():
            raise ArtifactError(f"{stem}: a legacy {ARTIFACT_FORMAT} conceptor (<stem>.json + .safetensors); "
                                "convert it with `python scripts/convert_artifacts.py`")
        art = load_artifact(stem, expect_type=ARTIFACT_TYPE)
        if source is not None:
            art.check_source(source)
        card = dict(art.config)
        t = art.tensors(TENSORS)
        C = t.pop("C")
        sym = _symmetric_by_card(card)
        check_conceptor(C, f"{stem}: C", symmetric=sym)  # at load, not at the first action
        d = int(C.shape[-1])
        if int(card.get("d", -1)) != d:
            raise ValueError(f"{stem}: card says d = {card.get('d')}, tensor C has d = {d}")
        if expected_d is not None and int(expected_d) != d:
            raise ValueError(f"{stem}: artifact has d = {d}, the target site has d = {expected_d}")
        for k in ("C_success", "C_failure"):
            if k in t and tuple(t[k].shape) != tuple(C.shape):
                raise ValueError(f"{stem}: {k} shape {tuple(t[k].shape)} != C shape {tuple(C.shape)}")
            if k in t:
                check_conceptor(t[k], f"{stem}: {k}")  # fitted per class: symmetric in every preset
        if "direction" in t and tuple(t["direction"].shape) != (d,):
            raise ValueError(f"{stem}: direction shape {tuple(t['direction'].shape)} != ({d},)")
        return cls(C, card, t.pop("C_success", None), t.pop("C_failure", None), t.pop("direction", None), t)

    def intervention(self, model: nn.Module, beta: float | None = None, condition: Condition = "conceptor",
                     site: str | Site | None = None, seed: int = 0, magnitude: float | None = None,
                     mode: str = STEER_MODE) -> Intervention:
        """The steering ``Intervention`` for ``condition`` (β defaults to the card's; linear uses ``magnitude``)."""
        site = site or self.card.get("site")
        if not site:
            raise ValueError("no site given and the card names none")
        if condition == "linear":
            if self.direction is None:
                raise ValueError("artifact has no linear direction")
            if magnitude is None:
                raise ValueError("linear steering needs a magnitude")
            return steer_linear(model, site, self.direction, magnitude, mode=mode)
        b = self.card.get("beta") if beta is None else beta
        if b is None:
            raise ValueError("no beta given and the card names none")
        # attach time, not the first action: a non-conceptor, or per-step operators for another step count
        check_conceptor(self.C, symmetric=_symmetric_by_card(self.card))
        steps = denoise_steps(model)
        if self.C.ndim == 3 and steps is not None and int(self.C.shape[0]) != steps:
            raise ValueError(f"per-step conceptor has {self.C.shape[0]} steps, the policy runs "
                             f"num_inference_steps = {steps} denoising step(s) per action chunk")
        return steer(model, site, make_operator(condition, self, seed), float(b), mode=mode)


def render_conceptor_card(stem: str | Path) -> str:
    """CARD.md of one conceptor artifact, from its ``config.json`` (numbers copied, never typed in)."""
    doc = json.loads((Path(stem) / "config.json").read_text())
    c = doc["config"]
    n_s, n_e = c.get("n_samples") or {}, c.get("n_episodes") or {}
    items = [
        f"site `{c.get('site')}` (layer {c.get('layer')}), strategy {c.get('strategy')}"
        + (f" ({c['num_steps']} × C_t)" if c.get("num_steps") else ""),
        f"α = {c.get('alpha')}, β = {c.get('beta')}, preset `{(c.get('preset') or {}).get('name')}`, d = {c.get('d')}",
        (f"fitted on {n_e.get('success')} successful / {n_e.get('failure')} failed episodes "
         f"({n_s.get('success')} / {n_s.get('failure')} samples) of `{c.get('policy')}` on suite "
         f"`{c.get('suite')}`, {(c.get('seeds') or {}).get('split')} seeds"),
    ]
    if c.get("test_result") and c.get("test_base"):
        tr, tb = c["test_result"], c["test_base"]
        items.append(f"selected as `{c.get('selected_as')}`: test success {tr['success']:.1%} "
                     f"[{tr['ci_low']:.2f}, {tr['ci_high']:.2f}] vs base {tb['success']:.1%} "
                     f"[{tb['ci_low']:.2f}, {tb['ci_high']:.2f}]")
    items.append("load: `SteeringArtifact.load(\"<this folder>\")`, or the policy node's `steering` parameter")
    return render(header_lines(f"COAST conceptor `{Path(stem).name}`"), bullet_lines(items), provenance_lines(doc))


class SteeredPolicy:
    """A Policy (``reset`` / ``select_action``) whose every ``select_action`` runs inside ``intervention``.

    Hooks exist only during this wrapper's calls, so several conditions can share one underlying
    policy object in one ``evaluate`` run (paired seeds). Other attributes delegate to the policy.
    """

    def __init__(self, policy: Any, intervention: Intervention | None) -> None:
        self.policy, self.intervention = policy, intervention

    def reset(self, seed: int | None = None) -> None:
        self.policy.reset(seed=seed)

    def select_action(self, obs: Any) -> Any:
        if self.intervention is None:
            return self.policy.select_action(obs)
        with self.intervention:
            return self.policy.select_action(obs)

    def __getattr__(self, name: str) -> Any:
        if name in ("policy", "intervention"):
            raise AttributeError(name)
        return getattr(self.policy, name)
