"""UniLION training recipe and evaluation: the camera-consistent flip, sequence-ordered prediction with memory,
and the report's structure on tiny trained-for-3-steps models (numbers themselves are the report's business)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from latentstack.perception.unilion import UniLION, get_preset
from latentstack.perception.unilion.temporal import warp_points
from latentstack.perception.unilion.train import (
    _FLIP_Y,
    SequenceBatches,
    UniTrainConfig,
    flip_frame,
    frame_inputs,
    predict_sequences,
)
from latentstack.perception.unilion.view_transform import project_to_image
from latentstack.sim import unilion_scenes as us

from .conftest import small_scene_config


def test_flip_is_an_involution_and_mirrors_labels(small_frames) -> None:
    frames, cfg = small_frames
    f = frames[1]
    g = flip_frame(f)
    assert np.array_equal(flip_frame(g).points, f.points) and np.allclose(flip_frame(g).ego_pose, f.ego_pose)
    assert np.array_equal(g.points[:, 1], -f.points[:, 1]) and np.array_equal(g.points[:, [0, 2, 3]],
                                                                               f.points[:, [0, 2, 3]])
    # the class footprint channels are exactly the footprints of the flipped boxes (labels stay consistent)
    gx, gy = us._bev_centres(cfg)
    for k in range(3):
        boxes = g.boxes[g.box_class == k]
        assert np.array_equal(us._footprint(boxes, gx, gy), g.bev_semantic[1 + k].astype(bool))
    assert np.array_equal(g.occupancy[:, ::-1], f.occupancy)
    assert f.bev_semantic.sum() > 0 and not np.array_equal(g.bev_semantic, f.bev_semantic)


def test_flip_keeps_camera_projection_and_ego_motion_consistent(small_frames) -> None:
    frames, cfg = small_frames
    intr, c2e = us.camera_calibration(cfg)
    f0, f1 = frames
    g0, g1 = flip_frame(f0), flip_frame(f1)
    pts = torch.from_numpy(f1.points[:, :3].astype(np.float64))
    pts_flipped = torch.from_numpy(g1.points[:, :3].astype(np.float64))
    for c in range(len(intr)):
        k = torch.from_numpy(intr[c])
        uv, z = project_to_image(pts, k, torch.from_numpy(c2e[c]))
        uv_f, z_f = project_to_image(pts_flipped, k, torch.from_numpy(_FLIP_Y @ c2e[c]))
        # a flipped point through the flipped extrinsics lands on the same pixel at the same depth
        torch.testing.assert_close(uv_f, uv, rtol=0, atol=1e-9)
        torch.testing.assert_close(z_f, z, rtol=0, atol=1e-9)
    # warping previous-frame points by the flipped poses = flipping the warp by the original poses
    prev = torch.from_numpy(f0.points[:50, :3].astype(np.float64))
    b = torch.zeros(len(prev), dtype=torch.long)
    w = warp_points(prev, b, torch.from_numpy(f0.ego_pose)[None], torch.from_numpy(f1.ego_pose)[None])
    wf = warp_points(prev * torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64), b,
                     torch.from_numpy(g0.ego_pose)[None], torch.from_numpy(g1.ego_pose)[None])
    torch.testing.assert_close(wf, w * torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64), rtol=0, atol=1e-9)


def test_batches_draw_flips_only_when_augmenting(small_frames) -> None:
    frames, _ = small_frames
    on = SequenceBatches(UniTrainConfig(batch_size=2), frames, np.random.default_rng(0))
    flips = [fl for _ in range(20) for fl in on().flip]
    assert any(flips) and not all(flips)
    off = SequenceBatches(UniTrainConfig(batch_size=2, augment=False), frames, np.random.default_rng(0))
    assert not any(fl for _ in range(20) for fl in off().flip)


@pytest.fixture(scope="module")
def two_sequences() -> tuple[list[us.UniFrame], us.UniSceneConfig]:
    cfg = small_scene_config(num_frames=3)
    frames = [f for s in us.SPLIT_SEEDS["val"][:2] for f in us.generate_sequence(s, cfg)]
    return frames, cfg


def test_predict_sequences_carries_memory_in_time_order(two_sequences) -> None:
    frames, cfg = two_sequences
    intr, c2e = us.camera_calibration(cfg)
    torch.manual_seed(0)
    model = UniLION(get_preset("unilion_test")).eval()
    shuffled = [frames[i] for i in (4, 0, 2, 5, 1, 3)]  # out of order, sequences interleaved
    got = predict_sequences(model, shuffled, "LCT", intr, c2e, batch_size=2, progress=False)
    # reference: one sequence at a time, frame by frame, memory of t-1 into t
    want = {}
    with torch.no_grad():
        for s in range(2):
            memory = None
            for t in range(3):
                f = frames[3 * s + t]
                out, memory = model(mode="LCT", memory=memory, **frame_inputs(model, [f], intr, [c2e], True))
                want[(f.seq_seed, f.frame_index)] = model.processor.postprocess(out)[0]
    for f, d in zip(shuffled, got, strict=True):
        w = want[(f.seq_seed, f.frame_index)]
        np.testing.assert_allclose(d["seg"], w["seg"], atol=1e-5)
        np.testing.assert_allclose(d["occ"], w["occ"], atol=1e-5)
    # the memory matters: LCT differs from LC on a later frame
    lc = predict_sequences(model, frames, "LC", intr, c2e, progress=False)
    lct = predict_sequences(model, frames, "LCT", intr, c2e, progress=False)
    np.testing.assert_allclose(lct[0]["seg"], lc[0]["seg"], atol=1e-5)  # first frame: no memory yet
    assert np.abs(lct[2]["seg"] - lc[2]["seg"]).max() > 1e-4


def test_report_on_tiny_models(tmp_path, two_sequences) -> None:
    from latentstack.perception.unilion.card import write_unilion_cards
    from latentstack.perception.unilion.report import run_evaluation
    from latentstack.perception.unilion.train import train_unilion

    frames, cfg = two_sequences
    us.save_split(tmp_path / "data" / "val", frames, cfg)
    intr, c2e = us.camera_calibration(cfg)
    for name, modes in (("uni", ("L", "LT", "LC", "LCT")), ("lion", ("L",))):
        tcfg = UniTrainConfig(iterations=2, batch_size=1, modes=modes, mode_probs=(1 / len(modes),) * len(modes))
        train_unilion(get_preset("unilion_test"), tcfg, frames, intr, c2e, tmp_path / name, progress=False,
                      extra={"kind": "unilion" if name == "uni" else "lion_only"})
    res = run_evaluation(str(tmp_path / "uni"), str(tmp_path / "lion"), clustering=True, data_dir=tmp_path / "data",
                         split="val", out_dir=tmp_path / "rep", bootstrap=20, command="test")
    data = json.loads((tmp_path / "rep" / "unilion.json").read_text())
    assert list(data["modes"]) == ["L", "LT", "LC", "LCT"]
    assert set(data["baselines"]) == {"lion_only", "clustering"}
    for r in data["modes"].values():
        assert {"bev_ap", "seg_miou", "occ_iou", "by_range"} <= set(r)
        assert set(r["by_range"]) == {"all", "0-20m", "20-40m", "40m+"}
    assert data["baselines"]["clustering"]["seg_miou"] is None
    d = data["paired"]["LCT - L"]
    assert d["bev_ap"]["ci"][0] <= d["bev_ap"]["ci"][1] and "seg_miou" in d
    assert res["num_frames"] == 6 and res["bootstrap_unit"] == "sequence"
    assert (tmp_path / "rep" / "unilion.png").stat().st_size > 0
    text = (tmp_path / "rep" / "summary.md").read_text()
    assert "| LCT |" in text and "Command: `test`" in text
    # cards copy the report's numbers for each artifact's own modes
    write_unilion_cards(tmp_path / "rep" / "unilion.json", [tmp_path / "uni", tmp_path / "lion"])
    card = (tmp_path / "uni" / "CARD.md").read_text()
    assert "| LCT |" in card and "Paired LCT − L" in card and "2 steps × batch 1" in card
    assert f"{data['modes']['LC']['bev_ap']:.3f}" in card and "## Artifact" in card
    lion_card = (tmp_path / "lion" / "CARD.md").read_text()
    assert "LION-only" in lion_card and "| LCT |" not in lion_card
    # a hand-written analysis above the tables survives a re-run
    (tmp_path / "rep" / "summary.md").write_text("# Analysis\n\n" + text)
    run_evaluation(str(tmp_path / "uni"), None, clustering=False, data_dir=tmp_path / "data", split="val",
                   out_dir=tmp_path / "rep", bootstrap=5, command="again")
    text = (tmp_path / "rep" / "summary.md").read_text()
    assert text.startswith("# Analysis") and text.count("## Tables") == 1 and "Command: `again`" in text
