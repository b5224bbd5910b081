"""KORR artifacts: safetensors + JSON round trip; mismatches are refused."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from latentstack.koopman.artifact import load_residual, save_residual
from latentstack.koopman.configuration_korr import residual_config
from latentstack.koopman.modeling_korr import make_residual


def test_round_trip_and_refusals(tmp_path: Path) -> None:
    torch.manual_seed(0)
    m = make_residual(residual_config(5, 2, "korr", hidden_dim=16, lift_dim=8, action_head_std=1.0))
    path = save_residual(m, tmp_path / "a", meta={"train_seed": 3})
    loaded, meta = load_residual(path)
    o, ab = torch.randn(4, 5), torch.randn(4, 2)
    assert torch.equal(loaded.act(o, ab), m.act(o, ab)) and meta["train_seed"] == 3
    assert not any(p.suffix == ".pkl" for p in path.iterdir())
    with pytest.raises(ValueError, match="config mismatch"):
        load_residual(path, expect=residual_config(5, 2, "korr", hidden_dim=16, lift_dim=16))
    # weights that do not fit the config
    sd = load_file(str(path / "residual.safetensors"))
    sd["koopman.K"] = torch.zeros(3, 3)
    save_file(sd, str(path / "residual.safetensors"))
    with pytest.raises(ValueError, match="shape"):
        load_residual(path)
    cfg = json.loads((path / "config.json").read_text())
    cfg["format"] = "something/else"
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="format"):
        load_residual(path)
    with pytest.raises(FileNotFoundError):
        load_residual(tmp_path / "missing")
