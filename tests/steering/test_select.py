from __future__ import annotations

import pytest
import torch

from latentstack.steering.fit import PRESETS, SteeringFit
from latentstack.steering.select import grid_search, heuristic_select


def fake_fit(site, alpha, quota, sim, strategy="global"):
    z = torch.zeros(2, 2)
    return SteeringFit(site, strategy, alpha, PRESETS["paper"], z, z, z, torch.zeros(2), {}, {},
                       {"quota": quota, "similarity": sim})


def test_heuristic_picks_max_quota_layer_and_sim_band():
    fits = {}
    for site, q in (("expert.layer0", 0.01), ("expert.layer2", 0.09), ("expert.layer3", 0.08)):
        for a, s in ((0.1, 0.955), (0.5, 0.937), (1.0, 0.882), (2.0, 0.808), (10.0, 0.67)):
            fits[(site, "global", a)] = fake_fit(site, a, q if a == 10.0 else 0.5, s)
    sel = heuristic_select(fits)
    assert sel.site == "expert.layer2" and sel.alphas == (0.5, 1.0) and sel.betas == (0.1, 0.3)


def test_heuristic_fallback_closest_and_task_means():
    fits = {("a", "global", 10.0): [fake_fit("a", 10.0, 0.1, 0.5), fake_fit("a", 10.0, 0.1, 0.7)],
            ("a", "global", 1.0): [fake_fit("a", 1.0, 0.1, 0.8), fake_fit("a", 1.0, 0.1, 0.82)]}
    assert heuristic_select(fits).alphas == (1.0,)
    with pytest.raises(ValueError):
        heuristic_select(fits, strategy="per_step")
    with pytest.raises(KeyError):
        heuristic_select({("a", "global", 1.0): fake_fit("a", 1.0, 0.1, 0.9)})


def test_grid_search():
    grid = [{"beta": b, "alpha": a} for b in (0.1, 0.3) for a in (0.5, 1.0)]
    best, scored = grid_search(grid, lambda c: c["beta"] * (2 - c["alpha"]))
    assert best == {"beta": 0.3, "alpha": 0.5} and len(scored) == 4
    best, _ = grid_search(grid, lambda c: 0.0)
    assert best is grid[0]
