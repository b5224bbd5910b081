"""Parameter selection (coast.md §8): the released geometric heuristic and a grid search on *select* seeds.

Heuristic (COAST ``select_parameters.py``, restated):
  1. layer = argmax over sites of the mean quota ``tr(C_steer)/d`` at α = 10 (``quota_alpha``);
  2. α = every α whose mean ``sim(C_s, C_f)`` ∈ [0.85, 0.95]; if none, the α closest to 0.90;
  3. β ∈ {0.1, 0.3}.
Means are over whatever fits are passed (e.g. several tasks); ties keep the first site / α in order.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .fit import SteeringFit

__all__ = ["Selection", "grid_search", "heuristic_select"]


@dataclass(frozen=True)
class Selection:
    site: str
    strategy: str
    alphas: tuple[float, ...]
    betas: tuple[float, ...]
    evidence: dict[str, Any]


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def heuristic_select(fits: Mapping[tuple[str, str, float], SteeringFit | Sequence[SteeringFit]],
                     strategy: str = "global", quota_alpha: float = 10.0,
                     sim_band: tuple[float, float] = (0.85, 0.95), sim_target: float = 0.90,
                     betas: Sequence[float] = (0.1, 0.3)) -> Selection:
    """Apply the released heuristic to ``{(site, strategy, α): fit or [fits over tasks]}``."""
    def group(key: tuple[str, str, float]) -> list[SteeringFit]:
        v = fits[key]
        return [v] if isinstance(v, SteeringFit) else list(v)

    keys = [k for k in fits if k[1] == strategy]
    if not keys:
        raise ValueError(f"no fits for strategy {strategy!r}")
    sites = list(dict.fromkeys(k[0] for k in keys))
    quotas = {}
    for s in sites:
        k = (s, strategy, float(quota_alpha))
        if k not in fits:
            raise KeyError(f"heuristic needs α = {quota_alpha} fits; missing {k}")
        quotas[s] = _mean([f.diagnostics["quota"] for f in group(k)])
    site = max(sites, key=lambda s: quotas[s])
    alphas = [k[2] for k in keys if k[0] == site]
    sims = {a: _mean([f.diagnostics["similarity"] for f in group((site, strategy, a))]) for a in alphas}
    chosen = tuple(a for a in alphas if sim_band[0] <= sims[a] <= sim_band[1])
    if not chosen:
        chosen = (min(alphas, key=lambda a: abs(sims[a] - sim_target)),)
    return Selection(site, strategy, chosen, tuple(float(b) for b in betas),
                     {"quota_at_alpha": quota_alpha, "quota": quotas, "similarity": sims, "sim_band": sim_band})


def grid_search(configs: Sequence[Mapping[str, Any]], score: Callable[[Mapping[str, Any]], float]
                ) -> tuple[Mapping[str, Any], list[tuple[Mapping[str, Any], float]]]:
    """Score every config (e.g. success rate on *select* seeds via ``evaluate``) and return the best
    (first on ties) and all ``(config, score)`` pairs. Never pass test seeds to ``score``."""
    if not configs:
        raise ValueError("empty grid")
    scored = [(c, float(score(c))) for c in configs]
    best = max(range(len(scored)), key=lambda i: (scored[i][1], -i))
    return scored[best][0], scored
