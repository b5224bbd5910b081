"""`lstack eval --workers 2` (local Ray, 2 CPUs): the same outcome table as the in-process run, on MetaWorld."""
import json
from pathlib import Path

import pytest

from latentstack.cli import build_parser, run_evaluation
from latentstack.sim.evaluation import outcome_table

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = str(ROOT / "policies" / "vla_metaworld_mt6")
SUITE = """name: tiny2
env: metaworld
image_size: 64
camera: corner4
seeds:
  train:  {start: 0, stop: 50}
  select: {start: 100, stop: 150}
  test:   {start: 200, stop: 250}
tasks:
  - {name: button-press-topdown-v3, instruction: press the button from the top, max_episode_steps: 10}
  - {name: drawer-close-v3, instruction: close the drawer, max_episode_steps: 10}
"""


def test_eval_parses_ray_flags():
    a = build_parser().parse_args(["eval", "--policy", "x", "--workers", "3", "--ray-address", "ray://h:10001"])
    assert (a.workers, a.ray_address) == (3, "ray://h:10001")
    d = build_parser().parse_args(["demo"])
    assert (d.workers, d.ray_address) == (1, None)  # in-process unless asked


def test_eval_on_ray_equals_in_process(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    if not Path(SHIPPED).exists():
        pytest.skip("shipped VLA checkpoint not present")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    suite = tmp_path / "tiny2.yaml"
    suite.write_text(SUITE)
    conditions = {"vla": SHIPPED, "untrained": f"random:{SHIPPED}"}
    ref = run_evaluation(str(suite), conditions, 2, "test", None, progress=False)
    par = run_evaluation(str(suite), conditions, 2, "test", tmp_path / "r", progress=False, workers=2)
    key = {n: [(e.task, e.seed, e.success, e.length) for e in r.episodes] for n, r in ref["results"].items()}
    assert {n: [(e.task, e.seed, e.success, e.length) for e in r.episodes] for n, r in par["results"].items()} == key
    assert outcome_table(par["results"]) == outcome_table(ref["results"])
    assert json.loads((tmp_path / "r" / "eval.json").read_text())["meta"]["ray_workers"] == 2
