"""``lstack korr train | eval`` end to end on the toy env (tiny sizes)."""
from __future__ import annotations

import json
from pathlib import Path

from latentstack.cli import main


def test_korr_train_then_eval(tmp_path: Path) -> None:
    art = tmp_path / "korr"
    assert main(["korr", "train", "--env", "toy_insertion", "--kind", "korr", "--iterations", "2", "--num-envs", "8",
                 "--epochs", "1", "--hidden", "16", "--lift", "8", "--out", str(art)]) == 0
    cfg = json.loads((art / "config.json").read_text())
    assert cfg["type"] == "korr_residual" and cfg["config"]["lift_dim"] == 8 and cfg["extra"]["best_iteration"] == 1
    assert main(["korr", "eval", "--residual", f"k={art}", "--test-batches", "1", "--episodes-per-batch", "16",
                 "--out", str(tmp_path / "ev")]) == 0
    ev = json.loads((tmp_path / "ev" / "eval.json").read_text())
    base, k = ev["conditions"]["base"], ev["conditions"]["k"]
    assert base["trials"] == 16 and {"success", "ci_low", "ci_high", "perturbed"} <= set(k)
    # best checkpoint is the iteration-1 evaluation (zero residual) ⇒ identical to the base
    assert k["successes"] == base["successes"] and k["perturbed"]["successes"] == base["perturbed"]["successes"]


def test_compare_reads_training_histories_from_artifacts(tmp_path: Path) -> None:
    """``--histories-from`` reads the training meta of a format-2 residual artifact (its ``extra``)."""
    art = tmp_path / "korr"
    assert main(["korr", "train", "--env", "toy_insertion", "--kind", "korr", "--iterations", "2", "--num-envs", "8",
                 "--epochs", "1", "--hidden", "16", "--lift", "8", "--seed", "3", "--out", str(art)]) == 0
    cfg = tmp_path / "toy.yaml"
    cfg.write_text("env: toy_insertion\nkinds: [korr]\ntrain_seeds: [0]\ntest_batches: 1\nenv_config: {num_envs: 8}\n"
                   "ppo: {preset: cpu, num_envs: 8}\n")
    (tmp_path / "none").mkdir()
    assert main(["korr", "compare", "--config", str(cfg), "--out", str(tmp_path / "out"), "--from-artifacts",
                 str(tmp_path / "none"), "--histories-from", f"korr={art}"]) == 0
    full = json.loads((tmp_path / "out" / "toy.json").read_text())
    assert len(full["histories"]["korr"]["3"]) == 2  # one record per training iteration
