"""ROS 2 package files that cannot run here: launch files compile, configs mirror the node parameters,
wrappers fail clearly without rclpy, package.xml is a valid format-3 manifest."""
from __future__ import annotations

import ast
import importlib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from latentstack.nodes import node_class
from latentstack.nodes.base import params_from_mapping
from latentstack.ros._rclpy_node import RCLPY_AVAILABLE, parameter_declarations, params_from_ros

ROOT = Path(__file__).resolve().parents[2]
WRAPPERS = {"policy_node": "policy", "sim_bridge_node": "sim_bridge", "recorder_node": "recorder",
            "lidar_detection_node": "lidar_detection", "stereo_depth_node": "stereo_depth",
            "lidar_scene_node": "lidar_scene", "stereo_scene_node": "stereo_scene",
            "detection_markers_node": "detection_markers", "lifecycle_policy_node": "policy",
            "unilion_detection_node": "unilion_detection", "unilion_scene_node": "unilion_scene"}


@pytest.mark.parametrize("path", sorted((ROOT / "ros" / "launch").glob("*.launch.py")), ids=lambda p: p.name)
def test_launch_files_compile_and_use_our_executables(path):
    src = path.read_text()
    tree = ast.parse(src, filename=str(path))
    compile(tree, str(path), "exec")
    funcs = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in funcs
    executables = {kw.value.value for n in ast.walk(tree) if isinstance(n, ast.Call)
                   for kw in n.keywords if kw.arg == "executable"}
    assert executables and executables <= set(WRAPPERS)
    packages = {kw.value.value for n in ast.walk(tree) if isinstance(n, ast.Call)
                for kw in n.keywords if kw.arg == "package"}
    assert packages == {"latentstack"}


def test_every_node_kind_has_a_wrapper_an_executable_and_a_parameter_file():
    from latentstack.nodes import NODE_KINDS

    assert set(WRAPPERS.values()) == set(NODE_KINDS)
    for exe, kind in WRAPPERS.items():
        assert (ROOT / "ros" / "bin" / exe).is_file(), exe
        config = "policy_node" if kind == "policy" else kind
        assert (ROOT / "ros" / "config" / f"{config}.yaml").is_file(), config


@pytest.mark.parametrize("node", ["policy_node", "sim_bridge", "recorder", "lidar_detection", "stereo_depth",
                                  "lidar_scene", "stereo_scene", "detection_markers", "unilion_detection",
                                  "unilion_scene"])
def test_parameter_files_mirror_the_dataclasses(node):
    kind = {"policy_node": "policy"}.get(node, node)
    params_cls = node_class(kind).Params
    data = yaml.safe_load((ROOT / "ros" / "config" / f"{node}.yaml").read_text())
    values = data["/**"]["ros__parameters"]  # wildcard: applies under any namespace
    declared = {name for name, _, _ in parameter_declarations(params_cls)}
    assert set(values) <= declared and declared - set(values) <= {"tasks", "seeds"}
    assert params_from_mapping(params_cls, values) == params_cls()


def test_parameter_declarations_types():
    decl = {n: (d, t) for n, d, t in parameter_declarations(node_class("policy").Params)}
    assert decl["control_rate_hz"] == (80.0, "DOUBLE") and decl["state_joints"][1] == "STRING_ARRAY"
    assert decl["action_low"] == ([-1.0], "DOUBLE_ARRAY") and decl["wait_for_episode"] == (False, "BOOL")
    sim = {n: (d, t) for n, d, t in parameter_declarations(node_class("sim_bridge").Params)}
    assert sim["tasks"] == ([], "STRING_ARRAY") and sim["seeds"] == ([], "INTEGER_ARRAY")
    p = params_from_ros(node_class("sim_bridge").Params, {"tasks": None, "episodes_per_task": 3})
    assert p.tasks == () and p.episodes_per_task == 3


@pytest.mark.parametrize("module", sorted(WRAPPERS))
def test_wrappers_without_rclpy_exit_with_a_clear_message(module, capsys):
    mod = importlib.import_module(f"latentstack.ros.{module}")
    if RCLPY_AVAILABLE:
        pytest.skip("rclpy installed: the wrapper would really start a node")
    assert mod.main([]) == 2
    assert "rclpy is not importable" in capsys.readouterr().err


def test_package_xml_is_format_3_ament_python():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == "latentstack"
    assert root.find("export/build_type").text == "ament_python"
    deps = {e.text for e in root if e.tag.endswith("depend")}
    assert {"rclpy", "std_msgs", "sensor_msgs"} <= deps


def test_perception_launch_file_starts_the_perception_graphs_nodes():
    """perception.launch.py and ros/graphs/perception.yaml describe one graph: the same node names, kinds and
    namespaces; the nodes the graph file disables (the UniLION rig, detector and markers) sit under the launch
    file's ``unilion`` condition, the simulated sensors under ``sensors``."""
    from latentstack.ros.graph import load_graph

    tree = ast.parse((ROOT / "ros" / "launch" / "perception.launch.py").read_text())

    def nodes_in(root: ast.AST) -> dict[str, tuple[str, str]]:
        out = {}
        for call in ast.walk(root):
            kw = {k.arg: k.value for k in getattr(call, "keywords", [])} if isinstance(call, ast.Call) else {}
            if "executable" in kw and "name" in kw:
                ns = kw["namespace"].value if "namespace" in kw else ""
                out[kw["name"].value] = (WRAPPERS[kw["executable"].value], "/" + ns.strip("/"))
        return out

    launched = nodes_in(tree)
    spec = load_graph("ros/graphs/perception.yaml")
    assert launched == {n.name: (n.kind, n.namespace) for n in spec.nodes}
    groups = [c for c in ast.walk(tree) if isinstance(c, ast.Call) and getattr(c.func, "id", "") == "GroupAction"]
    assert len(groups) == 1
    cond = next(k.value for k in groups[0].keywords if k.arg == "condition")
    assert ast.unparse(cond) == "IfCondition(LaunchConfiguration('unilion'))"
    assert set(nodes_in(groups[0])) == {n.name for n in spec.nodes if not n.enabled and n.kind != "recorder"}
    declared = {c.args[0].value for c in ast.walk(tree) if isinstance(c, ast.Call)
                and getattr(c.func, "id", "") == "DeclareLaunchArgument"}
    assert {"unilion", "unilion_model", "unilion_mode", "sensors"} <= declared
    # the rig (like the other simulated sensors) also needs sensors:=true: real drivers replace it
    for call in ast.walk(tree):
        kw = {k.arg: k.value for k in getattr(call, "keywords", [])} if isinstance(call, ast.Call) else {}
        if "executable" in kw:
            is_sensor = kw["executable"].value.endswith("_scene_node")
            assert (ast.unparse(kw["condition"]) == "sensors" if "condition" in kw else False) == is_sensor, \
                kw["name"].value
