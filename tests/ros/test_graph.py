"""Graph files: schema, parameter validation at load time, overrides."""
from __future__ import annotations

import pytest

from latentstack.ros.graph import GraphSpec, load_graph, parse_set_option


def test_metaworld_graph_loads_and_validates():
    spec = load_graph("ros/graphs/metaworld.yaml")
    assert spec.name == "metaworld" and spec.transport == "inproc" and spec.distro == "jazzy"
    assert [n.name for n in spec.enabled_nodes] == ["sim_bridge", "policy_node"]
    assert spec.processes == ["sim", "policy"]
    sim = spec.node("sim_bridge").typed_params()
    assert sim.lockstep and sim.suite == "metaworld_mt6"
    pol = spec.node("policy_node").typed_params()
    assert pol.trigger == "observation" and pol.wait_for_episode and pol.action_low == (-1.0,)
    rec = spec.node("recorder")
    assert rec.kind == "recorder" and not rec.enabled
    again = GraphSpec.from_dict(spec.to_dict())
    assert again.to_dict() == spec.to_dict()


def test_bad_graphs_fail_before_anything_runs():
    base = load_graph("ros/graphs/metaworld.yaml").to_dict()
    bad = GraphSpec.from_dict(base)
    bad.set_param("policy_node", "trigger", "whenever")
    with pytest.raises(ValueError, match="policy_node.*trigger"):
        bad.validate()
    d = dict(base, nodes={"x": {"kind": "teleporter"}})
    with pytest.raises(ValueError, match="unknown node kind"):
        GraphSpec.from_dict(d)
    with pytest.raises(ValueError, match="unknown graph keys"):
        GraphSpec.from_dict(dict(base, colour="red"))
    with pytest.raises(ValueError, match="unknown parameter"):
        GraphSpec.from_dict(dict(base, nodes={"s": {"kind": "sim_bridge", "params": {"epsiodes": 2}}}))
    with pytest.raises(ValueError, match="transport"):
        GraphSpec.from_dict(dict(base, transport="carrier-pigeon"))
    with pytest.raises(FileNotFoundError):
        load_graph("ros/graphs/does_not_exist.yaml")


def test_set_option_parsing():
    assert parse_set_option("policy_node.control_rate_hz=20") == ("policy_node", "control_rate_hz", 20)
    assert parse_set_option("sim_bridge.tasks=[a, b]") == ("sim_bridge", "tasks", ["a", "b"])
    assert parse_set_option("policy_node.steering=") == ("policy_node", "steering", "")
    with pytest.raises(ValueError):
        parse_set_option("no_dot=1")


def test_graph_wires_the_publisher_allow_lists():
    """The sim takes actions only from the graph's policy nodes and the policy nodes take episode control only
    from the graph's sims, whatever they are called; an explicit setting wins."""
    spec = load_graph("ros/graphs/metaworld.yaml")
    assert spec.node("sim_bridge").typed_params().action_publishers == ("/policy_node",)
    assert spec.node("policy_node").typed_params().episode_publishers == ("/sim_bridge",)
    renamed = GraphSpec.from_dict({"name": "g", "nodes": {
        "sim": {"kind": "sim_bridge", "namespace": "/robot1"},
        "pi": {"kind": "policy", "namespace": "/robot1", "params": {"policy": "vla"}},
        "pi2": {"kind": "policy", "params": {"policy": "vla", "episode_publishers": ["/elsewhere/sim"]}}}})
    assert renamed.node("sim").typed_params().action_publishers == ("/robot1/pi", "/pi2")
    assert renamed.node("pi").typed_params().episode_publishers == ("/robot1/sim",)
    assert renamed.node("pi2").typed_params().episode_publishers == ("/elsewhere/sim",)


def test_perception_graph_runs_its_old_nodes_by_default_and_ships_unilion_disabled():
    """The UniLION rig/detector/markers are part of perception.yaml but off, so its default run (tests, measured
    latencies) is the LiDAR + stereo graph it always was; switched on, their parameters validate."""
    spec = load_graph("ros/graphs/perception.yaml")
    assert [n.name for n in spec.enabled_nodes] == ["lidar_scene", "lidar_detection", "detection_markers",
                                                    "stereo_scene", "stereo_depth"]
    assert spec.processes == ["sensors", "lidar", "stereo"]
    off = {n.name: (n.kind, n.namespace, n.process) for n in spec.nodes if not n.enabled}
    assert off == {"unilion_scene": ("unilion_scene", "/unilion", "sensors"),
                   "unilion_detection": ("unilion_detection", "/unilion", "unilion"),
                   "unilion_markers": ("detection_markers", "/unilion", "unilion"),
                   "recorder": ("recorder", "/", "sensors")}
    for name in ("unilion_scene", "unilion_detection", "unilion_markers"):
        spec.node(name).enabled = True
    spec.validate()  # disabled nodes are not validated at load time: these are
    det = spec.node("unilion_detection").typed_params()
    assert det.model == "policies/unilion_tiny" and det.mode == "LCT" and det.device == "cpu"
    assert spec.node("unilion_scene").typed_params().seed == 1_200_000
    assert spec.processes == ["sensors", "lidar", "stereo", "unilion"]  # the sensors stay in one group
