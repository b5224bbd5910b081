"""The COAST study: select on *select* seeds, report on *test* seeds, controls in the same run.

Stages (coast.md §8-9; each writes JSON so a later stage can resume from it):

1. **heuristic** — the released rule over the fitted artifacts' diagnostics (layer by quota at α = 10,
   α by sim(C_s, C_f) ∈ [0.85, 0.95]); recorded, and it supplies the α of every grid cell.
2. **select** — one paired ``evaluate`` on select seeds: ``base`` + every (strategy, site, β) cell with
   the heuristic's α for that site + CAA at every (site, magnitude). The best cell per strategy
   (ties: first in grid order) becomes ``coast_global`` / ``coast_per_step``; the best CAA cell
   becomes ``caa``.
3. **test** — one paired ``evaluate`` on test seeds: ``base``, ``coast_global``, ``coast_per_step``,
   ``shrinkage`` (C = 0 at coast_global's β), ``random_matched`` (coast_global's spectrum, random
   eigenvectors, seed fixed), ``caa``; plus ``shrinkage_per_step`` when the per-step β differs and
   ``coast_heuristic`` when the heuristic's global cell is not the grid's. Then the offline gate
   diagnostics on the fit rollouts and the per-policy-call overhead ratio, same process.

Test seeds are used only in stage 3, after the choices are frozen in ``selection.json``.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from .intervention import SteeredPolicy, SteeringArtifact, gate_diagnostics, make_operator
from .select import heuristic_select

__all__ = [
    "Cell",
    "StudyConfig",
    "artifact_stem",
    "build_conditions",
    "cells_json",
    "condition_policy",
    "diagnostics_for",
    "heuristic_alpha",
    "load_fitted",
    "measure_overhead",
    "run_select",
    "test_cells",
]


@dataclass(frozen=True)
class StudyConfig:
    policy: str
    rollouts: str
    conceptors: str
    suite: str = "metaworld_mt6"
    preset: str = "paper"
    sites: tuple[str, ...] = ("expert.layer0", "expert.layer1", "expert.layer2", "expert.layer3")
    betas: tuple[float, ...] = (0.1, 0.3)
    caa_scales: tuple[float, ...] = (0.1, 0.3)  # CAA magnitude = scale × mean ‖h‖ at the site
    select_episodes: int = 10
    test_episodes: int = 30
    control_seed: int = 0
    overhead_reps: int = 300


@dataclass(frozen=True)
class Cell:
    """One steering configuration. ``kind``: conceptor (global/per_step), shrinkage, random_matched, linear."""

    kind: str
    site: str
    strategy: str = "global"
    alpha: float | None = None
    beta: float | None = None
    magnitude: float | None = None
    preset: str = "paper"

    @property
    def label(self) -> str:
        if self.kind == "linear":
            return f"caa {self.site} m={self.magnitude:.3g}"
        return f"{self.kind} {self.strategy} {self.site} α={self.alpha:g} β={self.beta:g}"


def artifact_stem(conceptors: str | Path, site: str, strategy: str, alpha: float, preset: str) -> Path:
    return Path(conceptors) / f"all__{site}__{strategy}__a{alpha:g}__{preset}"


def load_fitted(conceptors: str | Path, preset: str, sites: Sequence[str]) -> dict[tuple[str, str, float], SteeringArtifact]:
    """Every ``all__<site>__<strategy>__a<α>__<preset>`` artifact in ``conceptors``, keyed (site, strategy, α)."""
    out: dict[tuple[str, str, float], SteeringArtifact] = {}
    for stem in sorted(Path(conceptors).glob(f"all__*__{preset}")):
        if not (stem / "config.json").is_file():
            continue
        _, site, strategy, a, _ = stem.name.split("__")
        if site in sites:
            out[(site, strategy, float(a[1:]))] = SteeringArtifact.load(stem)
    if not out:
        raise FileNotFoundError(f"no {preset!r} artifacts for {list(sites)} under {conceptors} (run `lstack steer fit`)")
    return out


def _as_fits(arts: Mapping[tuple[str, str, float], SteeringArtifact]) -> dict[tuple[str, str, float], list[Any]]:
    return {k: [SimpleNamespace(diagnostics=a.card["diagnostics"])] for k, a in arts.items()}


def heuristic_alpha(arts: Mapping[tuple[str, str, float], SteeringArtifact], site: str, strategy: str,
                    band: tuple[float, float] = (0.85, 0.95), target: float = 0.90) -> float:
    """The released α rule at one site: the in-band α closest to ``target`` (else the closest overall)."""
    sims = {k[2]: a.card["diagnostics"]["similarity"] for k, a in arts.items() if k[0] == site and k[1] == strategy}
    if not sims:
        raise KeyError(f"no {strategy} fits at {site}")
    inband = [a for a, s in sims.items() if band[0] <= s <= band[1]]
    return min(inband or list(sims), key=lambda a: (abs(sims[a] - target), a))


def mean_state_norm(rollouts: Sequence[Any], site: str) -> float:
    """Mean ‖h‖ over every stored action-token state at ``site`` (scales the CAA magnitude)."""
    H = torch.cat([r.states[site].reshape(-1, r.states[site].shape[-1]) for r in rollouts if site in r.states])
    return float(H.double().norm(dim=-1).mean())


def condition_policy(policy: Any, arts: Mapping[tuple[str, str, float], SteeringArtifact], cell: Cell | None,
                     control_seed: int = 0) -> SteeredPolicy:
    """A paired-evaluation condition sharing ``policy`` (hooks live only inside its calls)."""
    if cell is None:
        return SteeredPolicy(policy, None)
    if cell.kind == "linear":
        art = _global_artifact(arts, cell.site)
        return SteeredPolicy(policy, art.intervention(policy, condition="linear", magnitude=cell.magnitude))
    art = arts[(cell.site, cell.strategy, float(cell.alpha))]
    return SteeredPolicy(policy, art.intervention(policy, beta=cell.beta, condition=cell.kind, seed=control_seed))


def _success(r: Any) -> float:
    return r.summary()["overall"]["success"]


def run_select(cfg: StudyConfig, arts: Mapping[tuple[str, str, float], SteeringArtifact],
               norms: Mapping[str, float], run_cells: Callable[..., dict[str, Any]], suite: Any) -> dict[str, Any]:
    """Heuristic + grid on select seeds; returns the JSON-able selection record."""
    strategies = [s for s in ("global", "per_step") if any(k[1] == s for k in arts)]
    heur = {}
    for st in strategies:
        try:
            sel = heuristic_select(_as_fits(arts), strategy=st)
            heur[st] = {"site": sel.site, "alphas": list(sel.alphas), "betas": list(sel.betas),
                        "evidence": sel.evidence}
        except (KeyError, ValueError) as exc:  # e.g. repo per-step has only α = 1 (no α = 10 quota)
            heur[st] = {"error": str(exc)}
    cells: dict[str, Cell] = {}
    for st in strategies:
        for site in cfg.sites:
            if not any(k[0] == site and k[1] == st for k in arts):
                continue
            a = heuristic_alpha(arts, site, st)
            for b in cfg.betas:
                c = Cell("conceptor", site, st, a, float(b), preset=cfg.preset)
                cells[c.label] = c
    for site in cfg.sites:
        for s in cfg.caa_scales:
            c = Cell("linear", site, magnitude=float(s) * norms[site], preset=cfg.preset)
            cells[c.label] = c
    t0 = time.perf_counter()
    results = run_cells({"base": None, **cells}, "select", cfg.select_episodes)
    scores = {lab: _success(r) for lab, r in results.items()}

    def best(pred: Callable[[Cell], bool]) -> Cell | None:
        labs = [lab for lab, c in cells.items() if pred(c)]
        return cells[max(labs, key=lambda lab: (scores[lab], -labs.index(lab)))] if labs else None

    chosen = {"coast_global": best(lambda c: c.kind == "conceptor" and c.strategy == "global"),
              "coast_per_step": best(lambda c: c.kind == "conceptor" and c.strategy == "per_step"),
              "caa": best(lambda c: c.kind == "linear")}
    h = heur.get("global", {})
    heuristic_cell = None
    if "site" in h:
        heuristic_cell = Cell("conceptor", h["site"], "global", heuristic_alpha(arts, h["site"], "global"),
                              float(h["betas"][0]), preset=cfg.preset)
    return {"config": asdict(cfg), "heuristic": heur, "heuristic_cell": asdict(heuristic_cell) if heuristic_cell else None,
            "grid": [{"label": lab, **asdict(c), "select_success": scores[lab],
                      "per_task": results[lab].summary()["per_task"]} for lab, c in cells.items()],
            "base_select_success": scores["base"], "base_select_per_task": results["base"].summary()["per_task"],
            "chosen": {k: asdict(v) if v else None for k, v in chosen.items()},
            "select_seeds": list(suite.seeds["select"])[: cfg.select_episodes],
            "wall_s": time.perf_counter() - t0, "results": results}


def test_cells(selection: Mapping[str, Any]) -> dict[str, Cell]:
    """The test conditions (besides ``base``) implied by a frozen selection record."""
    ch = {k: Cell(**v) for k, v in selection["chosen"].items() if v}
    g = ch.get("coast_global")
    if g is None:
        raise ValueError("selection has no global conceptor cell")
    out = {"coast_global": g}
    if "coast_per_step" in ch:
        out["coast_per_step"] = ch["coast_per_step"]
    out["shrinkage"] = Cell("shrinkage", g.site, g.strategy, g.alpha, g.beta, preset=g.preset)
    out["random_matched"] = Cell("random_matched", g.site, g.strategy, g.alpha, g.beta, preset=g.preset)
    if "caa" in ch:
        out["caa"] = ch["caa"]
    ps = ch.get("coast_per_step")
    if ps is not None and ps.beta != g.beta:
        out["shrinkage_per_step"] = Cell("shrinkage", ps.site, ps.strategy, ps.alpha, ps.beta, preset=ps.preset)
    hc = selection.get("heuristic_cell")
    if hc and Cell(**hc) != g:
        out["coast_heuristic"] = Cell(**hc)
    return out


def build_conditions(cfg_json: str, cells_json: str) -> dict[str, SteeredPolicy]:
    """Conditions from JSON (what a spawned evaluation worker receives): one shared policy, paired."""
    from latentstack.policies.factory import make_policy

    cfg = StudyConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(cfg_json).items()})
    cells = {k: (Cell(**v) if v else None) for k, v in json.loads(cells_json).items()}
    policy = make_policy(cfg.policy)
    if hasattr(policy, "eval"):
        policy.eval()
    arts = load_fitted(cfg.conceptors, cfg.preset, cfg.sites) if any(cells.values()) else {}
    return {name: condition_policy(policy, arts, c, cfg.control_seed) for name, c in cells.items()}


def cells_json(cells: Mapping[str, Cell | None]) -> str:
    return json.dumps({k: (asdict(v) if v else None) for k, v in cells.items()})


def diagnostics_for(cells: Mapping[str, Cell], arts: Mapping[tuple[str, str, float], SteeringArtifact],
                    rollouts: Sequence[Any], control_seed: int = 0) -> dict[str, dict[str, float]]:
    """Offline gate diagnostics (§7) of every conceptor-type cell on the stored unsteered fit states."""
    out: dict[str, dict[str, float]] = {}
    cache: dict[str, torch.Tensor] = {}
    for name, c in cells.items():
        if c.kind == "linear":
            H = cache.get(c.site)
            if H is None:
                H = cache[c.site] = torch.cat([r.states[c.site] for r in rollouts if c.site in r.states])
            h = H.reshape(-1, H.shape[-1]).double()
            n = h.norm(dim=-1)
            # Δh = m·v with ‖v‖ = 1: ‖Δh‖/‖h‖ = m/‖h‖, cos(Δh, h) = v·h/‖h‖
            out[name] = {"rel_change": float((c.magnitude / n.clamp_min(1e-300)).mean()),
                         "cos": float((h @ _direction(arts, c) / n.clamp_min(1e-300)).mean()),
                         "hCh": float("nan"), "beta": float("nan"), "magnitude": float(c.magnitude)}
            continue
        art = arts[(c.site, c.strategy, float(c.alpha))]
        H = cache.get(c.site)
        if H is None:
            H = cache[c.site] = torch.cat([r.states[c.site] for r in rollouts if c.site in r.states])  # (T, D, S, d)
        h = H.transpose(0, 1) if art.C.ndim == 3 else H
        out[name] = gate_diagnostics(h, make_operator(c.kind, art, seed=control_seed), float(c.beta))
    return out


def _global_artifact(arts: Mapping[tuple[str, str, float], SteeringArtifact], site: str) -> SteeringArtifact:
    """Any global fit at ``site``: its CAA direction comes from the global samples, independent of α."""
    return next(a for k, a in arts.items() if k[0] == site and k[1] == "global")


def _direction(arts: Mapping[tuple[str, str, float], SteeringArtifact], c: Cell) -> torch.Tensor:
    return _global_artifact(arts, c.site).direction.double()


def measure_overhead(cfg: StudyConfig, arts: Mapping[tuple[str, str, float], SteeringArtifact],
                     cells: Mapping[str, Cell], reps: int = 300) -> dict[str, Any]:
    """Per-policy-call time of every test condition vs unsteered, interleaved in one run (§11.21).

    Conditions run as evaluated (wrap-mode gates). Also timed: coast_global installed as a torch
    forward hook (``coast_global_hook_mode``), identity edits in both modes (``noop_hook`` /
    ``noop_wrap``: the installation cost alone) and the exact low-rank form of coast_global
    (``coast_global_lowrank``, every eigenvalue > 1e-6 kept).
    """
    from latentstack.kernels import LowRankGate
    from latentstack.latent import Intervention
    from latentstack.policies.factory import make_policy
    from latentstack.sim.metaworld_env import MetaWorldLangEnv
    from latentstack.sim.suites import load_suite

    from .overhead import measure_call_overhead

    suite = load_suite(cfg.suite)
    spec = suite.tasks[0]
    env = MetaWorldLangEnv(spec.name, image_size=suite.image_size, camera=suite.camera,
                           max_episode_steps=spec.max_episode_steps, instruction=spec.instruction)
    try:
        obs, _ = env.reset(seed=int(suite.seeds["select"][0]))
    finally:
        env.close()
    policy = make_policy(cfg.policy)
    policy.eval()
    batch = {"image": obs["image"][None], "state": obs["state"][None], "instruction": [obs["instruction"]]}
    ivs: dict[str, Any] = {"base": None, "base_repeat": None}  # base_repeat: the measurement's noise floor
    for name, c in cells.items():
        ivs[name] = condition_policy(policy, arts, c, cfg.control_seed).intervention
    g = cells["coast_global"]
    ivs["coast_global_hook_mode"] = arts[(g.site, g.strategy, float(g.alpha))].intervention(
        policy, beta=g.beta, seed=cfg.control_seed, mode="hook")
    ivs["noop_hook"] = Intervention(policy, {g.site: lambda v, meta: v}, mode="hook")
    ivs["noop_wrap"] = Intervention(policy, {g.site: lambda v, meta: v}, mode="wrap")
    lr = LowRankGate(arts[(g.site, g.strategy, float(g.alpha))].C, float(g.beta), cutoff=1e-6)
    ivs["coast_global_lowrank"] = Intervention(policy, {g.site: lambda v, meta: lr(v)}, mode="wrap")
    res = measure_call_overhead(lambda: policy.predict_action_chunk(batch), ivs, reps=reps)
    res["lowrank_rank"] = lr.rank
    return res


def plot_selection(sel: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = sel["grid"]
    fig, ax = plt.subplots(figsize=(max(6, 0.32 * len(grid) + 2), 4.2))
    colors = {"global": "tab:blue", "per_step": "tab:orange"}
    for i, g in enumerate(grid):
        c = "tab:green" if g["kind"] == "linear" else colors.get(g["strategy"], "grey")
        ax.bar(i, g["select_success"], color=c)
    ax.axhline(sel["base_select_success"], color="k", ls="--", label=f"base {sel['base_select_success']:.2f}")
    ax.set_xticks(range(len(grid)), [g["label"].replace("conceptor ", "") for g in grid], rotation=80, fontsize=6)
    ax.set_ylabel("success on select seeds")
    ax.set_ylim(0, 1.05)
    ax.set_title("COAST grid on select seeds (blue global, orange per-step, green CAA)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_report(payload: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conds = payload["conditions"]
    names = list(conds)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), gridspec_kw={"width_ratios": [2, 1.2, 1.2]})
    ax = axes[0]
    y = [conds[n]["success"] for n in names]
    err = [[conds[n]["success"] - conds[n]["ci_low"] for n in names], [conds[n]["ci_high"] - conds[n]["success"] for n in names]]
    ax.bar(range(len(names)), y, yerr=err, capsize=4, color=["k"] + ["tab:blue"] * (len(names) - 1))
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test success (Wilson 95% CI)")
    ax.set_title(f"{payload['n_tasks']} tasks × {payload['episodes_per_task']} paired test episodes")
    diag = payload.get("gate_diagnostics") or {}
    dn = [n for n in names if n in diag]
    axes[1].bar(range(len(dn)), [diag[n]["rel_change"] for n in dn], label="‖Δh‖/‖h‖")
    axes[1].bar(range(len(dn)), [diag[n]["cos"] for n in dn], alpha=0.5, label="cos(Δh, h)")
    axes[1].set_xticks(range(len(dn)), dn, rotation=30, ha="right")
    axes[1].axhline(0, color="k", lw=0.5)
    axes[1].set_title("offline gate diagnostics (fit states)")
    axes[1].legend(fontsize=8)
    ov = (payload.get("overhead") or {}).get("ratio", {})
    on = [n for n in ov if n != "base"]
    axes[2].bar(range(len(on)), [ov[n] for n in on])
    axes[2].axhline(1.0, color="k", lw=0.5)
    axes[2].axhline(1.02, color="r", ls="--", lw=0.8, label="1.02 target")
    axes[2].set_ylim(0.95, max([1.06] + [ov[n] + 0.01 for n in on]))
    axes[2].set_xticks(range(len(on)), on, rotation=30, ha="right")
    axes[2].set_title("policy-call time / unsteered (median)")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def ship_cell(cell: Cell, arts: Mapping[tuple[str, str, float], SteeringArtifact], dest: Path,
              payload: Mapping[str, Any], name: str) -> Path:
    """Save the chosen artifact with its selected β in the card (+ the test result) under ``dest``."""
    art = arts[(cell.site, cell.strategy, float(cell.alpha))]
    card = {**art.card, "beta": cell.beta, "selected_as": name,
            "selection": "grid search on select seeds (α from the released similarity heuristic)",
            "test_result": {k: payload["conditions"][name][k] for k in ("success", "ci_low", "ci_high")},
            "test_base": {k: payload["conditions"]["base"][k] for k in ("success", "ci_low", "ci_high")}}
    out = SteeringArtifact(art.C, card, art.C_success, art.C_failure, art.direction, dict(art.extra))
    stem = dest / f"{name}__{cell.site}__a{cell.alpha:g}__b{cell.beta:g}__{cell.preset}"
    out.save(stem)
    return stem


def compare_presets(conceptors: str | Path, sites: Sequence[str], alphas: Sequence[float] = (0.5, 1.0, 10.0)
                    ) -> dict[str, Any]:
    """Offline paper-vs-repo comparison (coast.md §5, D1-D3) on the same rollouts' global fits.

    Per (site, α): relative Frobenius ‖C_paper − C_repo‖/‖C_paper‖, the repo operator's relative
    asymmetry ‖C − Cᵀ‖/‖C‖, both quotas, and the number of eigenvalues of C_paper above 1e-3
    (its effective rank — what a low-rank gate would need).
    """
    out: dict[str, Any] = {}
    for site in sites:
        for a in alphas:
            sp, sr = artifact_stem(conceptors, site, "global", a, "paper"), artifact_stem(conceptors, site, "global", a, "repo")
            if not ((sp / "config.json").exists() and (sr / "config.json").exists()):
                continue
            P, R = SteeringArtifact.load(sp).C.double(), SteeringArtifact.load(sr).C.double()
            w = torch.linalg.eigvalsh(0.5 * (P + P.T))
            out[f"{site} α={a:g}"] = {
                "rel_frobenius_paper_vs_repo": float((P - R).norm() / P.norm().clamp_min(1e-300)),
                "repo_rel_asymmetry": float((R - R.T).norm() / R.norm().clamp_min(1e-300)),
                "quota_paper": float(torch.trace(P) / P.shape[0]), "quota_repo": float(torch.trace(R) / R.shape[0]),
                "paper_rank_above_1e-3": int((w > 1e-3).sum()), "d": int(P.shape[0])}
    return out
