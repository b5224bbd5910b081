"""The shipped UniLION artifacts load through the one artifact loader, carry their recipe, and detect well-seen cars
on a held-out test sequence in every mode (memory carried in the temporal ones)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from latentstack.core.artifacts import load_artifact
from latentstack.perception.lion.eval import bev_iou
from latentstack.perception.unilion import MODES, load_unilion
from latentstack.perception.unilion.train import predict_sequences
from latentstack.sim import unilion_scenes as us

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(("name", "modes"), [("unilion_tiny", list(MODES)), ("unilion_tiny_lion_only", ["L"])])
def test_shipped_artifact_loads_with_its_recipe(name: str, modes: list[str]) -> None:
    path = ROOT / "policies" / name
    art = load_artifact(path)  # every file's sha256 checked
    assert art.type == "unilion"
    model = load_unilion(path)
    assert model.config.name == "unilion_tiny"
    train = json.loads((path / "config.json").read_text())["extra"]["train"]
    assert train["train"]["modes"] == modes and train["train"]["iterations"] == 800
    assert (path / "CARD.md").is_file() and "reports/unilion/unilion.json" in (path / "CARD.md").read_text()


def test_shipped_unilion_finds_well_seen_cars_in_every_mode() -> None:
    torch.manual_seed(0)
    model = load_unilion(ROOT / "policies" / "unilion_tiny")
    cfg = us.UniSceneConfig(num_frames=3)
    frames = us.generate_sequence(us.SPLIT_SEEDS["test"][0], cfg)
    intr, c2e = us.camera_calibration(cfg)
    for mode in MODES:
        dets = predict_sequences(model, frames, mode, intr, c2e, progress=False)
        hits = total = 0
        for f, d in zip(frames, dets, strict=True):
            cars = f.boxes[(f.box_class == 0) & (f.box_num_points >= 50)]
            pred = d["boxes"][(d["labels"] == 0) & (d["scores"] >= 0.3)]
            total += len(cars)
            if len(cars) and len(pred):
                hits += int((bev_iou(cars, pred).max(1) >= 0.5).sum())
        assert total >= 3 and hits / total >= 0.6, (mode, hits, total)
