"""``steer collect | fit | eval`` end to end on a one-task yaml suite with a fake env and the shipped VLA."""
from __future__ import annotations

import argparse
import json

import pytest

from latentstack.cli.steer import add_parser as add_steer_parser
from latentstack.steering.cli import cmd_collect, cmd_eval
from latentstack.steering.collect import load_rollouts
from latentstack.steering.intervention import SteeringArtifact

from .conftest import SHIPPED, tiny_suite_yaml
from .test_collect_vla import FakeEnv

SUITE = tiny_suite_yaml("tiny", [("button-press-topdown-v3", "press the button from the top")], 12)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lstack")
    add_steer_parser(p.add_subparsers(dest="command", required=True))
    return p


def test_parser_wiring():
    a = parser().parse_args(["steer", "fit", "--rollouts", "r.safetensors", "--out", "o"])
    assert a.func.__name__ == "cmd_fit" and a.preset == "paper" and a.alphas == "0.1,0.5,1,2,10"
    with pytest.raises(SystemExit):
        parser().parse_args(["steer", "collect", "--split", "test", "--out", "x"])


def test_collect_fit_eval(tmp_path, capsys):
    if not SHIPPED.exists():
        pytest.skip("shipped VLA checkpoint not present")
    suite = tmp_path / "tiny.yaml"
    suite.write_text(SUITE)
    roll = tmp_path / "roll.safetensors"
    a = parser().parse_args(["steer", "collect", "--suite", str(suite), "--policy", str(SHIPPED), "--episodes-per-task", "4",
                             "--sites", "expert.layer1", "--out", str(roll)])
    assert cmd_collect(a, env_factory=FakeEnv) == 0
    rollouts, meta = load_rollouts(roll)
    assert [r.success for r in rollouts] == [True, False, True, False] and meta["seeds"] == [60, 61, 62, 63]
    out = tmp_path / "conceptors"
    a = parser().parse_args(["steer", "fit", "--rollouts", str(roll), "--preset", "repo", "--alphas", "0.5,2",
                             "--out", str(out)])
    assert a.func(a) == 0
    names = sorted(p.parent.name for p in out.glob("*/config.json"))  # one artifact folder per conceptor
    assert names == ["all__expert.layer1__global__a0.5__repo", "all__expert.layer1__global__a2__repo",
                     "all__expert.layer1__per_step__a1__repo"]
    # paper preset needs 3 per class: skipped, nothing written -> exit code 1
    a = parser().parse_args(["steer", "fit", "--rollouts", str(roll), "--out", str(tmp_path / "none")])
    assert a.func(a) == 1 and "skipped" in capsys.readouterr().out
    stem = out / "all__expert.layer1__global__a0.5__repo"
    card = SteeringArtifact.load(stem, expected_d=128).card
    assert card["layer"] == 1 and card["seeds"]["fit"] == [60, 61, 62, 63] and card["preset"]["name"] == "repo"
    doc = json.loads((stem / "config.json").read_text())  # fitted on the shipped VLA: named by repo path + hash
    assert card["policy"] == doc["source"]["path"] == "policies/vla_metaworld_mt6"
    a = parser().parse_args(["steer", "eval", "--suite", str(suite), "--policy", str(SHIPPED), "--artifact",
                             str(stem), "--episodes-per-task", "2", "--controls",
                             "positive_only,linear", "--quiet", "--out",
                             str(tmp_path / "rep"), "--rollouts", str(roll)])
    assert cmd_eval(a, env_factory=FakeEnv) == 0
    rep = json.loads((tmp_path / "rep" / "steer_eval.json").read_text())
    assert set(rep["conditions"]) == {"base", "coast", "shrinkage", "random_matched", "positive_only", "linear"}
    assert rep["meta"]["split"] == "select" and rep["meta"]["beta"] == 0.3
    assert rep["meta"]["gate_overhead_ratio"] > 0
    diag = rep["meta"]["gate_diagnostics"]
    assert set(diag) == {"coast", "shrinkage", "random_matched", "positive_only"}
    assert diag["shrinkage"]["rel_change"] == pytest.approx(0.3, abs=1e-6)
    assert diag["shrinkage"]["cos"] == pytest.approx(-1.0, abs=1e-6)
    coast = json.loads((tmp_path / "rep" / "coast.json").read_text())
    assert coast["n_tasks"] == 1 and coast["episodes_per_task"] == 2 and coast["gate_overhead_ratio"] > 0
    assert set(coast["conditions"]["coast"]) >= {"success", "ci_low", "ci_high", "per_task"}
    assert set(coast["paired"]) == set(coast["conditions"]) - {"base"}
    seeds = {n: [e["seed"] for e in eps] for n, eps in rep["episodes"].items()}
    assert all(s == [100, 101] for s in seeds.values())  # paired


def test_fit_per_task_and_per_step_diagnostics(tmp_path):
    import torch

    from latentstack.steering.cli import _diagnostics
    from latentstack.steering.collect import Rollout, save_rollouts

    g = torch.Generator().manual_seed(0)
    rs = [Rollout(task, seed, seed % 2 == 0, 10, {"expert.layer0": torch.randn(2, 3, 4, 8, generator=g)})
          for task in ("t1", "t2") for seed in range(4 if task == "t1" else 3)]
    roll = save_rollouts(rs, tmp_path / "r.safetensors", {"split": "train"})
    out = tmp_path / "c"
    a = parser().parse_args(["steer", "fit", "--rollouts", str(roll), "--preset", "repo", "--alphas", "1",
                             "--per-task", "--strategies", "per_step", "--out", str(out)])
    assert a.func(a) == 0
    assert sorted(p.parent.name for p in out.glob("*/config.json")) == ["t1__expert.layer0__per_step__a1__repo"]  # t2: 1 failure
    stem = out / "t1__expert.layer0__per_step__a1__repo"
    art = SteeringArtifact.load(stem)
    assert art.C.shape == (3, 8, 8) and art.card["task"] == "t1" and art.card["seeds"]["fit"] == [0, 1, 2, 3]
    d = _diagnostics(argparse.Namespace(rollouts=str(roll), control_seed=0), art, 0.3, ["shrinkage"])
    assert d["shrinkage"]["rel_change"] == pytest.approx(0.3, abs=1e-6) and 0 < d["coast"]["rel_change"] < 0.3
