"""UniLION model: one set of weights in L / LT / LC / LCT, the memory between frames, a short overfit, the
artifact round trip through the one loader, config checks."""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from latentstack.core.artifacts import artifact_type, resolve_target
from latentstack.core.config import config_from_dict
from latentstack.perception.unilion import MODES, UniLION, UniLIONConfig, get_preset, save_unilion
from latentstack.perception.unilion.modeling_unilion import build_unilion_targets, unilion_loss
from latentstack.sim import unilion_scenes as us


def _inputs(model: UniLION, frames: list[us.UniFrame], scfg: us.UniSceneConfig) -> list[dict]:
    intr, c2e = us.camera_calibration(scfg)
    return [model.processor([f.points], images=[f.images], intrinsics=[intr], cam2ego=[c2e], ego_pose=[f.ego_pose],
                            time_s=[f.time_s], scene_id=[f.seq_seed]) for f in frames]


def _targets(cfg: UniLIONConfig, frames: list[us.UniFrame]) -> list[dict]:
    return [build_unilion_targets(cfg, [f.boxes], [f.box_class], [f.bev_semantic], [f.occupancy]) for f in frames]


@pytest.fixture(scope="module")
def model() -> UniLION:
    torch.manual_seed(0)
    return UniLION(get_preset("unilion_test")).eval()


