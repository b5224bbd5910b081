"""``lstack steer collect | fit | eval | study | presets`` commands; the flags are in :mod:`latentstack.cli.steer`
(torch-free)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from latentstack.core.paths import portable_command

__all__ = ["cmd_collect", "cmd_eval", "cmd_fit", "cmd_presets", "cmd_study"]

CONTROLS = ("shrinkage", "random_matched", "positive_only", "linear")


def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def _floats(s: str) -> list[float]:
    return [float(x) for x in _csv(s)]


def _load_policy(path: str, device: str = "cpu") -> Any:
    from latentstack.policies.factory import make_policy

    p = make_policy(path, device=device)
    if hasattr(p, "eval"):
        p.eval()
    return p


def cmd_collect(args: argparse.Namespace, env_factory: Callable[..., Any] | None = None) -> int:
    import torch

    from latentstack.sim.suites import load_suite

    from .collect import collect_rollouts, save_rollouts

    suite = load_suite(args.suite)
    policy = _load_policy(args.policy, args.device)
    torch.set_num_threads(1)
    n = args.episodes_per_task
    seeds = list(range(args.seed_start, args.seed_start + n)) if args.seed_start is not None else None

    def show(r: Any) -> None:
        print(f"{r.task:<28} seed {r.seed:<6} {'success' if r.success else 'failure'} ({r.length} steps)", flush=True)

    with torch.inference_mode():
        rollouts = collect_rollouts(suite, policy, _csv(args.sites), split=args.split, n=n, offset=args.offset,
                                    seeds=seeds, tasks=_csv(args.tasks) if args.tasks else None, keep=args.keep,
                                    env_factory=env_factory, progress=show)
    meta = {"suite": suite.name, "policy": args.policy, "split": args.split, "offset": args.offset,
            "seeds": sorted({r.seed for r in rollouts}), "keep": args.keep}
    out = save_rollouts(rollouts, args.out, meta)
    n_s = sum(r.success for r in rollouts)
    print(f"wrote {out}: {len(rollouts)} rollouts, {n_s} success / {len(rollouts) - n_s} failure")
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    from .collect import load_rollouts, split_by_label
    from .fit import InsufficientEpisodes, fit_contrastive, get_preset
    from .intervention import SteeringArtifact

    rollouts, meta = load_rollouts(args.rollouts)
    preset = get_preset(args.preset)
    sites = _csv(args.sites) if args.sites else sorted({s for r in rollouts for s in r.states})
    tasks = sorted({r.task for r in rollouts}) if args.per_task else [None]
    out_dir = Path(args.out)
    written, skipped = [], []
    for task in tasks:
        for site in sites:
            s, f = split_by_label(rollouts, site, task)
            for strategy in _csv(args.strategies):
                try:
                    fits = fit_contrastive(s, f, _floats(args.alphas), preset, strategy, site=site)  # type: ignore[arg-type]
                except InsufficientEpisodes as exc:
                    skipped.append(f"{task or 'all'} {site} {strategy}: {exc}")
                    continue
                for alpha, fit in fits.items():
                    layer = int(site.rsplit("layer", 1)[1]) if site.rsplit("layer", 1)[-1].isdigit() else None
                    seeds = {"fit": sorted({r.seed for r in rollouts if task is None or r.task == task}),
                             "split": meta.get("split"), "random_matched": args.control_seed}
                    art = SteeringArtifact.from_fit(fit, beta=args.beta, layer=layer, seeds=seeds,
                                                    task=task, policy=meta.get("policy"), suite=meta.get("suite"))
                    stem = out_dir / f"{task or 'all'}__{site}__{strategy}__a{alpha:g}__{preset.name}"
                    art.save(stem)
                    written.append(stem)
                    print(f"{stem.name}: quota {fit.diagnostics['quota']:.4f} "
                          f"sim(C_s,C_f) {fit.diagnostics['similarity']:.4f}")
    for line in skipped:
        print("skipped", line)
    print(f"wrote {len(written)} artifacts under {out_dir}")
    return 0 if written else 1


def cmd_eval(args: argparse.Namespace, env_factory: Callable[..., Any] | None = None) -> int:
    import torch

    from latentstack.sim.evaluation import evaluate, outcome_table, write_report
    from latentstack.sim.suites import load_suite

    from .intervention import SteeredPolicy, SteeringArtifact

    suite = load_suite(args.suite)
    policy = _load_policy(args.policy, args.device)
    art = SteeringArtifact.load(args.artifact)
    controls = _csv(args.controls)
    controls = ["shrinkage", "random_matched"] + [c for c in controls if c not in ("shrinkage", "random_matched")]
    bad = sorted(set(controls) - set(CONTROLS))
    if bad:
        raise SystemExit(f"unknown control(s) {bad}; known: {list(CONTROLS)}")
    beta = args.beta if args.beta is not None else art.card.get("beta")
    if beta is None:
        raise SystemExit("no --beta and the artifact card names none")
    conditions: dict[str, Any] = {"base": SteeredPolicy(policy, None),
                                  "coast": SteeredPolicy(policy, art.intervention(policy, beta=beta))}
    for c in controls:
        if c == "linear":
            conditions[c] = SteeredPolicy(policy, art.intervention(policy, condition="linear",
                                                                   magnitude=args.linear_magnitude))
        else:
            conditions[c] = SteeredPolicy(policy, art.intervention(policy, beta=beta, condition=c,
                                                                   seed=args.control_seed))
    t0 = time.perf_counter()
    with torch.inference_mode():
        results = evaluate(suite, conditions, episodes_per_task=args.episodes_per_task, split=args.split,
                           env_factory=env_factory, progress=not args.quiet)
    print(outcome_table(results))
    overhead = _overhead(results)
    print(f"gate overhead (mean select_action time, coast / base): {overhead:.4f}")
    diagnostics = _diagnostics(args, art, beta, controls) if args.rollouts else None
    if diagnostics:
        for name, d in diagnostics.items():
            print(f"gate diagnostic {name:<16} |dh|/|h| {d['rel_change']:.4f}  cos(dh,h) {d['cos']:+.4f}  "
                  f"hCh/|h|^2 {d['hCh']:.4f}")
    if args.out:
        meta = {"title": f"COAST {Path(args.artifact).name} β={beta} ({args.split})", "suite": suite.name,
                "split": args.split, "episodes_per_task": args.episodes_per_task, "beta": beta,
                "artifact": str(args.artifact), "card": art.card, "controls": controls,
                "linear_magnitude": args.linear_magnitude, "control_seed": args.control_seed,
                "wall_s": time.perf_counter() - t0, "gate_overhead_ratio": overhead,
                "gate_diagnostics": diagnostics}
        j, p = write_report(results, Path(args.out), meta, stem="steer_eval")
        from .report import coast_payload

        payload = coast_payload(results, args.episodes_per_task, overhead,
                                **{k: v for k, v in meta.items() if k not in ("gate_overhead_ratio", "episodes_per_task")})
        c = Path(args.out) / "coast.json"
        c.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        print(f"wrote {j}, {p} and {c}")
    return 0


def _overhead(results: Any) -> float:
    """Mean ``select_action`` wall time of ``coast`` over ``base`` in the same run."""
    b, c = results["base"].latencies_s, results["coast"].latencies_s
    return (sum(c) / len(c)) / (sum(b) / len(b)) if b and c else float("nan")


def _diagnostics(args: argparse.Namespace, art: Any, beta: float, controls: list[str]) -> dict[str, dict[str, float]]:
    """Offline gate diagnostic (spec §7) on stored unsteered states at the artifact's site."""
    import torch

    from .collect import load_rollouts
    from .intervention import gate_diagnostics, make_operator

    rollouts, _ = load_rollouts(args.rollouts)
    site = art.card["site"]
    H = torch.cat([r.states[site] for r in rollouts if site in r.states])  # (T, D, S, d)
    h = H.transpose(0, 1) if art.C.ndim == 3 else H
    out = {"coast": gate_diagnostics(h, art.C, beta)}
    for c in controls:
        if c != "linear":
            out[c] = gate_diagnostics(h, make_operator(c, art, seed=args.control_seed), beta)
    return out


