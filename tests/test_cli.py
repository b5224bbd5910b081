"""`lstack` end to end on the shipped checkpoint (same seeds give identical tables), and the uniform CLI: one
``lstack <component> <verb>`` tree, the same flags for the same things, no torch to build or print help, every
command named in the docs still parses, ``lstack train`` dispatching on the config's type."""
import argparse
import glob
import io
import json
import re
import shlex
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from latentstack.cli import build_parser, main, run_evaluation
from latentstack.cli.common import LazyCommand
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


# --------------------------------------------------------------------------- the uniform CLI (issue 13 item 7)
def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(path, parser) of every runnable command: ``("steer", "collect")``, ``("eval",)`` ..."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, child in subs[0].choices.items():
        yield from _leaves(child, path + (name,))


def _options(parser: argparse.ArgumentParser, hidden: bool) -> set[str]:
    return {o for a in parser._actions for o in a.option_strings if (a.help == argparse.SUPPRESS) == hidden}


LEAVES = dict(_leaves(build_parser()))
# commands that load, train or run a model: every one takes --device
MODEL_COMMANDS = [("train",), ("eval",), ("demo",), ("launch",), ("quantize",), ("act", "train"), ("lion", "train"),
                  ("lion", "eval"), ("stereo", "pretrain"), ("stereo", "train"), ("stereo", "eval"),
                  ("korr", "train"), ("korr", "eval"), ("korr", "compare"), ("korr", "robosuite"),
                  ("steer", "collect"), ("steer", "eval"), ("steer", "study")]
# spellings replaced by the uniform flags: allowed only as hidden, deprecated aliases
OLD_SPELLINGS = {"--dataset", "--data-dir", "--root", "--num-threads", "--n", "--episodes", "--base", "--output",
                 "--out-dir", "--output-dir", "--ckpt", "--checkpoint", "--cuda", "--gpu"}


def test_help_and_component_help_import_no_torch():
    code = r"""
import sys, time
from latentstack.cli import build_parser
t0 = time.perf_counter()
for argv in (["--help"], *[[c, "--help"] for c in ("train", "eval", "launch", "steer", "quantize", "act", "lion",
             "korr", "stereo")], ["steer", "collect", "--help"], ["lion", "train", "--help"], ["korr", "eval", "--help"]):
    try:
        build_parser().parse_args(argv)
    except SystemExit:
        pass
heavy = sorted(m for m in ("torch", "numpy", "mujoco", "lerobot") if m in sys.modules)
assert not heavy, heavy
print(f"{time.perf_counter() - t0:.3f}")
"""
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.strip().splitlines()[-1]) < 10.0  # parsing only: well under a second when idle


@pytest.mark.parametrize("path", MODEL_COMMANDS, ids=" ".join)
def test_model_commands_take_device_and_check_it(path):
    parser = LEAVES[path]
    assert "--device" in _options(parser, hidden=False)
    action = next(a for a in parser._actions if "--device" in a.option_strings)
    assert action.type("CUDA:1") == "cuda:1"
    with pytest.raises(argparse.ArgumentTypeError, match="unknown device"):
        action.type("gpu")


def test_same_flag_names_everywhere():
    for path, parser in LEAVES.items():
        visible = _options(parser, hidden=False)
        assert not visible & OLD_SPELLINGS, (path, visible & OLD_SPELLINGS)
        assert isinstance(parser.get_default("func"), LazyCommand), path  # heavy modules load on run only
    for path in (("record",), ("act", "train"), ("lion", "train"), ("lion", "gen-data"), ("stereo", "gen-data"),
                 ("stereo", "train"), ("train",)):
        assert "--data" in _options(LEAVES[path], hidden=False), path
    for path in (("eval",), ("steer", "collect"), ("launch",), ("quantize",), ("demo",), ("korr", "eval")):
        assert "--policy" in _options(LEAVES[path], hidden=False), path
    for path in (("lion", "eval"), ("stereo", "eval")):
        assert "--model" in _options(LEAVES[path], hidden=False), path
    for path in (("eval",), ("demo",), ("launch",), ("record",), ("steer", "collect"), ("steer", "eval")):
        assert "--episodes-per-task" in _options(LEAVES[path], hidden=False), path


def test_every_command_resolves_to_a_function():
    for path, parser in LEAVES.items():
        assert callable(parser.get_default("func").resolve()), path
    from latentstack.cli.train import TRAINER_TYPES

    for kind, target in TRAINER_TYPES.items():
        assert callable(LazyCommand(target).resolve()), kind


@pytest.mark.parametrize("argv,dest,value", [
    (["act", "train", "--dataset", "d"], "data", "d"),
    (["train", "--dataset", "d", "--out", "o"], "data", "d"),
    (["train", "--num-threads", "3"], "threads", 3),
    (["record", "--root", "r"], "data", "r"),
    (["lion", "eval", "--data-dir", "x"], "data", "x"),
    (["lion", "train", "--out", "o", "--iterations", "250"], "steps", 250),
    (["stereo", "gen-data", "--out", "x"], "data", "x"),
    (["launch", "g.yaml", "--episodes", "2"], "episodes_per_task", 2),
    (["steer", "collect", "--out", "o", "--n", "4"], "episodes_per_task", 4),
    (["korr", "eval", "--base", "b"], "base", "b"),
])
def test_old_spellings_still_parse_with_a_deprecation_note(argv, dest, value, capsys):
    args = build_parser().parse_args(argv)
    assert getattr(args, dest) == value
    if argv[-2] != "--iterations":
        assert "is deprecated, use --" in capsys.readouterr().err


