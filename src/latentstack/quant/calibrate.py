"""ATM (attention temperature matching) and OHB (output head balancing), spec §5–§6.

Statistics (code-faithful, spec §5/§8):
- logit std per (batch, head) of ``L = q·kᵀ/√d`` in fp32 over unmasked (query, key) entries
  (bool mask: False = masked; float mask: < −1e4 = masked), averaged over the batch, then over
  every attention call (all denoising steps, all observations);
- RMS of the o-proj output over the whole tensor, ``sqrt(mean(Z²) + 1e-12)``, averaged over calls.

Both are read through the latent API (a ``Tap`` on ``attn.sdpa``'s inputs and ``attn.o_proj``'s output);
runtime α/β are an ``Intervention`` on the same sites.

Teacher = float model, student = quantized model with ATM/OHB disabled; both see identical
seeded flow noise. ``α = clamp(σ_T/(σ_Q+1e-6))`` with a neutral band → ``q_h ← α_h·q_h``;
``β = exp(clamp(log(RMS_T/(RMS_Q+1e-6))))`` with a neutral band → ``z ← β·z`` after o-proj,
before the residual add. Both can run as hooks or be folded into ``W_q, b_q`` / ``W_o, b_o``
(exact for float linears and for the int layers' per-output-channel scales); folding α through a
per-head q-norm is refused.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from latentstack.kernels.int_linear import _IntLinearBase
from latentstack.latent import Intervention, Site, Tap

__all__ = [
    "CLAMP_PRESETS",
    "ATMOHBCalibration",
    "ClampPreset",
    "QNormError",
    "apply_atm_ohb",
    "attention_layers",
    "calibrate_atm_ohb",
    "collect_stats",
    "compute_alpha",
    "compute_beta",
    "fold_alpha",
    "fold_atm_ohb",
    "fold_beta",
    "has_q_norm",
    "logit_std_per_head",
]

MASK_THRESHOLD = -1e4


@dataclass(frozen=True)
class ClampPreset:
    name: str
    alpha_clamp: tuple[float, float]  # bounds on α (code) ...
    alpha_log_clamp: float | None  # ... or on |log α| (paper); one of the two is used
    alpha_neutral: float
    alpha_neutral_log: bool  # neutral band on |log α| (paper) or |α − 1| (code)
    beta_log_clamp: float
    beta_neutral: float  # on |log β|


CLAMP_PRESETS: dict[str, ClampPreset] = {
    "code": ClampPreset("code", (0.7, 1.4), None, 0.02, False, 0.30, 0.03),
    "paper": ClampPreset("paper", (0.0, math.inf), 0.30, 0.03, True, 0.30, 0.03),  # App. D log clamp 0.30
    "paper_main": ClampPreset("paper_main", (0.0, math.inf), 0.40, 0.03, True, 0.40, 0.03),  # main text ±0.4
}


def _preset(p: str | ClampPreset) -> ClampPreset:
    if isinstance(p, ClampPreset):
        return p
    try:
        return CLAMP_PRESETS[p]
    except KeyError:
        raise KeyError(f"unknown clamp preset {p!r}; known: {sorted(CLAMP_PRESETS)}") from None


def compute_alpha(sigma_t: torch.Tensor, sigma_q: torch.Tensor, preset: str | ClampPreset = "code") -> torch.Tensor:
    """Per-head ``α = σ_T/(σ_Q+1e-6)``, clamped, neutral band → exactly 1."""
    p = _preset(preset)
    a = sigma_t.double() / (sigma_q.double() + 1e-6)
    if p.alpha_log_clamp is not None:
        a = torch.exp(torch.log(a).clamp(-p.alpha_log_clamp, p.alpha_log_clamp))
    else:
        a = a.clamp(*p.alpha_clamp)
    dev = torch.log(a).abs() if p.alpha_neutral_log else (a - 1).abs()
    a = torch.where(dev < p.alpha_neutral, torch.ones_like(a), a)
    return a.float()


def compute_beta(rms_t: torch.Tensor, rms_q: torch.Tensor, preset: str | ClampPreset = "code") -> torch.Tensor:
    """Per-layer ``β = exp(clamp(log(RMS_T/(RMS_Q+1e-6)), ±c))``; ``|log β| < ε`` → 1."""
    p = _preset(preset)
    lb = torch.log(torch.as_tensor(rms_t).double() / (torch.as_tensor(rms_q).double() + 1e-6))
    lb = lb.clamp(-p.beta_log_clamp, p.beta_log_clamp)
    lb = torch.where(lb.abs() < p.beta_neutral, torch.zeros_like(lb), lb)
    return torch.exp(lb).float()


# --------------------------------------------------------------------------- statistics
def logit_std_per_head(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Std of ``q·kᵀ/√d`` per (batch, head) over unmasked entries → ``(B, nh)`` (fp32)."""
    q, k = q.float(), k.float()
    if k.shape[0] != q.shape[0]:
        k = k.repeat_interleave(q.shape[0] // k.shape[0], 0)
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, nh, Lq, Lk)
    if mask is None:
        return logits.flatten(2).std(dim=-1, unbiased=False)
    valid = mask if mask.dtype == torch.bool else mask > MASK_THRESHOLD
    valid = valid.expand_as(logits).float()
    n = valid.flatten(2).sum(-1).clamp(min=1)
    mean = (logits * valid).flatten(2).sum(-1) / n
    var = (((logits - mean[..., None, None]) ** 2) * valid).flatten(2).sum(-1) / n
    return var.sqrt()


