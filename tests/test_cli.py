"""`lstack` end to end on the shipped checkpoint: same seeds give identical tables."""
import json
from pathlib import Path

import pytest

from latentstack.cli import build_parser, main, run_evaluation
from latentstack.sim.evaluation import outcome_table

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = str(ROOT / "policies" / "vla_metaworld_mt6")


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    for cmd in ("record", "train", "eval", "demo"):
        assert cmd in out


@pytest.mark.slow
def test_eval_twice_same_seeds_identical_tables(tmp_path):
    conditions = {"vla": SHIPPED, "untrained": f"random:{SHIPPED}"}
    first = run_evaluation("metaworld_mt6", conditions, 2, "test", tmp_path / "a", progress=False)
    second = run_evaluation("metaworld_mt6", conditions, 2, "test", None, progress=False)
    assert outcome_table(first["results"]) == outcome_table(second["results"])
    data = json.loads((tmp_path / "a" / "eval.json").read_text())
    assert set(data["conditions"]) == {"vla", "untrained"}
    assert data["meta"]["seeds"] == [20000, 20001]
    assert (tmp_path / "a" / "eval.png").stat().st_size > 1000


@pytest.mark.slow
def test_lstack_eval_command_writes_report(tmp_path, capsys):
    rc = main(["eval", "--policy", f"vla={SHIPPED}", "--episodes-per-task", "1", "--out", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "overall" in out and "p99" in out
    assert (tmp_path / "eval.json").exists()
