"""UniLION on a device: an LCT forward with a memory after ``.to(device)`` matches the CPU (``device`` fixture:
cpu, and cuda marked ``gpu``); with ``meta`` as the default device, a tensor created without ``device=`` would
break the CPU forward."""
from __future__ import annotations

import copy

import pytest
import torch

from latentstack.perception.unilion import UniLION, get_preset
from latentstack.sim import unilion_scenes as us

TOL = {"rtol": 1e-3, "atol": 1e-3}  # fp32 (TF32 off in the fixture)


@pytest.fixture(scope="module")
def model() -> UniLION:
    torch.manual_seed(0)
    return UniLION(get_preset("unilion_test", score_threshold=0.0, max_detections=10)).eval()


def _run(m: UniLION, frames: list[us.UniFrame], scfg: us.UniSceneConfig) -> dict[str, torch.Tensor]:
    intr, c2e = us.camera_calibration(scfg)
    b = [m.processor([f.points], images=[f.images], intrinsics=[intr], cam2ego=[c2e], ego_pose=[f.ego_pose],
                     time_s=[f.time_s], scene_id=[f.seq_seed]) for f in frames]
    with torch.no_grad():
        _, mem = m(mode="LC", **b[0])
        out, _ = m(mode="LCT", memory=mem, **b[1])
    return out


def test_forward_on_device_matches_cpu(model: UniLION, small_frames, device: str) -> None:
    frames, scfg = small_frames
    dev = copy.deepcopy(model).to(device)
    assert dev.processor.device.type == device
    ref, out = _run(model, frames, scfg), _run(dev, frames, scfg)
    for k in ("hm", "center", "seg", "occ", "depth_logits", "depth_target", "num_tokens"):
        assert out[k].device.type == device
        torch.testing.assert_close(out[k].cpu(), ref[k], **TOL, msg=lambda m, k=k: f"{k}: {m}")


def test_unilion_creates_no_tensor_off_its_device(model: UniLION, small_frames) -> None:
    frames, scfg = small_frames
    intr, c2e = us.camera_calibration(scfg)
    b = [model.processor([f.points], images=[f.images], intrinsics=[intr], cam2ego=[c2e], ego_pose=[f.ego_pose],
                         time_s=[f.time_s], scene_id=[f.seq_seed]) for f in frames]
    with torch.no_grad():
        _, mem_ref = model(mode="LC", **b[0])
        ref, _ = model(mode="LCT", memory=mem_ref, **b[1])
        with torch.device("meta"):
            _, mem = model(mode="LC", **b[0])
            out, _ = model(mode="LCT", memory=mem, **b[1])
    for k in ("hm", "seg", "occ", "depth_logits", "num_tokens"):
        assert out[k].device.type == "cpu" and torch.equal(out[k], ref[k]), k