def attention_layers(model: nn.Module, scope: str = "expert") -> dict[str, nn.Module]:
    """Attention modules (having ``q_proj``, ``o_proj``, ``sdpa``) whose path starts with ``scope``."""
    return {n: m for n, m in model.named_modules()
            if n.startswith(scope) and all(hasattr(m, a) for a in ("q_proj", "o_proj", "sdpa"))}


@dataclass
class Stats:
    sigma: dict[str, torch.Tensor] = field(default_factory=dict)  # layer → (nh,) mean logit std
    rms: dict[str, float] = field(default_factory=dict)  # layer → mean o-proj output RMS
    calls: dict[str, int] = field(default_factory=dict)


def _rms(value: torch.Tensor, _meta: dict[str, Any]) -> torch.Tensor:
    """``sqrt(mean(Z²) + 1e-12)`` of a whole o-proj output (a 0-d tensor per call)."""
    return torch.sqrt(value.float().pow(2).mean() + 1e-12)


def _stat_sites(layers: Mapping[str, nn.Module]) -> dict[str, Site]:
    """Per attention layer: the query, key and (optional) mask inputs of ``sdpa`` and the o-proj output.

    The mask is ``sdpa``'s 4th positional argument or its ``attn_mask`` keyword."""
    sites: dict[str, Site] = {}
    for name in layers:
        sites[f"{name}/q"] = Site(f"{name}.sdpa", kind="input", index=0)
        sites[f"{name}/k"] = Site(f"{name}.sdpa", kind="input", index=1)
        sites[f"{name}/mask"] = Site(f"{name}.sdpa", kind="input", index=3, key="attn_mask", optional=True)
        sites[f"{name}/rms"] = Site(f"{name}.o_proj")
    return sites


@contextlib.contextmanager
def collect_stats(model: nn.Module, scope: str = "expert") -> Iterator[Stats]:
    """Read each attention layer's ``sdpa`` inputs and ``o_proj`` output through a :class:`Tap`; on exit
    fill the returned :class:`Stats` with the per-layer means over all calls (in call order)."""
    st = Stats()
    layers = attention_layers(model, scope)
    sites = _stat_sites(layers)
    tap = Tap(model, sites, reduce={n: _rms for n in sites if n.endswith("/rms")})
    try:
        with tap:
            yield st
    finally:
        for name in layers:
            qs, ks = tap.records[f"{name}/q"], tap.records[f"{name}/k"]
            if not qs:
                continue
            masks = {r.call_index: r.value for r in tap.records[f"{name}/mask"]}
            total: torch.Tensor | None = None
            for q, k in zip(qs, ks, strict=True):
                s = logit_std_per_head(q.value, k.value, masks.get(q.call_index)).mean(0)
                total = (torch.zeros_like(s) if total is None else total) + s
            rsum = 0.0
            for r in tap.records[f"{name}/rms"]:
                rsum += float(r.value)
            st.calls[name] = len(qs)
            st.sigma[name] = total / len(qs)
            st.rms[name] = rsum / len(qs)


# --------------------------------------------------------------------------- application
class QNormError(RuntimeError):
    """Raised when α would have to be folded through a per-head q normalization."""


_QNORM_NAMES = ("q_norm", "norm_q", "q_layernorm", "query_norm", "q_ln")


def has_q_norm(attn: nn.Module) -> bool:
    """True if a (non-identity) normalization sits on the query path (attribute names of common
    implementations, or ``attn.qk_norm`` flag)."""
    for a in _QNORM_NAMES:
        m = getattr(attn, a, None)
        if isinstance(m, nn.Module) and not isinstance(m, nn.Identity):
            return True
    return bool(getattr(attn, "qk_norm", False))


