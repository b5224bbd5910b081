"""Detector assembly (spec tests 14, 16), checkpoints, targets/decoding."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from latentstack.perception.lion import LionDetector, get_preset, load_detector, save_detector
from latentstack.perception.lion.backbone import HeightCompression, LION3DBackbone
from latentstack.perception.lion.heads import build_targets, center_loss, decode
from latentstack.perception.lion.modeling_lion import batch_points
from latentstack.perception.lion.vfe import DynamicVoxelVFE


def _cloud(n: int, seed: int, pr: tuple[float, ...]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lo, hi = np.array(pr[:3]), np.array(pr[3:])
    return np.c_[rng.uniform(lo, hi, (n, 3)), rng.uniform(0, 1, n)].astype(np.float32)


def test_kitti_shapes_and_z_sequence() -> None:
    cfg = get_preset("lion_kitti_mamba")
    assert cfg.grid_size == (352, 400, 32)
    torch.manual_seed(0)
    vfe = DynamicVoxelVFE(4, cfg.vfe_filters, cfg.point_range, cfg.voxel_size)
    bb = LION3DBackbone(cfg).eval()
    pts = batch_points([_cloud(300, 0, cfg.point_range)])
    x = vfe(pts, 1)
    assert x.spatial_shape == (32, 400, 352) and x.features.shape[1] == 64
    rec: dict = {}
    with torch.no_grad():
        y = bb(x, record=rec)
    assert [rec[f"block{i}"].spatial_shape[0] for i in range(4)] == [32, 16, 8, 4]
    assert y.spatial_shape == (2, 400, 352)
    assert HeightCompression()(y).shape == (1, 128, 400, 352)


def test_forward_is_deterministic() -> None:
    cfg = get_preset("lion_tiny")
    clouds = [_cloud(600, s, cfg.point_range) for s in (1, 2)]
    torch.manual_seed(0)
    a = LionDetector(cfg).eval()
    torch.manual_seed(0)
    b = LionDetector(cfg).eval()
    pts = batch_points(clouds)
    with torch.no_grad():
        oa, ob = a(pts, 2), b(pts, 2)
    for k in oa:
        assert torch.equal(oa[k], ob[k])
    assert oa["hm"].shape == (2, 3, *cfg.bev_size)


def test_targets_and_decode_recover_a_box() -> None:
    cfg = get_preset("lion_tiny", score_threshold=0.5)
    box = np.array([[12.3, -3.1, -0.95, 3.9, 1.6, 1.56, 0.4]], np.float32)
    tgt = build_targets(cfg, [box], [np.array([0])])
    assert tgt["mask"].sum() == 1 and tgt["hm"].max() == 1.0
    # an oracle head output built from the targets decodes back to the box
    ny, nx = cfg.bev_size
    out = {"hm": torch.where(tgt["hm"] == 1, 10.0, -10.0)}
    reg = tgt["reg"][0, 0]
    ind = int(tgt["ind"][0, 0])
    for name, sl in (("center", slice(0, 2)), ("center_z", slice(2, 3)), ("dim", slice(3, 6)), ("rot", slice(6, 8))):
        m = torch.zeros(1, sl.stop - sl.start, ny * nx)
        m[0, :, ind] = reg[sl]
        out[name] = m.view(1, -1, ny, nx)
    det = decode(cfg, out)[0]
    assert det["labels"].tolist() == [0]
    np.testing.assert_allclose(det["boxes"][0], box[0], atol=1e-4)
    _loss, parts = center_loss(cfg, out, tgt)
    assert parts["loc"] < 1e-5


def test_checkpoint_round_trip_and_refusals(tmp_path) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from latentstack.core.artifacts import ArtifactError, sha256_file

    cfg = get_preset("lion_tiny_identity")
    torch.manual_seed(0)
    m = LionDetector(cfg).eval()
    save_detector(m, tmp_path / "ck", files={"train_log.json": "{}"})
    back = load_detector(tmp_path / "ck")
    for k, v in m.state_dict().items():
        assert torch.equal(v, back.state_dict()[k])
    meta = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert meta["type"] == "lion" and meta["format_version"] == 2 and set(meta["files"]) == {
        "model.safetensors", "train_log.json"}
    # runtime fields may change; architecture fields may not
    meta["config"]["score_threshold"] = 0.3
    (tmp_path / "ck" / "config.json").write_text(json.dumps(meta))
    assert load_detector(tmp_path / "ck").config.score_threshold == 0.3
    meta["config"]["d_state"] = 4
    (tmp_path / "ck" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="d_state"):
        load_detector(tmp_path / "ck")
    meta["config"]["d_state"] = cfg.d_state
    meta["config"]["bogus"] = 1  # unknown keys are refused
    (tmp_path / "ck" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="bogus"):
        load_detector(tmp_path / "ck")
    del meta["config"]["bogus"]
    for key, value, match in (("format_version", 1, "format_version"), ("type", "stereo", "expected")):
        bad = {**meta, key: value}
        (tmp_path / "ck" / "config.json").write_text(json.dumps(bad))
        with pytest.raises(ArtifactError, match=match):
            load_detector(tmp_path / "ck")
    # a weight file that is not the one config.json hashed (tampered), and one whose shapes do not fit
    sd = load_file(str(tmp_path / "ck" / "model.safetensors"))
    key = next(k for k, v in sd.items() if v.dim() == 2)
    sd[key] = torch.zeros(3, 3)
    with safe_open(str(tmp_path / "ck" / "model.safetensors"), "pt") as f:
        header = f.metadata()  # keep the header: only the hash and the shapes are wrong
    save_file(sd, str(tmp_path / "ck" / "model.safetensors"), metadata=header)
    (tmp_path / "ck" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="sha256 differs"):
        load_detector(tmp_path / "ck")
    meta["files"]["model.safetensors"] = sha256_file(tmp_path / "ck" / "model.safetensors")
    (tmp_path / "ck" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="shape/dtype mismatch"):
        load_detector(tmp_path / "ck")
    with pytest.raises(FileNotFoundError):
        load_detector(tmp_path / "missing")


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="operator"):
        get_preset("lion_tiny", operator="gru")
    with pytest.raises(ValueError, match="unknown LION preset"):
        get_preset("nope")
    m = LionDetector(get_preset("lion_tiny_identity"))
    with pytest.raises(ValueError, match="batch column"):
        m(torch.zeros(10, 4), 1)
    with pytest.raises(ValueError, match="expected"):
        batch_points([np.zeros((5, 3))])


def test_latent_sites_are_tappable() -> None:
    from latentstack.latent import Tap

    cfg = get_preset("lion_tiny_identity")
    torch.manual_seed(0)
    m = LionDetector(cfg).eval()
    with Tap(m) as tap, torch.no_grad():
        m(batch_points([_cloud(300, 0, cfg.point_range)]), 1)
    assert tap.records["bev"][0].value.shape == (1, m.bev_in_channels, cfg.grid_size[1], cfg.grid_size[0])
    assert tap.records["head_in"][0].value.shape == (1, cfg.bev_channels, *cfg.bev_size)


def test_rot_code_sincos2_is_heading_mod_pi() -> None:
    box = np.array([[12.3, -3.1, -0.95, 3.9, 1.6, 1.56, 0.4]], np.float32)
    flipped = box.copy()
    flipped[0, 6] += np.pi
    for code, same in (("sincos2", True), ("sincos", False)):
        cfg = get_preset("lion_tiny", rot_code=code)
        a = build_targets(cfg, [box], [np.array([0])])["reg"][0, 0, 6:]
        b = build_targets(cfg, [flipped], [np.array([0])])["reg"][0, 0, 6:]
        assert torch.allclose(a, b, atol=1e-5) == same
    with pytest.raises(ValueError, match="rot_code"):
        get_preset("lion_tiny", rot_code="quat")
