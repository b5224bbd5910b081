"""`lstack launch` end to end (in-process, MetaWorld, tiny untrained VLA) and its argument handling."""
from __future__ import annotations

import argparse
import json
import os

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")  # before anything imports mujoco

from latentstack.launch_cli import add_launch_parser


def parse(argv):
    ap = argparse.ArgumentParser(prog="lstack")
    sub = ap.add_subparsers(dest="command", required=True)
    add_launch_parser(sub)
    return ap.parse_args(argv)


def test_parser_defaults():
    args = parse(["launch", "ros/graphs/metaworld.yaml"])
    assert args.func.__name__ == "cmd_launch" and not args.multiprocess and args.sets == []


def test_launch_inprocess_matches_evaluate(tmp_path, capsys):
    pytest.importorskip("metaworld")
    out = tmp_path / "run.json"
    bag = tmp_path / "bag"
    args = parse(["launch", "ros/graphs/metaworld.yaml", "--tasks", "drawer-close-v3", "--episodes-per-task", "2",
                  "--policy", "vla_tiny", "--set", "sim_bridge.max_episode_steps=12", "--compare-eval",
                  "--record", str(bag), "--out", str(out)])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "IDENTICAL" in text and "drawer-close-v3" in text
    data = json.loads(out.read_text())
    assert [r["seed"] for r in data["results"]] == [20000, 20001] and data["finished"]
    assert (bag / "metadata.yaml").is_file()


def test_launch_rejects_bad_overrides(capsys):
    args = parse(["launch", "ros/graphs/metaworld.yaml", "--set", "policy_node.trigger=sometimes"])
    assert args.func(args) == 2
    assert "trigger" in capsys.readouterr().err


def test_standalone_main_reports_a_missing_policy(capsys):
    from latentstack.launch_cli import main

    assert main(["ros/graphs/metaworld.yaml", "--policy", "policies/no_such_dir", "--episodes", "1"]) == 2
    assert "unknown policy 'policies/no_such_dir'" in capsys.readouterr().err


def test_enable_switches_disabled_nodes_on_before_frames_and_device(capsys):
    """``--enable a,b --enable c`` turns on disabled nodes by name, before ``--frames`` / ``--device`` so those
    reach them; an unknown name is a clear error (exit 2) that lists the graph's nodes."""
    from latentstack.launch_cli import _apply_overrides
    from latentstack.ros.graph import load_graph

    args = parse(["launch", "ros/graphs/perception.yaml", "--enable", "unilion_scene,unilion_detection",
                  "--enable", "unilion_markers", "--frames", "3", "--device", "cuda:1"])
    assert args.enable == ["unilion_scene,unilion_detection", "unilion_markers"]
    spec = load_graph(args.graph)
    _apply_overrides(spec, args)
    enabled = {n.name for n in spec.enabled_nodes}
    assert {"unilion_scene", "unilion_detection", "unilion_markers"} <= enabled and "recorder" not in enabled
    assert spec.node("unilion_scene").params["frames"] == 3 == spec.node("lidar_scene").params["frames"]
    assert spec.node("unilion_detection").params["device"] == "cuda:1"

    default = load_graph(args.graph)
    _apply_overrides(default, parse(["launch", "ros/graphs/perception.yaml", "--frames", "3"]))
    assert not default.node("unilion_scene").enabled and default.node("unilion_scene").params["frames"] == 8

    bad = parse(["launch", "ros/graphs/perception.yaml", "--enable", "unilion_scene,unilion_detektion"])
    assert bad.func(bad) == 2
    err = capsys.readouterr().err
    assert "--enable" in err and "'unilion_detektion'" in err and "unilion_detection" in err