def cmd_study(args: argparse.Namespace) -> int:
    """Select on select seeds (heuristic + grid), then base/COAST/controls on test seeds; one report."""
    import functools
    from dataclasses import asdict

    import torch

    from latentstack.core.device import device_kwargs
    from latentstack.sim.evaluation import evaluate_parallel, outcome_table, write_report
    from latentstack.sim.suites import load_suite

    from . import study as S
    from .collect import load_rollouts
    from .report import coast_payload

    cfg = S.StudyConfig(policy=args.policy, rollouts=args.rollouts, conceptors=args.conceptors, suite=args.suite,
                        preset=args.preset, sites=tuple(_csv(args.sites)), betas=tuple(_floats(args.betas)),
                        caa_scales=tuple(_floats(args.caa_scales)), select_episodes=args.select_episodes,
                        test_episodes=args.test_episodes, control_seed=args.control_seed,
                        overhead_reps=args.overhead_reps,
                        **device_kwargs(S.StudyConfig, getattr(args, "device", "cpu"), "the COAST study"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suite = load_suite(cfg.suite)
    arts = S.load_fitted(cfg.conceptors, cfg.preset, cfg.sites)
    cfg_json = json.dumps(asdict(cfg))

    def run_cells(cells: dict, split: str, episodes: int) -> dict:
        make = functools.partial(S.build_conditions, cfg_json, S.cells_json(cells))
        return evaluate_parallel(suite, make, episodes, split=split, workers=args.workers,
                                 ray_address=getattr(args, "ray_address", None), progress=not args.quiet)

    rollouts = load_rollouts(cfg.rollouts)[0] if args.stage != "overhead" else []
    sel_path = out / "selection.json"
    if args.stage in ("all", "select"):
        norms = {site: S.mean_state_norm(rollouts, site) for site in cfg.sites}
        sel = S.run_select(cfg, arts, norms, run_cells, suite)
        sel_results = sel.pop("results")
        sel["mean_state_norm"] = norms
        sel_path.write_text(json.dumps(sel, indent=2, default=str) + "\n")
        print(outcome_table({k: sel_results[k] for k in ["base"] + [g["label"] for g in sel["grid"]]}))
        S.plot_selection(sel, out / "selection.png")
        print(f"wrote {sel_path}; chosen: " + json.dumps(sel["chosen"]))
        if args.stage == "select":
            return 0
    sel = json.loads(sel_path.read_text())
    cells = S.test_cells(sel)
    if args.stage == "overhead":  # re-time the frozen test conditions only; outcomes in coast.json stay as run
        torch.set_num_threads(1)
        overhead = S.measure_overhead(cfg, arts, cells, reps=cfg.overhead_reps)
        payload = json.loads((out / "coast.json").read_text())
        payload["overhead"], payload["gate_overhead_ratio"] = overhead, overhead["ratio"]["coast_global"]
        payload["gate_overhead_ratio_min"] = overhead["ratio_min"]["coast_global"]
        payload["overhead_command"] = "lstack " + " ".join(sys.argv[1:])
        (out / "coast.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
        S.plot_report(payload, out / "coast.png")
        print("policy-call overhead (median steered / unsteered, interleaved): "
              + ", ".join(f"{k} {v:.4f}" for k, v in overhead["ratio"].items()))
        print("by minimum: " + ", ".join(f"{k} {v:.4f}" for k, v in overhead["ratio_min"].items()))
        return 0
    t0 = time.perf_counter()
    results = run_cells({"base": None, **cells}, "test", cfg.test_episodes)
    wall = time.perf_counter() - t0
    print(outcome_table(results))
    diag = S.diagnostics_for(cells, arts, rollouts, cfg.control_seed)
    for name, d in diag.items():
        print(f"gate diagnostic {name:<20} |dh|/|h| {d['rel_change']:.4f}  cos(dh,h) {d['cos']:+.4f}")
    torch.set_num_threads(1)
    overhead = S.measure_overhead(cfg, arts, cells, reps=cfg.overhead_reps)
    print("policy-call overhead (median steered / unsteered, interleaved): "
          + ", ".join(f"{k} {v:.4f}" for k, v in overhead["ratio"].items()))
    print("by minimum: " + ", ".join(f"{k} {v:.4f}" for k, v in overhead["ratio_min"].items()))
    meta = {"title": f"COAST on {Path(cfg.policy).name} — test seeds, paired", "suite": suite.name, "split": "test",
            "policy": cfg.policy, "preset": cfg.preset, "rollouts_meta": {"n": len(rollouts),
            "success": sum(r.success for r in rollouts), "seeds": sorted({r.seed for r in rollouts})},
            "cells": {k: asdict(v) for k, v in cells.items()}, "selection": str(sel_path),
            "test_seeds": list(suite.seeds["test"])[: cfg.test_episodes], "wall_s": wall,
            "gate_diagnostics": diag, "overhead": overhead, "command": portable_command(sys.argv[1:])}
    write_report(results, out, meta, stem="steer_eval")
    payload = coast_payload(results, cfg.test_episodes, overhead["ratio"]["coast_global"], **meta)
    payload["gate_overhead_ratio_min"] = overhead["ratio_min"]["coast_global"]  # interference-free estimate
    (out / "coast.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    S.plot_report(payload, out / "coast.png")
    if args.ship:
        for name in ("coast_global", "coast_per_step"):
            if name in cells:
                S.ship_cell(cells[name], arts, Path(args.ship), payload, name)
    print(f"wrote {out / 'coast.json'}, {out / 'coast.png'}, {out / 'steer_eval.json'}")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from .study import compare_presets

    res = compare_presets(args.conceptors, _csv(args.sites), _floats(args.alphas))
    if not res:
        raise SystemExit(f"no matching paper/repo global artifact pairs under {args.conceptors}")
    for k, v in res.items():
        print(f"{k:<26} |C_paper-C_repo|/|C_paper| {v['rel_frobenius_paper_vs_repo']:.3f}  repo asym "
              f"{v['repo_rel_asymmetry']:.3f}  quota {v['quota_paper']:.4f}/{v['quota_repo']:.4f}  "
              f"rank>1e-3 {v['paper_rank_above_1e-3']}/{v['d']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"command": portable_command(sys.argv[1:]), "pairs": res}, indent=2) + "\n")
    return 0
