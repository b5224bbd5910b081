"""Fitting COAST steering conceptors from tapped success / failure rollouts (coast.md §4-5).

Data layout: one episode's hidden states at one site is a tensor ``H (T, D, S, d)`` —
T policy calls (chunk predictions), D denoise steps, S action tokens, d features. Build it from
``Tap`` records with :func:`states_from_records`.

Presets (spec §5):

============  ========  ======  ============  ================  =========
preset        pool      center  AND           per-step α        min/class
============  ========  ======  ============  ================  =========
``paper``     mean      yes     Jaeger        free (the grid)   3
``repo``      flatten   no      A(A+B−AB)⁻¹B  fixed 1.0 (D4)    2
============  ========  ======  ============  ================  =========

D6 (per-step + pooling gives N < d): the ``paper`` preset's policy is ``small_n="regularize"``:
R's eigenvalues below ``rcond · λ_max`` are treated as exact zeros (so C is exactly PSD and
singular), and AND is Jaeger's general definition, which is well-posed for singular operands.
The result is checked to be a symmetric PSD conceptor (else :class:`FitError`). ``small_n="raise"``
refuses any class with fewer rows than d instead. Everything is computed in float64 and stored
float32.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch

from . import conceptors as cz

__all__ = [
    "PRESETS",
    "FitError",
    "InsufficientEpisodes",
    "Preset",
    "SteeringFit",
    "build_samples",
    "class_correlation",
    "fit_contrastive",
    "fit_layers",
    "get_preset",
    "linear_direction",
    "states_from_records",
]

Pool = Literal["mean", "flatten"]
Strategy = Literal["global", "per_step"]


class FitError(RuntimeError):
    """The fit would produce an invalid (non-finite, non-symmetric or non-PSD) operator."""


class InsufficientEpisodes(ValueError):
    """A class has fewer episodes than the preset's ``min_per_class``."""


@dataclass(frozen=True)
class Preset:
    name: str
    pool: Pool
    center: bool
    and_mode: cz.AndMode
    per_step_alpha: float | None  # None = use the α grid; a number = fixed (repo: 1.0)
    min_per_class: int
    small_n: Literal["regularize", "raise"] = "regularize"
    rcond: float = 1e-10

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "pool": self.pool, "center": self.center, "and_mode": self.and_mode,
                "per_step_alpha": self.per_step_alpha, "min_per_class": self.min_per_class,
                "small_n": self.small_n, "rcond": self.rcond}


PRESETS: dict[str, Preset] = {
    "paper": Preset("paper", pool="mean", center=True, and_mode="jaeger", per_step_alpha=None, min_per_class=3),
    "repo": Preset("repo", pool="flatten", center=False, and_mode="repo", per_step_alpha=1.0, min_per_class=2),
}


def get_preset(preset: str | Preset, **overrides: Any) -> Preset:
    """A named preset (``paper`` / ``repo``) or a Preset, with field overrides (renamed ``<base>+custom``)."""
    p = preset if isinstance(preset, Preset) else PRESETS.get(preset)
    if p is None:
        raise ValueError(f"unknown preset {preset!r}; known: {sorted(PRESETS)}")
    if overrides:
        p = replace(p, **overrides)
        if not p.name.endswith("+custom"):
            p = replace(p, name=p.name + "+custom")
    if p.pool not in ("mean", "flatten") or p.and_mode not in ("jaeger", "repo") or p.small_n not in ("regularize", "raise"):
        raise ValueError(f"invalid preset {p}")
    return p


# ---------------------------------------------------------------- records -> (T, D, S, d)
def states_from_records(records: Sequence[Any], num_steps: int | None = None) -> torch.Tensor:
    """Group a site's ``TapRecord``s (call order) into ``(T, D, S, d)``.

    A new policy call starts at every record with ``meta['denoise_step'] == 0``; each call must
    carry denoise steps ``0..D−1`` in order. A batched value ``(B, S, d)`` contributes B calls.
    """
    if not records:
        raise ValueError("no records")
    calls: list[list[torch.Tensor]] = []
    for r in records:
        k = r.meta.get("denoise_step")
        if k is None:
            raise ValueError(f"record {r.call_index} has no 'denoise_step' annotation")
        v = r.value
        if v.ndim == 2:
            v = v[None]
        if v.ndim != 3:
            raise ValueError(f"expected (B, S, d) or (S, d) values, got {tuple(r.value.shape)}")
        if int(k) == 0:
            calls.append([])
        elif not calls or len(calls[-1]) != int(k):
            raise ValueError(f"record {r.call_index}: denoise_step {k} out of order")
        calls[-1].append(v)
    D = num_steps or len(calls[0])
    bad = [i for i, c in enumerate(calls) if len(c) != D]
    if bad:
        raise ValueError(f"calls {bad[:5]} do not have {D} denoise steps")
    # (calls, D, B, S, d) -> (calls*B, D, S, d)
    x = torch.stack([torch.stack(c) for c in calls])
    return x.permute(0, 2, 1, 3, 4).reshape(-1, x.shape[1], x.shape[3], x.shape[4])


