"""The shipped checkpoints load, carry their recipe, and detect cars on held-out test scans."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from latentstack.perception.lion import load_detector
from latentstack.perception.lion.eval import bev_iou
from latentstack.sim.lidar_scenes import SPLIT_SEEDS, generate_scan

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(("name", "operator"), [("lion_tiny", "mamba"), ("lion_tiny_identity", "identity")])
def test_shipped_checkpoint_loads_with_its_recipe(name: str, operator: str) -> None:
    path = ROOT / "policies" / name
    model = load_detector(path)
    assert model.config.operator == operator and model.config.rot_code == "sincos2"
    meta = json.loads((path / "config.json").read_text())
    assert meta["extra"]["train"]["train"]["iterations"] == 250
    assert (path / "CARD.md").is_file()


def test_shipped_lion_finds_well_seen_cars_on_test_scans() -> None:
    torch.manual_seed(0)
    model = load_detector(ROOT / "policies" / "lion_tiny")
    hits, total = 0, 0
    for seed in list(SPLIT_SEEDS["test"])[:2]:
        scan = generate_scan(seed)
        det = model.detect([scan.points])[0]
        cars = scan.boxes[(scan.box_class == 0) & (scan.box_num_points >= 50)]
        pred = det["boxes"][(det["labels"] == 0) & (det["scores"] >= 0.3)]
        total += len(cars)
        if len(cars) and len(pred):
            # a well-seen car is matched at the main metric's BEV IoU 0.5 (heading mod π included)
            hits += int((bev_iou(cars, pred).max(1) >= 0.5).sum())
    assert total >= 3 and hits / total >= 0.6
