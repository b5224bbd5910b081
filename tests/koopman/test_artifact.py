"""KORR artifacts: safetensors + JSON round trip; mismatches are refused."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from latentstack.core.artifacts import ArtifactError, sha256_file
from latentstack.koopman.artifact import load_residual, residual_source, save_residual
from latentstack.koopman.base_policy import (
    ChunkBaseConfig,
    ChunkMLPBase,
    MinMaxNormalizer,
    load_chunk_base,
    save_chunk_base,
)
from latentstack.koopman.configuration_korr import residual_config
from latentstack.koopman.modeling_korr import make_residual


def _write(path: Path, doc: dict) -> None:
    (path / "config.json").write_text(json.dumps(doc))


def test_round_trip_and_refusals(tmp_path: Path) -> None:
    torch.manual_seed(0)
    m = make_residual(residual_config(5, 2, "korr", hidden_dim=16, lift_dim=8, action_head_std=1.0))
    path = save_residual(m, tmp_path / "a", meta={"train_seed": 3})
    loaded, meta = load_residual(path)
    o, ab = torch.randn(4, 5), torch.randn(4, 2)
    assert torch.equal(loaded.act(o, ab), m.act(o, ab)) and meta["train_seed"] == 3
    assert not any(p.suffix == ".pkl" for p in path.iterdir())
    doc = json.loads((path / "config.json").read_text())
    assert doc["type"] == "korr_residual" and doc["format_version"] == 2 and doc["source"] is None
    with pytest.raises(ArtifactError, match="config mismatch"):
        load_residual(path, expect=residual_config(5, 2, "korr", hidden_dim=16, lift_dim=16))
    _write(path, {**doc, "config": {**doc["config"], "lift_dim": 16}})  # an edited architecture field
    with pytest.raises(ArtifactError, match="lift_dim"):
        load_residual(path)
    _write(path, {**doc, "config": {**doc["config"], "nope": 1}})  # unknown keys
    with pytest.raises(ValueError, match="nope"):
        load_residual(path)
    _write(path, {**doc, "format_version": 1})
    with pytest.raises(ArtifactError, match="format_version"):
        load_residual(path)
    _write(path, {**doc, "type": "korr_base"})
    with pytest.raises(ArtifactError, match="expected"):
        load_residual(path)
    # weights that do not fit the config: written with a valid header and hash, refused on names / shapes
    other = make_residual(residual_config(5, 2, "korr", hidden_dim=16, lift_dim=4, action_head_std=1.0))
    save_residual(other, tmp_path / "b")
    (path / "residual.safetensors").write_bytes((tmp_path / "b" / "residual.safetensors").read_bytes())
    _write(path, doc)
    with pytest.raises(ArtifactError, match="sha256"):  # not the file config.json hashed
        load_residual(path)
    _write(path, {**doc, "files": {"residual.safetensors": sha256_file(path / "residual.safetensors")}})
    with pytest.raises(ArtifactError, match="lift_dim"):  # its header names another config
        load_residual(path)
    with pytest.raises(FileNotFoundError):
        load_residual(tmp_path / "missing")


def _chunk_base(seed: int) -> ChunkMLPBase:
    torch.manual_seed(seed)
    cfg = ChunkBaseConfig(obs_dim=5, action_dim=2, horizon=4, n_action_steps=2, hidden_dim=8, num_layers=1)
    return ChunkMLPBase(cfg, MinMaxNormalizer(-torch.ones(5), torch.ones(5), cfg.obs_clamp),
                        MinMaxNormalizer(-torch.ones(2), torch.ones(2)))


def test_residual_names_its_base_and_refuses_another(tmp_path: Path) -> None:
    base_dir = save_chunk_base(_chunk_base(0), tmp_path / "base", meta={"demos": 1})
    base, meta = load_chunk_base(base_dir)
    assert meta == {"demos": 1} and base.config.obs_clamp == 3.0
    x = torch.randn(3, 5)
    assert torch.equal(base(base.obs_norm(x)), _chunk_base(0)(_chunk_base(0).obs_norm(x)))
    m = make_residual(residual_config(5, 2, "korr", hidden_dim=16, lift_dim=8))
    res = save_residual(m, tmp_path / "res", source=base_dir)
    assert residual_source(res).resolve() == base_dir.resolve()
    load_residual(res, source=base_dir)
    other = save_chunk_base(_chunk_base(1), tmp_path / "other")
    with pytest.raises(ArtifactError, match="derived from"):
        load_residual(res, source=other)
    save_chunk_base(_chunk_base(1), base_dir)  # the base was retrained in place: its fingerprint changed
    with pytest.raises(ArtifactError, match="derived from"):
        load_residual(res, source=base_dir)
    # the base's own refusals: an edited architecture field, a missing normalizer tensor
    doc = json.loads((base_dir / "config.json").read_text())
    assert doc["type"] == "korr_base" and doc["config"]["obs_clamp"] == 3.0
    _write(base_dir, {**doc, "config": {**doc["config"], "horizon": 8}})
    with pytest.raises(ArtifactError, match="horizon"):
        load_chunk_base(base_dir)