def _as_states(H: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """One ``(T, D, S, d)`` tensor from one episode or a list of episodes (concatenated on T)."""
    if isinstance(H, torch.Tensor):
        Hs = [H]
    else:
        Hs = list(H)
        if not Hs:
            raise ValueError("no episodes")
    for h in Hs:
        if h.ndim != 4:
            raise ValueError(f"episode states must be (T, D, S, d), got {tuple(h.shape)}")
    if len({tuple(h.shape[1:]) for h in Hs}) != 1:
        raise ValueError(f"episodes disagree on (D, S, d): {sorted({tuple(h.shape[1:]) for h in Hs})}")
    if len(Hs) == 1:  # no copy when already float64 on CPU (the fitter calls this per step)
        return Hs[0].detach().to("cpu", torch.float64)
    return torch.cat([h.detach().to("cpu", torch.float64) for h in Hs])


def build_samples(H: torch.Tensor | Sequence[torch.Tensor], strategy: Strategy = "global", pool: Pool = "mean",
                  step: int | None = None) -> torch.Tensor:
    """Sample rows (float64) from states ``(T, D, S, d)`` (or a list of episodes).

    pool ``mean``: global ``(T·D, d)``, per-step ``(T, d)``; ``flatten``: global ``(T·D·S, d)``,
    per-step ``(T·S, d)``. Per-step needs ``step`` in ``0..D−1``.
    """
    X = _as_states(H)
    D, d = X.shape[1], X.shape[3]
    if strategy == "per_step":
        if step is None or not 0 <= step < D:
            raise ValueError(f"per_step needs step in 0..{D - 1}, got {step}")
        X = X[:, step : step + 1]
    elif strategy != "global":
        raise ValueError(f"strategy must be 'global' or 'per_step', got {strategy!r}")
    if pool == "mean":
        return X.mean(2).reshape(-1, d)
    if pool == "flatten":
        return X.reshape(-1, d)
    raise ValueError(f"pool must be 'mean' or 'flatten', got {pool!r}")


def class_correlation(X: torch.Tensor, preset: Preset) -> torch.Tensor:
    """R for one class under the preset (centring; D6 small-N policy; rank cutoff ``rcond``)."""
    N, d = X.shape
    if N < d and preset.small_n == "raise":
        raise FitError(f"{N} samples < d = {d} (D6) and preset {preset.name!r} has small_n='raise'")
    R = cz.correlation(X, center=preset.center)
    lam, U = torch.linalg.eigh(R)
    cutoff = preset.rcond * max(float(lam.max()), 0.0)
    lam = torch.where(lam > cutoff, lam, torch.zeros_like(lam))
    return 0.5 * ((U * lam) @ U.T + ((U * lam) @ U.T).T)


def linear_direction(X_s: torch.Tensor, X_f: torch.Tensor) -> torch.Tensor:
    """CAA / linear baseline: unit ``mean(X_s) − mean(X_f)``; the zero vector if the means coincide."""
    v = X_s.mean(0) - X_f.mean(0)
    n = float(v.norm())
    return torch.zeros_like(v) if n <= 1e-12 * max(float(X_s.abs().max()), 1.0) else v / n


@dataclass
class SteeringFit:
    """One fitted steering operator set for one site, aperture and strategy.

    ``C`` is float32: ``(d, d)`` for ``global``, ``(D, d, d)`` for ``per_step``. ``C_success`` /
    ``C_failure`` have the same layout (float32) for diagnostics and the positive-only ablation.
    """

    site: str
    strategy: Strategy
    alpha: float
    preset: Preset
    C: torch.Tensor
    C_success: torch.Tensor
    C_failure: torch.Tensor
    direction: torch.Tensor  # (d,) float32 linear/CAA vector (global samples)
    n_samples: dict[str, int]
    n_episodes: dict[str, int]
    diagnostics: dict[str, Any] = field(default_factory=dict)

    @property
    def d(self) -> int:
        return int(self.C.shape[-1])


def _check(C: torch.Tensor, what: str) -> None:
    if not torch.isfinite(C).all():
        raise FitError(f"{what}: non-finite entries")
    asym = float((C - C.T).abs().max())
    if asym > 1e-8:
        raise FitError(f"{what}: not symmetric (max |C − Cᵀ| = {asym:.3g})")
    w = torch.linalg.eigvalsh(0.5 * (C + C.T))
    if float(w.min()) < -1e-8 or float(w.max()) > 1 + 1e-8:
        raise FitError(f"{what}: eigenvalues outside [0, 1] ({float(w.min()):.3g}, {float(w.max()):.3g})")


def _fit_one(X_s: torch.Tensor, X_f: torch.Tensor, alpha: float, preset: Preset, what: str
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    Cs = cz.conceptor(class_correlation(X_s, preset), alpha)
    Cf = cz.conceptor(class_correlation(X_f, preset), alpha)
    K = cz.contrastive(Cs, Cf, preset.and_mode)
    if not torch.isfinite(K).all():
        raise FitError(f"{what}: non-finite C_steer")
    if preset.and_mode == "jaeger":
        _check(K, what)  # never a silent non-PSD operator (D6)
    return Cs, Cf, K


def fit_contrastive(success: torch.Tensor | Sequence[torch.Tensor], failure: torch.Tensor | Sequence[torch.Tensor],
                    alphas: Sequence[float], preset: str | Preset = "paper", strategy: Strategy = "global",
                    site: str = "") -> dict[float, SteeringFit]:
    """Fit ``C_s ∧ ¬C_f`` for every aperture in ``alphas``; returns ``{α: SteeringFit}``.

    ``success`` / ``failure``: lists of episode states ``(T, D, S, d)``. Raises
    :class:`InsufficientEpisodes` under the preset's ``min_per_class``. For ``per_step`` under a
    preset with a fixed per-step α (``repo``: 1.0, D4) the grid is ignored and a single fit keyed by
    that α is returned.
    """
    p = get_preset(preset)
    eps_s = [success] if isinstance(success, torch.Tensor) else list(success)
    eps_f = [failure] if isinstance(failure, torch.Tensor) else list(failure)
    for name, eps in (("success", eps_s), ("failure", eps_f)):
        if len(eps) < p.min_per_class:
            raise InsufficientEpisodes(f"{len(eps)} {name} episodes < min_per_class = {p.min_per_class} "
                                       f"(preset {p.name!r})")
    Hs, Hf = _as_states(eps_s), _as_states(eps_f)
    if Hs.shape[1:] != Hf.shape[1:]:
        raise ValueError(f"success/failure states disagree: {tuple(Hs.shape[1:])} vs {tuple(Hf.shape[1:])}")
    D, d = Hs.shape[1], Hs.shape[3]
    Gs, Gf = build_samples(Hs, "global", p.pool), build_samples(Hf, "global", p.pool)
    v = linear_direction(Gs, Gf).float()
    if strategy == "per_step" and p.per_step_alpha is not None:
        alphas = [p.per_step_alpha]
    if not alphas:
        raise ValueError("no apertures given")
    out: dict[float, SteeringFit] = {}
    step_samples: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    for alpha in alphas:
        alpha = float(alpha)
        if not (alpha > 0 and math.isfinite(alpha)):
            raise ValueError(f"aperture must be finite and > 0, got {alpha}")
        if strategy == "global":
            Cs, Cf, K = _fit_one(Gs, Gf, alpha, p, f"{site} global α={alpha}")
            ns, nf = Gs.shape[0], Gf.shape[0]
            diag = {"quota": cz.quota(K), "quota_success": cz.quota(Cs), "quota_failure": cz.quota(Cf),
                    "similarity": cz.similarity(Cs, Cf)}
        elif strategy == "per_step":
            parts, diag_steps = [], []
            if step_samples is None:  # built once for every aperture
                step_samples = [(build_samples(Hs, "per_step", p.pool, t), build_samples(Hf, "per_step", p.pool, t))
                                for t in range(D)]
            for t in range(D):
                Xs, Xf = step_samples[t]
                parts.append(_fit_one(Xs, Xf, alpha, p, f"{site} step {t} α={alpha}"))
                diag_steps.append({"quota": cz.quota(parts[-1][2]), "similarity": cz.similarity(parts[-1][0], parts[-1][1])})
                ns, nf = Xs.shape[0], Xf.shape[0]
            Cs, Cf, K = (torch.stack([q[i] for q in parts]) for i in range(3))
            diag = {"quota": sum(x["quota"] for x in diag_steps) / D,
                    "similarity": sum(x["similarity"] for x in diag_steps) / D, "per_step": diag_steps}
        else:
            raise ValueError(f"strategy must be 'global' or 'per_step', got {strategy!r}")
        diag["small_n"] = bool(min(ns, nf) < d)
        out[alpha] = SteeringFit(site=site, strategy=strategy, alpha=alpha, preset=p, C=K.float(),
                                 C_success=Cs.float(), C_failure=Cf.float(), direction=v,
                                 n_samples={"success": int(ns), "failure": int(nf)},
                                 n_episodes={"success": len(eps_s), "failure": len(eps_f)}, diagnostics=diag)
    return out


def fit_layers(success: Mapping[str, Sequence[torch.Tensor]], failure: Mapping[str, Sequence[torch.Tensor]],
               alphas: Sequence[float], preset: str | Preset = "paper",
               strategies: Sequence[Strategy] = ("global", "per_step")) -> dict[tuple[str, str, float], SteeringFit]:
    """``{(site, strategy, α): SteeringFit}`` for every site in ``success`` (states per episode per site)."""
    out: dict[tuple[str, str, float], SteeringFit] = {}
    for site in success:
        if site not in failure:
            raise KeyError(f"site {site!r} has success states but no failure states")
        for strategy in strategies:
            for a, f in fit_contrastive(success[site], failure[site], alphas, preset, strategy, site).items():
                out[(site, strategy, a)] = f
    return out