def test_modality_subsets_share_weights_and_output_shapes(model: UniLION, small_frames) -> None:
    frames, scfg = small_frames
    cfg = model.config
    b0, b1 = _inputs(model, frames, scfg)
    ny, nx = cfg.bev_size
    with torch.no_grad():
        _, mem = model(mode="L", **b0)
        outs = {m: model(mode=m, memory=mem, **b1)[0] for m in MODES}
    expect = {"hm": (1, 3, ny, nx), "center": (1, 2, ny, nx), "center_z": (1, 1, ny, nx), "dim": (1, 3, ny, nx),
              "rot": (1, 2, ny, nx), "seg": (1, 4, ny, nx), "occ": (1, cfg.occ_bins, ny, nx)}
    for m, out in outs.items():
        assert {k: tuple(out[k].shape) for k in expect} == expect, m
        lidar, cam, temp, _ = out["num_tokens"].tolist()
        assert lidar > 0
        assert (cam > 0) == ("C" in m) and (temp > 0) == ("T" in m), (m, cam, temp)
        if "C" in m:
            assert out["depth_logits"].shape == (1, 2, cfg.num_depth_bins, 32 // 4, 48 // 4)
            assert (out["depth_target"] >= 0).any()
    # the extra tokens change the prediction; the same mode twice does not
    assert not torch.allclose(outs["L"]["hm"], outs["LC"]["hm"]) and not torch.allclose(outs["L"]["hm"], outs["LT"]["hm"])
    with torch.no_grad():
        again = model(mode="LCT", memory=mem, **b1)[0]
    torch.testing.assert_close(again["hm"], outs["LCT"]["hm"])
    with pytest.raises(ValueError, match="needs images"):
        model(mode="LC", points=b1["points"], batch_size=1)
    with pytest.raises(ValueError, match="mode must be"):
        model(mode="C", **b1)


def test_memory_holds_backbone_output_and_resets_on_scene_change(model: UniLION, small_frames) -> None:
    frames, scfg = small_frames
    b0, b1 = _inputs(model, frames, scfg)
    with torch.no_grad():
        out0, mem = model(mode="L", **b0)
        assert mem is not None and not mem.voxels.features.requires_grad
        assert mem.voxels.spatial_shape[0] == model.config.out_z
        # memory_footprint: only output voxels under this frame's LiDAR voxels (z coarsened) are kept
        lidar = model.vfe(b0["points"], 1)
        zf = model.config.grid_size[2] // model.config.out_z
        under = {(int(b), int(z) // zf, int(y), int(x)) for b, z, y, x in lidar.coords}
        kept = {tuple(c) for c in mem.voxels.coords.tolist()}
        assert kept <= under and len(kept) < int(out0["num_tokens"][3])
        full = copy.deepcopy(model)
        full.config = dataclasses.replace(model.config, memory_footprint=False)
        _, mem_all = full(mode="L", **b0)
        assert len(mem_all.voxels.features) == int(out0["num_tokens"][3])
        assert kept == {tuple(c) for c in mem_all.voxels.coords.tolist()} & under
        other = dict(b1, scene_id=b1["scene_id"] + 1)
        out, _ = model(mode="LT", memory=mem, **other)
    assert out["num_tokens"][2] == 0  # another scene: the memory is dropped
    _, none = model(mode="L", points=b0["points"], batch_size=1)
    assert none is None  # no pose/time/scene given: nothing to store


def test_overfit_two_frames_loss_goes_down(small_frames) -> None:
    """20 AdamW steps on two consecutive frames (frame 0 in LC, frame 1 in LCT with frame 0's memory): the
    total loss and each of its parts (detection, segmentation, occupancy, depth) go down."""
    frames, scfg = small_frames
    torch.manual_seed(0)
    cfg = get_preset("unilion_test")
    m = UniLION(cfg).train()
    bs, tg = _inputs(m, frames, scfg), _targets(cfg, frames)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    hist = []
    for _ in range(20):
        out0, mem = m(mode="LC", **bs[0])
        l0, p0 = unilion_loss(cfg, out0, tg[0])
        out1, _ = m(mode="LCT", memory=mem, **bs[1])
        l1, p1 = unilion_loss(cfg, out1, tg[1])
        opt.zero_grad()
        (l0 + l1).backward()
        opt.step()
        hist.append({"loss": float((l0 + l1).detach()), **{k: p0[k] + p1[k] for k in ("det", "seg", "occ", "depth")}})
    first, last = hist[:2], hist[-2:]
    for key in ("loss", "det", "seg", "occ", "depth"):
        a, b = np.mean([h[key] for h in first]), np.mean([h[key] for h in last])
        assert b < a, (key, a, b)
    assert np.mean([h["loss"] for h in last]) < 0.7 * np.mean([h["loss"] for h in first])


def test_artifact_round_trip_through_the_one_loader(model: UniLION, small_frames, tmp_path) -> None:
    frames, scfg = small_frames
    path = save_unilion(model, tmp_path / "unilion")
    load = resolve_target(artifact_type("unilion").load)
    loaded = load(path)
    assert isinstance(loaded, UniLION) and loaded.config == model.config
    b = _inputs(model, frames, scfg)[0]
    with torch.no_grad():
        a_out = model(mode="LC", **b)[0]
        b_out = loaded.eval()(mode="LC", **b)[0]
    for k in ("hm", "seg", "occ", "depth_logits"):
        assert torch.equal(a_out[k], b_out[k]), k
    dets = loaded.detect([frames[0].points], mode="LC", images=[frames[0].images],
                         intrinsics=[us.camera_calibration(scfg)[0]], cam2ego=[us.camera_calibration(scfg)[1]])
    assert dets[0]["seg"].shape == (4, *model.config.bev_size) and dets[0]["boxes"].shape[1] == 7


def test_config_registry_and_checks() -> None:
    cfg = get_preset("unilion_tiny")
    assert cfg.type == "unilion" and config_from_dict(cfg.to_dict()) == cfg
    assert cfg.grid_size == (128, 128, 16) and cfg.bev_size == (64, 64) and cfg.out_z == 4
    assert cfg.num_depth_bins == 102
    # the label grid of the default data matches the default model's BEV map
    scfg = us.UniSceneConfig()
    assert scfg.bev_shape == cfg.bev_size and scfg.occ_bins == cfg.occ_bins and tuple(scfg.occ_z) == cfg.occ_z
    assert scfg.image_size == cfg.image_size and len(scfg.camera_yaws_deg) == cfg.num_cameras
    lc = cfg.lion_config()
    assert all(getattr(lc, f.name) == getattr(cfg, f.name) for f in dataclasses.fields(lc) if hasattr(cfg, f.name))
    with pytest.raises(ValueError, match="depth_topk"):
        get_preset("unilion_tiny", depth_topk=200)
    with pytest.raises(ValueError, match="operator"):
        get_preset("unilion_tiny", operator="gru")
    with pytest.raises(ValueError, match="outside"):
        UniLIONConfig.from_dict({**cfg.to_dict(), "occ_bins": 10**6})