def _scale_rows(lin: nn.Module, rows: torch.Tensor) -> None:
    """Multiply output channel o of a linear by ``rows[o]`` (weight rows and bias), exactly."""
    with torch.no_grad():
        if isinstance(lin, _IntLinearBase):
            lin.weight_scale.mul_(rows.to(lin.weight_scale))  # per-output-channel dequant scale
        elif isinstance(lin, nn.Linear):
            lin.weight.mul_(rows.to(lin.weight)[:, None])
        elif hasattr(lin, "weight_scale") and lin.weight_scale is not None and not getattr(lin, "r_out", None):
            lin.weight_scale.mul_(rows.to(lin.weight_scale))
        else:
            raise TypeError(f"cannot fold a per-row scale into {type(lin).__name__}")
        if getattr(lin, "bias", None) is not None:
            lin.bias.mul_(rows.to(lin.bias))


def fold_alpha(attn: nn.Module, alpha: torch.Tensor) -> None:
    """``q_h ← α_h q_h`` folded into head h's rows of ``W_q`` (and ``b_q``). Refuses a q-norm."""
    if has_q_norm(attn):
        raise QNormError(f"{type(attn).__name__} normalizes q after the projection: α cannot be folded "
                         "into W_q (apply it as a runtime query scale instead)")
    nh = len(alpha)
    hd = attn.q_proj.out_features // nh
    _scale_rows(attn.q_proj, alpha.float().repeat_interleave(hd))


def fold_beta(attn: nn.Module, beta: float | torch.Tensor) -> None:
    """``z ← β z`` after o-proj folded into ``W_o, b_o`` (same result as the runtime multiply)."""
    _scale_rows(attn.o_proj, torch.full((attn.o_proj.out_features,), float(beta)))


@dataclass
class ATMOHBCalibration:
    """α per layer × head, β per layer, with the statistics and settings they came from."""

    alpha: dict[str, torch.Tensor]
    beta: dict[str, float]
    preset: str
    scope: str = "expert"
    teacher: Stats | None = None
    student: Stats | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"alpha": {k: v.tolist() for k, v in self.alpha.items()}, "beta": dict(self.beta),
                "preset": self.preset, "scope": self.scope, "meta": self.meta,
                "sigma_teacher": None if self.teacher is None else {k: v.tolist() for k, v in self.teacher.sigma.items()},
                "sigma_student": None if self.student is None else {k: v.tolist() for k, v in self.student.sigma.items()},
                "rms_teacher": None if self.teacher is None else self.teacher.rms,
                "rms_student": None if self.student is None else self.student.rms}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ATMOHBCalibration:
        """Parse ``atm_ohb.json``; refuses (ValueError) values outside :data:`ATM_OHB_RANGE` first."""
        check_atm_ohb_json(d)
        return cls({k: torch.tensor(v) for k, v in d["alpha"].items()}, {k: float(v) for k, v in d["beta"].items()},
                   d["preset"], d.get("scope", "expert"), meta=dict(d.get("meta", {})))


# The documented range of every α (per head) and β (per layer) a calibration file may hold. Calibration clamps
# them to exp(±0.4) ≈ [0.67, 1.49] at most (CLAMP_PRESETS); [0.1, 10] leaves room for other presets while
# refusing what can only be a corrupt or hostile file (β = 1e30 gave NaN actions; α ≤ 0 flips attention).
ATM_OHB_RANGE: tuple[float, float] = (0.1, 10.0)


def _scale_ok(x: Any) -> bool:
    return (isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
            and ATM_OHB_RANGE[0] <= x <= ATM_OHB_RANGE[1])


def check_atm_ohb_json(d: Any) -> None:
    """Refuse (ValueError naming the entry) an ATM/OHB document whose α lists or β values are not finite
    numbers in :data:`ATM_OHB_RANGE`, or whose preset / scope are not strings."""
    if not isinstance(d, Mapping):
        raise ValueError("ATM/OHB calibration: not a JSON object")  # noqa: TRY004 (a malformed file: ValueError)
    alpha, beta = d.get("alpha"), d.get("beta")
    if not isinstance(alpha, Mapping) or not isinstance(beta, Mapping):
        raise ValueError("ATM/OHB calibration: 'alpha' and 'beta' must be objects (layer -> values)")  # noqa: TRY004
    for name, values in alpha.items():
        if not isinstance(values, list) or not values or not all(_scale_ok(v) for v in values):
            raise ValueError(f"ATM/OHB alpha[{name!r}] = {str(values)[:80]} is not a non-empty list of finite "
                             f"numbers in {list(ATM_OHB_RANGE)}")
    for name, value in beta.items():
        if not _scale_ok(value):
            raise ValueError(f"ATM/OHB beta[{name!r}] = {value!r} is not a finite number in {list(ATM_OHB_RANGE)}")
    if not isinstance(d.get("preset"), str) or not isinstance(d.get("scope", "expert"), str):
        raise ValueError("ATM/OHB calibration: 'preset' and 'scope' must be strings")  # noqa: TRY004


