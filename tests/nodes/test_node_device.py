"""The ``device`` parameter of every model-holding node core (policy, lidar_detection, stereo_depth): typed and
validated (graph files check it without torch), default ``cpu``, set from graph YAML / ``--set`` / ``lstack launch
--device``, and the loaded model lands there. The CUDA twins are marked ``gpu``."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from latentstack.nodes import ParameterError, node_class, params_from_mapping
from latentstack.ros._rclpy_node import parameter_declarations
from latentstack.ros.graph import GraphSpec, load_graph
from latentstack.transport import InProcTransport

MODEL_KINDS = ("policy", "lidar_detection", "stereo_depth")
HAS_CUDA = torch.cuda.is_available()


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_device_parameter_typed_validated_default_cpu(kind):
    params_cls = node_class(kind).Params
    assert params_cls().device == "cpu"
    assert params_from_mapping(params_cls, {"device": "cuda:1"}).device == "cuda:1"  # syntax only: no GPU needed
    for bad in ("gpu", "cuda:", "CUDA", 0):
        with pytest.raises(ParameterError, match="device"):
            params_from_mapping(params_cls, {"device": bad})
    decl = {n: (d, t) for n, d, t in parameter_declarations(params_cls)}
    assert decl["device"] == ("cpu", "STRING")  # what the rclpy wrapper declares


@pytest.mark.parametrize("kind", ["sim_bridge", "recorder"])
def test_nodes_without_a_model_have_no_device(kind):
    # the sim bridge steps MuJoCo on the CPU and the recorder writes bytes: there is no model to place
    assert "device" not in {n for n, _, _ in parameter_declarations(node_class(kind).Params)}


def test_graph_file_sets_and_validates_device():
    spec = load_graph("ros/graphs/metaworld.yaml")
    assert spec.node("policy_node").typed_params().device == "cpu"
    spec.set_param("policy_node", "device", "cuda:0")
    assert spec.validate().node("policy_node").typed_params().device == "cuda:0"
    spec.set_param("policy_node", "device", "tpu")
    with pytest.raises(ValueError, match="policy_node.*device"):
        spec.validate()


def test_launch_device_flag_reaches_every_model_node():
    from latentstack import launch_cli
    from latentstack.cli import build_parser

    spec = GraphSpec.from_dict({"nodes": {
        "sim": {"kind": "sim_bridge"}, "pol": {"kind": "policy"}, "det": {"kind": "lidar_detection"},
        "depth": {"kind": "stereo_depth"}, "rec": {"kind": "recorder", "enabled": False}}})
    args = build_parser().parse_args(["launch", "g.yaml", "--device", "cuda:0"])
    launch_cli._apply_overrides(spec, args)
    assert {n.name: n.params.get("device") for n in spec.nodes} == {
        "sim": None, "pol": "cuda:0", "det": "cuda:0", "depth": "cuda:0", "rec": None}


def _tiny_lion(path):
    from latentstack.perception.lion import LionDetector, get_preset
    from latentstack.perception.lion.modeling_lion import save_detector

    torch.manual_seed(0)
    save_detector(LionDetector(get_preset("lion_tiny_identity", score_threshold=0.0, max_detections=7)), path)
    return str(path)


def _tiny_stereo(path):
    from latentstack.perception.stereo.configuration_stereo import StereoConfig
    from latentstack.perception.stereo.model import SA2Tiny, save_stereo_model

    torch.manual_seed(0)
    save_stereo_model(SA2Tiny(StereoConfig(hidden=16, feat_dim=16, fmap_dim=16, enc_channels=(8, 16, 16, 16))), path)
    return str(path)


def _node(kind, device, tmp_path):
    cls = node_class(kind)
    if kind == "policy":
        params = cls.Params(policy="vla_tiny", device=device)
    elif kind == "lidar_detection":
        params = cls.Params(model=_tiny_lion(tmp_path / "lion"), device=device)
    else:
        params = cls.Params(model=_tiny_stereo(tmp_path / "stereo"), device=device, iters=2)
    return cls(InProcTransport(), params)


def _model(node):
    return node.policy if hasattr(node, "policy") else node.model


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_model_is_loaded_on_the_device_parameter(kind, tmp_path):
    node = _node(kind, "cpu", tmp_path)
    try:
        assert {p.device.type for p in _model(node).parameters()} == {"cpu"}
    finally:
        node.close()


@pytest.mark.skipif(HAS_CUDA, reason="checks the message on a machine without CUDA")
@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_cuda_without_cuda_is_a_clear_parameter_error(kind, tmp_path):
    t = InProcTransport()
    cls = node_class(kind)
    with pytest.raises(ParameterError, match="device 'cuda' requested but .*use device 'cpu'"):
        cls(t, cls.Params(device="cuda"))  # before any model file is read: the default model paths never load


def _run_once(kind, node):
    """One input through the node's real callback; returns its output as numpy."""
    rng = np.random.default_rng(0)
    if kind == "policy":
        node.policy.reset(seed=0)
        obs = {"image": rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), "state": np.zeros(4, np.float32),
               "instruction": "close the drawer", "task": "drawer-close-v3"}
        return np.asarray(node.policy.select_action(obs), np.float32)
    if kind == "lidar_detection":
        from latentstack.sim.lidar_scenes import generate_scan

        return node.model.detect([generate_scan(200_001).points])[0]["scores"]
    left = rng.integers(0, 255, (30, 60, 3), dtype=np.uint8)
    right = np.roll(left, -3, axis=1)
    return node.infer(left, right, 12.0)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_cuda_node_runs_on_cuda_like_cpu(kind, tmp_path):
    gpu = _node(kind, "cuda", tmp_path / "gpu")
    cpu = _node(kind, "cpu", tmp_path / "cpu")
    try:
        assert {p.device.type for p in _model(gpu).parameters()} == {"cuda"}
        with torch.inference_mode():
            a, b = _run_once(kind, gpu), _run_once(kind, cpu)
        assert a.shape == b.shape and np.isfinite(a).all()
        if kind == "stereo_depth":  # deterministic forward: CUDA vs CPU float rounding only
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)
    finally:
        gpu.close()
        cpu.close()
