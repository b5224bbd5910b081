"""KORR rollouts on Ray (local, 2 CPUs) equal the in-process ones: evaluation on the toy env through ``lstack korr
eval --workers 2`` and on robosuite Lift (MuJoCo in Ray workers) with the shipped artifacts, and residual PPO's
rollout collection on robosuite envs sharded over Ray actors."""
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


def test_korr_ray_flags() -> None:
    """``--workers/--ray-address`` on every ``lstack korr`` command (in-process unless asked); the toy env's
    training has nothing to shard and refuses them."""
    from latentstack.cli import build_parser

    for cmd in (["eval"], ["compare"], ["robosuite"], ["train"]):
        a = build_parser().parse_args(["korr", *cmd, "--workers", "3", "--ray-address", "ray://h:10001",
                                       *(["--out", "x"] if cmd == ["train"] else [])])
        assert (a.workers, a.ray_address) == (3, "ray://h:10001")
        d = build_parser().parse_args(["korr", *cmd, *(["--out", "x"] if cmd == ["train"] else [])])
        assert (d.workers, d.ray_address) == (1, None)
    with pytest.raises(SystemExit, match="only --env robosuite"):
        main(["korr", "train", "--env", "toy_insertion", "--workers", "2", "--out", "unused"])


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


@pytest.mark.slow  # robosuite in fresh Ray workers: ~15-35 s depending on machine load
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


@pytest.mark.slow  # robosuite in fresh Ray workers: ~15-35 s depending on machine load
def test_robosuite_sharded_training_env_rollout_equal(local_ray) -> None:
    """PPO's collection (stochastic residual, seeded generator) on 3 envs split 2 + 1 over two actors gives every
    rollout tensor of the in-process batch, bit for bit (perturbations on: the per-env samplers too)."""
    pytest.importorskip("robosuite")
    from latentstack.koopman.artifact import load_residual
    from latentstack.koopman.base_policy import BatchedChunkBase, load_chunk_base
    from latentstack.koopman.parallel import RayRobosuiteVecEnv
    from latentstack.koopman.trainer import collect
    from latentstack.sim.robosuite_env import RobosuiteTaskConfig, RobosuiteVecEnv

    base_dir = REPO / "policies" / "korr_lift_base"
    b = BatchedChunkBase(load_chunk_base(base_dir)[0])
    model = load_residual(REPO / "policies" / "korr_lift_korr", source=base_dir)[0]
    cfg = RobosuiteTaskConfig(num_envs=3, horizon=30, perturb=True)
    outs = []
    for env in (RobosuiteVecEnv(cfg), RayRobosuiteVecEnv(cfg, workers=2)):
        try:
            outs.append(collect(env, b, model, 1_000_003, cfg.horizon, deterministic=False,
                                generator=torch.Generator().manual_seed(5), normalize_obs=b.normalize_obs,
                                denormalize_action=b.denormalize_action))
        finally:
            env.close()
    ref, par = outs
    for k in ("obs", "action", "reward", "dones", "next_obs", "last_obs", "logprob", "value"):
        assert torch.equal(getattr(par, k), getattr(ref, k)), k
    assert not torch.equal(ref.obs[-1, 0], ref.obs[-1, 2])  # the envs differ: a shard mix-up would show