def test_required_flag_satisfied_by_its_alias_and_named_when_missing(capsys):
    assert build_parser().parse_args(["act", "train", "--dataset", "d"]).data == "d"
    capsys.readouterr()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["act", "train"])
    err = capsys.readouterr().err
    assert "--data" in err and "--dataset" not in err


def test_unavailable_device_is_one_clear_line():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present: nothing to refuse")
    with pytest.raises(SystemExit, match="device 'cuda' requested but .*use device 'cpu'"):
        main(["eval", "--policy", "vla", "--device", "cuda"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["eval", "--policy", "vla", "--device", "gpu"])


def _commands_in_docs() -> list[tuple[str, str]]:
    """``lstack ...`` command lines named in the README, reports, cards, scripts, configs and notebooks."""
    pats = ["README.md", "reports/**/*.md", "scripts/*.sh", "configs/*.yaml", "policies/**/CARD.md", "ros/**/*.md",
            "ros/**/*.yaml", "notebooks/*.ipynb"]
    found = []
    for pat in pats:
        for f in sorted(glob.glob(str(ROOT / pat), recursive=True)):
            text = Path(f).read_text().replace("\\\n", " ")
            for m in re.finditer(r"(?<![\w/.-])lstack ([a-z][^\n`\"|;&#]*)", text):
                cmd = re.sub(r"\{([^,}]*),[^}]*\}", r"\1", m.group(1).strip())  # --beta {0.1,0.3} -> 0.1
                cmd = re.sub(r"\[[^\]]*\]", "", re.sub(r"\$\{?\w+\}?", "1", cmd))  # $VARS, [optional] parts
                if "--" in cmd and "..." not in cmd:  # a command line, not a mention of a command's name
                    found.append((str(Path(f).relative_to(ROOT)), cmd))
    return found


DOC_COMMANDS = _commands_in_docs()


def test_docs_name_commands():
    assert len(DOC_COMMANDS) > 40  # the extraction itself works


@pytest.mark.parametrize("where,cmd", DOC_COMMANDS, ids=[f"{w}:{c[:40]}" for w, c in DOC_COMMANDS])
def test_every_documented_command_still_parses(where, cmd):
    err = io.StringIO()
    try:
        with redirect_stderr(err), redirect_stdout(io.StringIO()):
            build_parser().parse_args(shlex.split(cmd))
    except SystemExit as exc:
        msg = err.getvalue()
        # a flag renamed or removed shows as one of these; a short mention that omits a required flag does not
        assert not re.search(r"unrecognized arguments|invalid choice|invalid \w+ value|expected one argument", msg), \
            f"{where}: lstack {cmd}\n{msg}"
        assert exc.code in (0, 2)


# --------------------------------------------------------------------------- lstack train: dispatch on type
@pytest.fixture
def trainers(monkeypatch):
    """Replace every trainer with a recorder of the namespace it would get."""
    import importlib

    from latentstack.cli.train import TRAINER_TYPES

    calls: dict[str, argparse.Namespace] = {}
    for kind, target in TRAINER_TYPES.items():
        module, _, attr = target.partition(":")
        monkeypatch.setattr(importlib.import_module(module), attr,
                            lambda ns, kind=kind: calls.__setitem__(kind, ns) or 0)
    return calls


def test_train_without_type_is_the_vla_form(trainers):
    assert main(["train", "--dataset", "data/demos", "--out", "runs/x", "--config", "configs/vla_mt6.yaml",
                 "--steps", "3"]) == 0
    ns = trainers["vla"]
    assert (ns.data, ns.out, ns.steps, ns.config, ns.device) == ("data/demos", "runs/x", 3, "configs/vla_mt6.yaml", "cpu")
    assert ns.batch_size is None and ns.no_resume is False  # not given: the VLA TrainConfig's defaults apply


def test_train_dispatches_on_the_config_type_and_merges_flags(trainers, tmp_path):
    cfg = tmp_path / "act.yaml"
    cfg.write_text("type: act\ntrain:\n  batch-size: 8\n  steps: 5\n  data: data/demos\n")
    assert main(["train", "--config", str(cfg), "--steps", "7", "--out", "o"]) == 0
    ns = trainers["act"]
    assert (ns.steps, ns.batch_size, ns.data, ns.out) == (7, 8, "data/demos", "o")  # flag > config > default
    assert (ns.preset, ns.threads, ns.seed, ns.device) == ("act_small", 1, 0, "cpu")  # `lstack act train` defaults
    assert set(trainers) == {"act"}


def test_train_type_flag_and_policy_section_type(trainers, tmp_path):
    assert main(["train", "--type", "lion", "--out", "o", "--iterations", "9"]) == 0
    assert (trainers["lion"].steps, trainers["lion"].data, trainers["lion"].preset) == (9, "data/lion", "lion_tiny")
    cfg = tmp_path / "s.json"
    cfg.write_text('{"policy": {"type": "stereo"}}')
    from latentstack.cli.train import _load_config, config_type

    assert config_type(_load_config(str(cfg))) == "stereo"


@pytest.mark.parametrize("argv,msg", [
    (["train", "--type", "act", "--data", "d", "--encoder", "e"], "--encoder do\\(es\\) not apply to type act"),
    (["train", "--type", "stereo"], "type stereo needs --out"),
    (["train", "--out", "o"], "needs --data"),
])
def test_train_refuses_what_does_not_apply(trainers, argv, msg):
    with pytest.raises(SystemExit, match=msg):
        main(argv)
    assert not trainers


def test_train_config_errors(trainers, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("type: lion\ntrain: {bogus: 1}\n")
    with pytest.raises(SystemExit, match="bogus"):
        main(["train", "--config", str(cfg), "--out", "o"])
    cfg.write_text("type: act\n")
    with pytest.raises(SystemExit, match="--type vla but .* says type 'act'"):
        main(["train", "--config", str(cfg), "--type", "vla"])
    cfg.write_text("type: nerf\n")
    with pytest.raises(SystemExit, match="no trainer for type 'nerf'"):
        main(["train", "--config", str(cfg)])
    assert not trainers


def test_act_preset_choices_match_the_presets():
    from latentstack.cli.act import ACT_PRESET_NAMES
    from latentstack.policies.lerobot_act.configuration_act import ACT_PRESETS

    assert set(ACT_PRESET_NAMES) == set(ACT_PRESETS)


@pytest.mark.slow
def test_train_config_of_type_lion_trains_end_to_end(tmp_path):
    from latentstack.perception.lion.modeling_lion import load_detector

    cfg = tmp_path / "lion.yaml"
    cfg.write_text(f"type: lion\ntrain:\n  preset: lion_tiny_identity\n  data: {tmp_path / 'data'}\n"
                   "  train-scans: 2\n  batch_size: 1\n")
    assert main(["train", "--config", str(cfg), "--steps", "2", "--out", str(tmp_path / "ck"), "--device", "cpu"]) == 0
    log = json.loads((tmp_path / "ck" / "train_log.json").read_text())
    summary = log["summary"]  # flag (--steps) over config (train-scans, batch_size, preset) over defaults (lr)
    assert (summary["preset"], summary["num_train_scans"], summary["train"]["iterations"]) == ("lion_tiny_identity", 2, 2)
    assert (summary["train"]["batch_size"], summary["train"]["lr"]) == (1, 3e-3)
    model = load_detector(tmp_path / "ck", device="cpu")
    assert {p.device.type for p in model.parameters()} == {"cpu"}


@pytest.mark.gpu
@pytest.mark.slow
def test_eval_on_cuda_runs_and_records_the_device(tmp_path):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    res = run_evaluation("metaworld_mt6", {"vla": SHIPPED}, 1, "test", tmp_path, progress=False, device="cuda")
    assert res["meta"]["device"] == "cuda"
    assert json.loads((tmp_path / "eval.json").read_text())["conditions"]["vla"]


@pytest.mark.parametrize("module, fn", [("latentstack.perception.lion.train", "train_detector"),
                                        ("latentstack.perception.lion.report", "run_evaluation"),
                                        ("latentstack.perception.stereo.train", "pretrain_mono"),
                                        ("latentstack.perception.stereo.train", "train_stereo")])
def test_lion_and_stereo_commands_hand_the_device_on(module, fn):
    """`lstack lion train|eval` and `lstack stereo pretrain|train` call these through ``call_with_device``: the
    device reaches them (no refusal); a stand-in with the real signature records what it is given."""
    import functools
    import importlib

    from latentstack.core.device import call_with_device

    seen: dict = {}
    real = getattr(importlib.import_module(module), fn)

    @functools.wraps(real)  # inspect.signature follows __wrapped__: the real function's parameters
    def record(*args, **kw):
        seen.update(kw)

    call_with_device(record, "cuda:1", "x")
    assert seen == {"device": "cuda:1"}


def test_act_training_takes_the_device_and_korr_still_refuses_it():
    """`lstack act train` builds ACTTrainConfig with ``device_kwargs``: the device is passed on. KORR's PPO runs
    in a CPU torch env: its trainer still refuses any device but cpu (one clear line)."""
    from latentstack.core.device import DeviceError, device_kwargs
    from latentstack.koopman.configuration_korr import PPOConfig
    from latentstack.policies.lerobot_act.train import ACTTrainConfig

    assert device_kwargs(ACTTrainConfig, "cuda:0", "ACT training") == {"device": "cuda:0"}
    assert device_kwargs(PPOConfig, "cpu", "KORR training") == {}
    with pytest.raises(DeviceError, match="does not take a device yet"):
        device_kwargs(PPOConfig, "cuda", "KORR training")
