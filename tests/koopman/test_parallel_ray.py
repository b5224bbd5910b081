"""KORR evaluation rollouts on Ray (local, 2 CPUs): the same per-episode successes as in-process, on the toy
env through ``lstack korr eval --workers 2`` and on robosuite Lift (MuJoCo in Ray workers) with the shipped
artifacts."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from latentstack.cli import main
from latentstack.koopman.artifact import save_residual
from latentstack.koopman.configuration_korr import residual_config
from latentstack.koopman.modeling_korr import make_residual
from latentstack.koopman.parallel import evaluate_korr_conditions, model_payload
from latentstack.koopman.toy_env import ToyInsertionEnv

ray = pytest.importorskip("ray")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray (2 CPUs) for the module: ray_map runs on an already initialised cluster and leaves it up."""
    import os

    if ray.is_initialized() or os.environ.get("RAY_ADDRESS"):
        pytest.skip("needs this process to start its own local Ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _residual(kind: str, seed: int) -> torch.nn.Module:
    """A small residual with non-zero output layers (a fresh one acts as the base), seeded."""
    torch.manual_seed(seed)
    return make_residual(residual_config(ToyInsertionEnv.obs_dim, ToyInsertionEnv.action_dim, kind, hidden_dim=16,
                                         lift_dim=8, action_head_std=1.0, action_scale=0.3))


def test_payload_round_trip() -> None:
    from latentstack.koopman.parallel import _residual as rebuild

    m = _residual("korr", 0)
    r = rebuild(model_payload(m))
    assert r.config == m.config and all(torch.equal(a, b) for a, b in
                                        zip(m.state_dict().values(), r.state_dict().values(), strict=True))


def test_toy_cli_ray_equals_in_process(tmp_path: Path, local_ray) -> None:
    specs = []
    for kind, seed in (("korr", 1), ("resip", 2)):
        save_residual(_residual(kind, seed), tmp_path / kind, meta={"train_seed": seed})
        specs.append(f"{kind}={tmp_path / kind}")
    common = ["korr", "eval", "--residual", *specs, "--test-batches", "3", "--episodes-per-batch", "24"]
    assert main([*common, "--out", str(tmp_path / "inproc")]) == 0
    assert main([*common, "--workers", "2", "--out", str(tmp_path / "ray")]) == 0
    a = json.loads((tmp_path / "inproc" / "eval.json").read_text())
    b = json.loads((tmp_path / "ray" / "eval.json").read_text())
    assert a == b
    c = a["conditions"]
    assert c["base"]["trials"] == 72 and 0 < c["base"]["successes"] < 72  # both outcomes occur
    # the conditions differ, so a condition mix-up on the workers would show
    assert len({c[n]["successes"] for n in c}) == 3 and c["korr"]["perturbed"] != c["korr"]


def test_toy_per_episode_order(local_ray) -> None:
    """Per-episode successes in seed-major order (a seed or episode mix-up that keeps the counts would show)."""
    from latentstack.koopman.toy_env import ToyInsertionConfig

    models = {"base": None, "korr": _residual("korr", 1)}
    seeds = [2_000_000_000 + i for i in range(3)]
    cfg = ToyInsertionConfig(num_envs=16)
    ref = evaluate_korr_conditions("toy_insertion", cfg, {}, models, [True], seeds)
    par = evaluate_korr_conditions("toy_insertion", cfg, {}, models, [True], seeds, workers=2)
    assert ray.is_initialized()  # it ran on this module's cluster
    for n in models:
        assert par[n][True].dtype == torch.bool and torch.equal(par[n][True], ref[n][True])
    assert not torch.equal(ref["base"][True][:16], ref["base"][True][16:32])  # seeds differ per batch


def test_robosuite_shipped_ray_equals_in_process(local_ray) -> None:
    """MuJoCo in Ray workers (fresh processes, not forks): the shipped base and KORR residual on Lift, one
    episode per test seed (nominal; the perturbed path is the toy tests' and adds only a reseeded sampler)."""
    pytest.importorskip("robosuite")
    from latentstack.koopman.artifact import load_residual
    from latentstack.koopman.base_policy import load_chunk_base
    from latentstack.sim.robosuite_env import RobosuiteTaskConfig

    base_dir = REPO / "policies" / "korr_lift_base"
    base = load_chunk_base(base_dir)[0]
    models = {"base": None, "korr": load_residual(REPO / "policies" / "korr_lift_korr", source=base_dir)[0]}
    cfg = RobosuiteTaskConfig(num_envs=1, horizon=60)
    seeds = [2_000_000_000 + i for i in range(3)]
    ref = evaluate_korr_conditions("robosuite", cfg, base, models, [False], seeds)
    par = evaluate_korr_conditions("robosuite", cfg, base, models, [False], seeds, workers=2)
    for n in models:
        assert torch.equal(par[n][False], ref[n][False]), (n, par[n][False], ref[n][False])
    flat = torch.cat([ref[n][False] for n in models])
    assert 0 < int(flat.sum()) < flat.numel()  # both outcomes occur
    assert not torch.equal(ref["base"][False], ref["korr"][False])  # a condition mix-up would show
