"""The COAST study: selection bookkeeping, frozen test conditions, sharded == in-process evaluation, overhead."""
from __future__ import annotations

import functools
import json

import pytest
import torch
from torch import nn

from latentstack.latent import Intervention, Site
from latentstack.steering import study as S
from latentstack.steering.fit import fit_contrastive
from latentstack.steering.intervention import SteeringArtifact
from latentstack.steering.overhead import measure_call_overhead

from .conftest import SHIPPED, tiny_suite_yaml

TWO_TASKS = tiny_suite_yaml("tiny2", [("button-press-topdown-v3", "press the button from the top"),
                                      ("drawer-close-v3", "close the drawer")], 10)


def _fake_arts(tmp_path, d=128, D=10):
    """Artifacts named like `steer fit` writes them, from synthetic states (two sites, both strategies)."""
    g = torch.Generator().manual_seed(0)
    out = tmp_path / "conceptors"
    for site, shift in (("expert.layer1", 0.0), ("expert.layer2", 0.5)):
        succ = [torch.randn(6, D, 1, d, generator=g) + shift for _ in range(4)]
        fail = [torch.randn(6, D, 1, d, generator=g) * 1.5 for _ in range(4)]
        for strategy in ("global", "per_step"):
            for a, fit in fit_contrastive(succ, fail, [0.5, 10.0], "paper", strategy, site).items():
                SteeringArtifact.from_fit(fit, beta=0.3, layer=int(site[-1])).save(
                    S.artifact_stem(out, site, strategy, a, "paper"))
    return out


def test_heuristic_alpha_and_frozen_test_cells(tmp_path):
    out = _fake_arts(tmp_path)
    arts = S.load_fitted(out, "paper", ("expert.layer1", "expert.layer2"))
    assert set(arts) == {(s, st, a) for s in ("expert.layer1", "expert.layer2") for st in ("global", "per_step")
                         for a in (0.5, 10.0)}
    sims = {a: arts[("expert.layer1", "global", a)].card["diagnostics"]["similarity"] for a in (0.5, 10.0)}
    assert S.heuristic_alpha(arts, "expert.layer1", "global") == min(sims, key=lambda a: abs(sims[a] - 0.9))
    g = S.Cell("conceptor", "expert.layer2", "global", 10.0, 0.1)
    ps = S.Cell("conceptor", "expert.layer1", "per_step", 0.5, 0.3)
    caa = S.Cell("linear", "expert.layer2", magnitude=2.0)
    sel = {"chosen": {"coast_global": vars(g) | {}, "coast_per_step": vars(ps) | {}, "caa": vars(caa) | {}},
           "heuristic_cell": vars(S.Cell("conceptor", "expert.layer1", "global", 0.5, 0.1)) | {}}
    cells = S.test_cells(json.loads(json.dumps(sel)))
    assert list(cells) == ["coast_global", "coast_per_step", "shrinkage", "random_matched", "caa",
                           "shrinkage_per_step", "coast_heuristic"]
    # controls are matched to coast_global: same site, α, β
    for name in ("shrinkage", "random_matched"):
        c = cells[name]
        assert (c.kind, c.site, c.alpha, c.beta) == (name, g.site, g.alpha, g.beta)
    assert cells["shrinkage_per_step"].beta == 0.3
    same = dict(sel, heuristic_cell=sel["chosen"]["coast_global"])
    assert "coast_heuristic" not in S.test_cells(same)
    # diagnostics: shrinkage is exactly -β·h; CAA reports the magnitude ratio
    from latentstack.steering.collect import Rollout

    gen = torch.Generator().manual_seed(1)
    rolls = [Rollout("t", i, i % 2 == 0, 5, {"expert.layer1": torch.randn(3, 10, 1, 128, generator=gen),
                                             "expert.layer2": torch.randn(3, 10, 1, 128, generator=gen)})
             for i in range(4)]
    diag = S.diagnostics_for(cells, arts, rolls)
    assert diag["shrinkage"]["rel_change"] == pytest.approx(0.1) and diag["shrinkage"]["cos"] == pytest.approx(-1.0)
    assert 0 < diag["coast_global"]["rel_change"] < 0.1
    assert diag["caa"]["rel_change"] > 0 and diag["caa"]["magnitude"] == 2.0