def _query_scale(alpha: torch.Tensor) -> Callable[[torch.Tensor, dict[str, Any]], torch.Tensor]:
    return lambda q, _meta: q * alpha.to(q)[None, :, None, None]  # q: (B, nh, L, hd)


def _output_scale(beta: float) -> Callable[[torch.Tensor, dict[str, Any]], torch.Tensor]:
    return lambda z, _meta: z * beta


@contextlib.contextmanager
def apply_atm_ohb(model: nn.Module, cal: ATMOHBCalibration, atm: bool = True, ohb: bool = True) -> Iterator[None]:
    """Runtime ATM/OHB as an :class:`Intervention`: the query input of ``sdpa`` scaled per head by α,
    the o-proj output by β; removed on exit (the model is bit-identical afterwards)."""
    edits: dict[Site, Callable[[torch.Tensor, dict[str, Any]], torch.Tensor]] = {}
    for name in attention_layers(model, cal.scope):
        if atm and name in cal.alpha:
            edits[Site(f"{name}.sdpa", kind="input", index=0)] = _query_scale(cal.alpha[name].float())
        if ohb and name in cal.beta:
            edits[Site(f"{name}.o_proj")] = _output_scale(float(cal.beta[name]))
    with Intervention(model, edits):
        yield


def fold_atm_ohb(model: nn.Module, cal: ATMOHBCalibration, atm: bool = True, ohb: bool = True) -> None:
    """Fold α into ``W_q``/``b_q`` and β into ``W_o``/``b_o`` in place (refuses q-norm layers first,
    before touching any weight)."""
    layers = attention_layers(model, cal.scope)
    if atm:
        bad = [n for n in cal.alpha if n in layers and has_q_norm(layers[n])]
        if bad:
            raise QNormError(f"q-norm in {bad}: α cannot be folded into W_q")
    for name, attn in layers.items():
        if atm and name in cal.alpha:
            fold_alpha(attn, cal.alpha[name])
        if ohb and name in cal.beta:
            fold_beta(attn, cal.beta[name])


# --------------------------------------------------------------------------- calibration
def calibrate_atm_ohb(teacher: nn.Module, student: nn.Module, run: Callable[[nn.Module], Any],
                      preset: str | ClampPreset = "code", scope: str = "expert",
                      meta: Mapping[str, Any] | None = None) -> ATMOHBCalibration:
    """Measure σ and RMS on ``teacher`` and on ``student`` (ATM/OHB off) with ``run(model)`` — which
    must feed both the same observations and the same seeded noise — then compute α and β.

    α and β come from the same uncorrected student pass (the released GR00T script's order).
    """
    p = _preset(preset)
    with torch.no_grad(), collect_stats(teacher, scope) as st_t:
        run(teacher)
    with torch.no_grad(), collect_stats(student, scope) as st_q:
        run(student)
    if set(st_t.sigma) != set(st_q.sigma) or not st_t.sigma:
        raise ValueError(f"teacher/student attention layers differ or none seen in scope {scope!r}: "
                         f"{sorted(st_t.sigma)} vs {sorted(st_q.sigma)}")
    alpha = {n: compute_alpha(st_t.sigma[n], st_q.sigma[n], p) for n in st_t.sigma}
    beta = {n: float(compute_beta(torch.tensor(st_t.rms[n]), torch.tensor(st_q.rms[n]), p)) for n in st_t.rms}
    return ATMOHBCalibration(alpha, beta, p.name, scope, st_t, st_q, dict(meta or {}))


def policy_runner(batches: Sequence[Mapping[str, Any]], seed: int = 0) -> Callable[[nn.Module], None]:
    """``run(model)`` for :func:`calibrate_atm_ohb`: ``predict_action_chunk`` on each batch with a
    generator reseeded to ``seed + i`` (identical noise for teacher and student)."""
    def run(model: nn.Module) -> None:
        for i, b in enumerate(batches):
            model.predict_action_chunk(b, generator=torch.Generator().manual_seed(seed + i))
    return run


def drift(teacher: Stats, student: Stats) -> dict[str, dict[str, float]]:
    """Per layer: mean ``|log(σ_Q/σ_T)|`` over heads and ``|log(RMS_Q/RMS_T)|`` (spec test 10)."""
    return {n: {"logit_std": float((student.sigma[n] / teacher.sigma[n]).log().abs().mean()),
                "rms": abs(math.log(student.rms[n] / teacher.rms[n]))} for n in teacher.sigma}
