"""LION on a device: detection forward after ``.to(device)`` matches the CPU (``device`` fixture: cpu, and cuda
marked ``gpu``); the window index maps are built on the device (vectorised, same maps as the per-sample loop);
a CPU check catches tensors created without an explicit device."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from latentstack.perception.lion import LionDetector, get_preset
from latentstack.perception.lion.processor_lion import LionProcessor, batch_points
from latentstack.perception.lion.window import flat2win_win2flat

TOL = {"rtol": 1e-3, "atol": 1e-3}  # fp32 (TF32 off in the fixture)


def _cloud(n: int, seed: int, pr: tuple[float, ...]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lo, hi = np.array(pr[:3]), np.array(pr[3:])
    return np.c_[rng.uniform(lo, hi, (n, 3)), rng.uniform(0, 1, n)].astype(np.float32)


@pytest.fixture(scope="module", params=["lion_tiny", "lion_tiny_retnet"])
def detector(request: pytest.FixtureRequest) -> LionDetector:
    torch.manual_seed(0)
    return LionDetector(get_preset(request.param, score_threshold=0.0, max_detections=10)).eval()


def _clouds(cfg) -> list[np.ndarray]:
    return [_cloud(400, 1, cfg.point_range), _cloud(250, 2, cfg.point_range)]


def test_detection_forward_on_device_matches_cpu(detector: LionDetector, device: str) -> None:
    dev = copy.deepcopy(detector).to(device)
    assert dev.device.type == device and dev.processor.device.type == device
    clouds = _clouds(detector.config)
    points, bsz = dev.processor(clouds)
    assert points.device.type == device and bsz == 2
    with torch.no_grad():
        out = dev(points, bsz)
        ref = detector(batch_points(clouds), 2)
    assert set(out) == set(ref)
    for k in ref:
        assert out[k].device.type == device
        torch.testing.assert_close(out[k].cpu(), ref[k], **TOL, msg=lambda m, k=k: f"head {k}: {m}")
    dets = dev.detect(clouds)  # processor in, host-side decode out
    assert len(dets) == 2 and all(isinstance(d["boxes"], np.ndarray) and d["boxes"].shape[1:] == (7,) for d in dets)


def _flat2win_loop(counts: list[int], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-sample loop the vectorised maps replaced (kept here as the reference)."""
    f2w, w2f, start, pstart = [], [], 0, 0
    for n in counts:
        if n == 0:
            continue
        padded = -(-n // k) * k
        idx = torch.arange(padded, dtype=torch.int64)
        r = n % k
        if r and padded > k:
            idx[padded - k + r:] = idx[padded - 2 * k + r: padded - k]
        elif r:
            idx = idx % n
        f2w.append(idx + start)
        w2f.append(torch.arange(n, dtype=torch.int64) + pstart)
        start += n
        pstart += padded
    if not f2w:
        return torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)
    return torch.cat(f2w), torch.cat(w2f)


def test_window_maps_on_device_equal_the_loop(device: str) -> None:
    rng = np.random.default_rng(0)
    cases = [[0], [5], [0, 0, 3], [4, 4], [1, 7, 0, 16, 9]] + [list(rng.integers(0, 40, 6)) for _ in range(20)]
    for counts in cases:
        for k in (1, 3, 4, 8, 16):
            f2w, w2f = flat2win_win2flat(torch.tensor(counts, device=device), k)
            assert f2w.device.type == device and w2f.device.type == device
            ref_f, ref_w = _flat2win_loop([int(c) for c in counts], k)
            assert torch.equal(f2w.cpu(), ref_f) and torch.equal(w2f.cpu(), ref_w), (counts, k)
    with pytest.raises(ValueError):
        flat2win_win2flat(torch.tensor([3]), 0)


def test_lion_creates_no_tensor_off_its_device(detector: LionDetector) -> None:
    """``meta`` as the default device while the CPU model runs: a tensor made without ``device=`` (such as the
    old voxel-grid bound ``torch.tensor(grid)``) lands on meta and breaks the forward."""
    clouds = _clouds(detector.config)
    with torch.no_grad():
        ref = detector(batch_points(clouds), 2)
        with torch.device("meta"):
            out = detector(*LionProcessor(detector.config)(clouds))
    for k in ref:
        assert out[k].device.type == "cpu" and torch.equal(out[k], ref[k])
