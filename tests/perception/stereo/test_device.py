"""Stereo (SA2-tiny, ConvGRU twin, CoDyRA-adapted) on a device: forward after ``.to(device)`` matches the CPU
(``device`` fixture: cpu, and cuda marked ``gpu``); the processor pads/crops and places inputs on the model's
device; a CPU check catches tensors created without an explicit device."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from latentstack.perception.stereo.configuration_stereo import PRESETS
from latentstack.perception.stereo.model import SA2Tiny
from latentstack.perception.stereo.processor_stereo import StereoProcessor, model_device

TOL = {"rtol": 1e-3, "atol": 1e-3}  # fp32 (TF32 off in the fixture); 2 refinement iterations keep drift small


@pytest.fixture(scope="module", params=["sa2_tiny", "convgru_tiny", "sa2_adapted"])
def model(request: pytest.FixtureRequest) -> SA2Tiny:
    torch.manual_seed(0)
    m = SA2Tiny(PRESETS["sa2_tiny" if request.param == "sa2_adapted" else request.param])
    if request.param == "sa2_adapted":
        m.add_adapters()
        with torch.no_grad():
            for mod in m.codyra():
                mod.lora_B.normal_(0, 0.01)  # a non-identity adapter
    return m.eval()


def _images(h: int = 30, w: int = 60) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (h, w, 3), dtype=np.uint8), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("zero_init", [False, True])
def test_stereo_forward_on_device_matches_cpu(model: SA2Tiny, device: str, zero_init: bool) -> None:
    dev = copy.deepcopy(model).to(device)
    assert dev.device.type == device and model_device(dev).type == device
    left, right = _images()  # 30×60: padded to 32×64 by the processor
    p_dev, p_cpu = StereoProcessor(device=dev.device), StereoProcessor()
    x_dev, x_cpu = p_dev(left, right, 12.0, zero_init=zero_init), p_cpu(left, right, 12.0, zero_init=zero_init)
    assert all(t.device.type == device for t in x_dev.values())
    with torch.inference_mode():
        out, ref = dev(**x_dev, iters=2), model(**x_cpu, iters=2)
    for key in ("disp_init", "mono_depth"):
        assert out[key].device.type == device
        torch.testing.assert_close(out[key].cpu(), ref[key], **TOL)
    for a, b in zip(out["disp_preds"], ref["disp_preds"], strict=True):
        torch.testing.assert_close(a.cpu(), b, **TOL)
    disp = p_dev.postprocess(out, left.shape[:2])
    assert isinstance(disp, np.ndarray) and disp.shape == left.shape[:2] and disp.dtype == np.float32
    np.testing.assert_allclose(disp, p_cpu.postprocess(ref, left.shape[:2]), **TOL)


def test_stereo_creates_no_tensor_off_its_device(model: SA2Tiny) -> None:
    """``meta`` as the default device while the CPU model runs: a tensor made without ``device=`` in the forward
    (coordinate grids, the zero prior, ...) lands on meta and breaks it."""
    left, right = _images()
    proc = StereoProcessor()
    with torch.inference_mode():
        ref = model(**proc(left, right, 12.0), iters=2)
        with torch.device("meta"):
            out = model(**proc(left, right, 12.0), iters=2)
    assert out["disp_preds"][-1].device.type == "cpu"
    assert torch.equal(out["disp_preds"][-1], ref["disp_preds"][-1])