def test_ray_evaluation_equals_in_process(tmp_path, monkeypatch):
    """Local Ray with 2 workers (task x seed shards) gives the same paired episodes as one process."""
    if not SHIPPED.exists():
        pytest.skip("shipped VLA checkpoint not present")
    pytest.importorskip("ray")
    from latentstack.sim.evaluation import evaluate, evaluate_parallel
    from latentstack.sim.suites import load_suite

    suite_path = tmp_path / "tiny2.yaml"
    suite_path.write_text(TWO_TASKS)
    suite = load_suite(str(suite_path))
    conceptors = _fake_arts(tmp_path)
    cfg = S.StudyConfig(policy=str(SHIPPED), rollouts="unused", conceptors=str(conceptors), suite=str(suite_path),
                        sites=("expert.layer1", "expert.layer2"))
    cells = {"base": None, "coast_global": S.Cell("conceptor", "expert.layer2", "global", 10.0, 0.5)}
    make = functools.partial(S.build_conditions, json.dumps(vars(cfg)), S.cells_json(cells))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    a = evaluate_parallel(suite, make, 2, split="test", workers=2, progress=False, chunk=1)
    b = evaluate(suite, make(), 2, split="test", progress=False)
    for name in cells:
        assert [(e.task, e.seed, e.success, e.length) for e in a[name].episodes] == \
               [(e.task, e.seed, e.success, e.length) for e in b[name].episodes]
    assert [e.task for e in a["base"].episodes] == ["button-press-topdown-v3"] * 2 + ["drawer-close-v3"] * 2


def test_call_overhead_measurement():
    m = nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 16))
    x = torch.randn(4, 16)
    ivs = {"base": None, "noop": Intervention(m, {Site("0"): lambda v, meta: v}),
           "double": Intervention(m, {Site("0"): lambda v, meta: v * 2})}
    r = measure_call_overhead(lambda: m(x), ivs, reps=5, warmup=1)
    assert r["ratio"]["base"] == 1.0 and set(r["median_ms"]) == set(ivs) and r["reps"] == 5
    assert all(v > 0 for v in r["median_ms"].values())
    assert not m[0]._forward_hooks  # every hook removed after timing
    with pytest.raises(KeyError):
        measure_call_overhead(lambda: m(x), {"noop": None}, reps=1)


def test_compare_presets(tmp_path):
    g = torch.Generator().manual_seed(0)
    out = tmp_path / "c"
    succ = [torch.randn(5, 2, 3, 16, generator=g) + 0.3 for _ in range(3)]
    fail = [torch.randn(5, 2, 3, 16, generator=g) for _ in range(3)]
    for preset in ("paper", "repo"):
        for a, fit in fit_contrastive(succ, fail, [1.0], preset, "global", "s").items():
            SteeringArtifact.from_fit(fit).save(S.artifact_stem(out, "s", "global", a, preset))
    res = S.compare_presets(out, ["s"], [1.0])
    r = res["s α=1"]
    assert r["rel_frobenius_paper_vs_repo"] > 0.01  # D1/D2: pooling + centring change the operator
    assert r["repo_rel_asymmetry"] > 0  # D3: A(A+B-AB)^-1 B is not symmetric
    assert 0 <= r["paper_rank_above_1e-3"] <= 16 and S.compare_presets(out, ["other"], [1.0]) == {}


def test_overhead_reports_min_and_median_ratios():
    m = nn.Linear(8, 8)
    r = measure_call_overhead(lambda: m(torch.randn(2, 8)), {"base": None, "b2": None}, reps=3, warmup=0)
    assert r["ratio_min"]["base"] == 1.0 and set(r["min_ms"]) == {"base", "b2"}
    assert all(r["min_ms"][k] <= r["median_ms"][k] for k in r["min_ms"])
