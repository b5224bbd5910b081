"""The config base + type registry (core/config.py) and the VLA's registered config."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from latentstack.core.config import (
    CONFIG_REGISTRY,
    PLACEMENT_FIELDS,
    ModelConfig,
    config_class,
    config_from_dict,
    known_config_types,
    register_config,
)


@register_config("test_toy_config")
@dataclass(frozen=True)
class ToyConfig(ModelConfig):
    width: int = 4
    channels: tuple[int, ...] = (8, 16)


def test_registered_type_and_round_trip():
    c = ToyConfig(width=6, device="cuda:1", dtype="bfloat16")
    d = c.to_dict()
    assert next(iter(d)) == "type" and d["type"] == "test_toy_config" and d["channels"] == [8, 16]
    assert ToyConfig.from_dict(d) == c and config_from_dict(d) == c and hash(c) == hash(ToyConfig.from_dict(d))
    assert config_class("test_toy_config") is ToyConfig and "test_toy_config" in known_config_types()
    assert {"device", "dtype"} == PLACEMENT_FIELDS <= ToyConfig.field_names()


def test_unknown_key_wrong_type_and_bad_placement_refused():
    with pytest.raises(ValueError, match=r"unknown ToyConfig fields: \['depth'\]"):
        ToyConfig.from_dict({"type": "test_toy_config", "depth": 2})
    with pytest.raises(ValueError, match="ToyConfig is type 'test_toy_config', the dict says 'vla'"):
        ToyConfig.from_dict({"type": "vla"})
    with pytest.raises(ValueError, match="config type 'test_toy_config' where 'vla' was expected"):
        config_from_dict(ToyConfig().to_dict(), expect_type="vla")
    with pytest.raises(ValueError, match="has no 'type'"):
        config_from_dict({"width": 1})
    with pytest.raises(KeyError, match="unknown config type 'nope'"):
        config_from_dict({"type": "nope"})
    with pytest.raises(ValueError, match="dtype must be one of"):
        ToyConfig(dtype="float64")
    with pytest.raises(ValueError, match="device must be a non-empty string"):
        ToyConfig(device="")


def test_registration_refusals():
    with pytest.raises(ValueError, match="already registered"):
        register_config("test_toy_config")(type("Other", (ToyConfig,), {}))
    with pytest.raises(TypeError, match="not a ModelConfig subclass"):
        register_config("test_plain")(dict)
    assert "test_plain" not in CONFIG_REGISTRY


def test_vla_config_is_a_registered_model_config():
    from latentstack.policies.vla.configuration_vla import OVERRIDABLE_FIELDS, RUNTIME_FIELDS, VLAConfig

    assert config_class("vla") is VLAConfig and issubclass(VLAConfig, ModelConfig)
    c = VLAConfig(device="cuda:0")
    assert config_from_dict(c.to_dict()) == c and c.to_dict()["type"] == "vla"
    assert OVERRIDABLE_FIELDS == RUNTIME_FIELDS | PLACEMENT_FIELDS
    # the VLA's own validation is kept
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        VLAConfig(d_model=130)
    with pytest.raises(ValueError, match="vocab must start with"):
        VLAConfig(vocab=("a", "b"))
    with pytest.raises(ValueError, match="dtype must be one of"):
        VLAConfig(dtype="int8")
    with pytest.raises(ValueError, match=r"unknown VLAConfig fields: \['d_modle'\]"):
        VLAConfig.from_dict({"d_modle": 64})
    # a legacy dict (no type, device or dtype) reads with the defaults
    legacy = {k: v for k, v in VLAConfig().to_dict().items() if k not in ("type", "device", "dtype")}
    assert VLAConfig.from_dict(legacy) == VLAConfig()
