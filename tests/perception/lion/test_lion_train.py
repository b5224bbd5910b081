"""LION training and evaluation on a device (``device`` fixture: cpu, and cuda marked ``gpu``): on the CPU a short
run with ``device="cpu"`` equals the default run bit for bit and so does the evaluation; on CUDA the run is checked
to train (finite losses, weights moved) and the evaluation to run there. Tiny synthetic scans (no MuJoCo)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from latentstack.perception.lion import LionDetector, get_preset
from latentstack.perception.lion.report import run_evaluation
from latentstack.perception.lion.train import TrainConfig, train_detector
from latentstack.sim.lidar_scenes import LidarScan, LidarSceneConfig, save_split

PRESET = "lion_tiny_identity"
TCFG = TrainConfig(iterations=3, batch_size=2, seed=0)


def _scan(seed: int) -> LidarScan:
    """Background points over the BEV range plus one Car box filled with points (a heatmap peak to learn)."""
    rng = np.random.default_rng(seed)
    box = np.array([[8.0 + 4 * seed, -3.0 + seed, -0.95, 3.9, 1.6, 1.56, 0.3 * seed]], np.float32)
    bg = np.c_[rng.uniform([0, -20, -3], [40, 20, 1], (300, 3)), rng.uniform(0, 1, 300)]
    car = np.c_[box[0, :3] + rng.uniform(-0.7, 0.7, (80, 3)) * [1.0, 0.5, 0.5], rng.uniform(0, 1, 80)]
    pts = np.concatenate([bg, car]).astype(np.float32)
    inst = np.r_[np.full(300, -1), np.zeros(80)].astype(np.int32)
    return LidarScan(pts, inst, box, np.zeros(1, np.int32), np.array([80], np.int32), seed)


@pytest.fixture(scope="module")
def scans() -> list[LidarScan]:
    return [_scan(i) for i in range(4)]


def _weights(model: LionDetector) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def test_train_on_device(scans, tmp_path, device):
    model, summary = train_detector(get_preset(PRESET), TCFG, scans, tmp_path / "dev", progress=False, device=device)
    assert model.device.type == device and summary["device"] == device
    log = json.loads((tmp_path / "dev" / "train_log.json").read_text())["log"]
    assert len(log) == TCFG.iterations and all(np.isfinite(r["loss"]) for r in log)
    got = _weights(model)
    torch.manual_seed(TCFG.seed)  # the trainer's seed, drawn just before it builds the detector
    init = LionDetector(get_preset(PRESET)).state_dict()
    floats = [k for k, v in init.items() if v.is_floating_point()]
    moved = [k for k in floats if not torch.equal(got[k], init[k])]
    assert len(moved) > len(floats) // 2  # it trained
    if device == "cpu":
        ref, ref_summary = train_detector(get_preset(PRESET), TCFG, scans, tmp_path / "default", progress=False)
        assert got.keys() == _weights(ref).keys() and all(torch.equal(got[k], v) for k, v in _weights(ref).items())
        assert ref_summary["final_loss_avg50"] == summary["final_loss_avg50"]


def test_eval_on_device(scans, tmp_path, device):
    data = tmp_path / "data"
    data.mkdir()
    save_split(data / "test.npz", scans, LidarSceneConfig())  # load_or_generate reads it (no MuJoCo)
    ckpt = tmp_path / "ckpt"
    # few detections per scan (decoding fields only; training is unaffected): the numpy rotated NMS stays quick
    train_detector(get_preset(PRESET, max_detections=5), TCFG, scans, ckpt, progress=False)
    kw = {"clustering": False, "data_dir": data, "split": "test", "num_scans": 2, "out_dir": None}
    got = run_evaluation({"m": str(ckpt)}, device=device, **kw)
    assert got["methods"]["m"]["device"].startswith(device) and np.isfinite(got["ap"]["m"])
    if device == "cpu":
        ref = run_evaluation({"m": str(ckpt)}, **kw)
        assert ref["methods"]["m"]["device"] == "cpu"
        same = ("tables", "ap", "ap_ci95_bootstrap")  # NaN-safe comparison (empty range bins have AP NaN)
        assert json.dumps([ref[k] for k in same]) == json.dumps([got[k] for k in same])
