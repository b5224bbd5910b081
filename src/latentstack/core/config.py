"""The config base of every model and its ``type`` registry (DESIGN.md, "the model contract").

A model config is a frozen dataclass deriving from :class:`ModelConfig`, registered under a ``type`` name with
:func:`register_config`. It carries ``device`` and ``dtype`` (how the model is *run*, never what its weights
are) and refuses unknown keys. ``config_from_dict({"type": ..., ...})`` builds the right class; types whose
module has not been imported yet are found through :data:`LAZY_CONFIG_TYPES`, so a loader never needs to import
every model stack to read one artifact.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

C = TypeVar("C", bound="ModelConfig")

DTYPES: tuple[str, ...] = ("float32", "bfloat16", "float16")
# Fields describing how a model runs, not what it is: never part of an architecture check.
PLACEMENT_FIELDS: frozenset[str] = frozenset({"device", "dtype"})

CONFIG_REGISTRY: dict[str, type[ModelConfig]] = {}
# type -> "module:Class" for configs registered on import (kept here so a loader imports only what it needs)
LAZY_CONFIG_TYPES: dict[str, str] = {}


def register_config(type_name: str, *, overwrite: bool = False):
    """Class decorator: register a :class:`ModelConfig` subclass under ``type_name`` (sets ``cls.type``)."""

    def deco(cls: type[C]) -> type[C]:
        if not (isinstance(cls, type) and issubclass(cls, ModelConfig)):
            raise TypeError(f"register_config({type_name!r}): {cls!r} is not a ModelConfig subclass")
        prev = CONFIG_REGISTRY.get(type_name)
        if prev is not None and prev is not cls and not overwrite:
            raise ValueError(f"config type {type_name!r} already registered by {prev.__module__}.{prev.__qualname__}")
        cls.type = type_name
        CONFIG_REGISTRY[type_name] = cls
        return cls

    return deco


def register_lazy_config(type_name: str, target: str) -> None:
    """Make ``type_name`` resolvable before its module is imported (``target`` = ``"pkg.module:Class"``)."""
    LAZY_CONFIG_TYPES[type_name] = target


def config_class(type_name: str) -> type[ModelConfig]:
    """The config class registered under ``type_name`` (importing its module if it is only known lazily)."""
    import latentstack.core.registry  # noqa: F401 (fills LAZY_CONFIG_TYPES; imports no model stack)

    if type_name not in CONFIG_REGISTRY and type_name in LAZY_CONFIG_TYPES:
        module, _, _ = LAZY_CONFIG_TYPES[type_name].partition(":")
        importlib.import_module(module)
    try:
        return CONFIG_REGISTRY[type_name]
    except KeyError:
        known = sorted(set(CONFIG_REGISTRY) | set(LAZY_CONFIG_TYPES))
        raise KeyError(f"unknown config type {type_name!r}; known: {known}") from None


def known_config_types() -> list[str]:
    import latentstack.core.registry  # noqa: F401

    return sorted(set(CONFIG_REGISTRY) | set(LAZY_CONFIG_TYPES))


def config_from_dict(d: Mapping[str, Any], *, expect_type: str | None = None) -> ModelConfig:
    """Build the registered config from a dict carrying its ``type``; unknown keys are refused."""
    if "type" not in d:
        raise ValueError(f"config has no 'type' (keys: {sorted(d)[:8]}); known types: {known_config_types()}")
    type_name = d["type"]
    if expect_type is not None and type_name != expect_type:
        raise ValueError(f"config type {type_name!r} where {expect_type!r} was expected")
    return config_class(type_name).from_dict(d)


try:  # numpy's bool is not a Python bool but is no size either
    from numpy import bool_ as np_bool
except ImportError:  # pragma: no cover (numpy is a dependency; core must not need it to import)
    np_bool = bool


def _leaves(v: Any) -> list[Any]:
    return [y for x in v for y in _leaves(x)] if isinstance(v, (list, tuple)) else [v]


def check_bounds(config: Any, bounds: Mapping[str, tuple[float, float]]) -> None:
    """Refuse (ValueError naming the field) a numeric field outside its ``(low, high)`` range, or of the wrong
    type: a field annotated ``int`` (or a tuple of ints) takes ints and never a bool, a ``float`` field a finite
    number, ``None`` only where the annotation allows it; tuple fields are checked element by element. Configs
    come from files a user may not have written, so this runs before any size derived from them is allocated."""
    annotations = {f.name: str(f.type) for f in dataclasses.fields(config)}
    for name, (low, high) in bounds.items():
        ann = annotations.get(name, "")
        want_int = re.match(r"^(tuple\[)*int\b", ann) is not None
        for x in _leaves(getattr(config, name)):
            if x is None and "None" in ann:
                continue
            # numbers.* so numpy scalars (dims read off array shapes / stats) pass like Python numbers
            if isinstance(x, (bool, np_bool)) or not isinstance(x, numbers.Real) or (
                    want_int and not isinstance(x, numbers.Integral)):
                raise ValueError(f"{type(config).__name__}.{name} must be {'an int' if want_int else 'a number'}, "
                                 f"got {x!r}")
            if not math.isfinite(x) or not low <= x <= high:
                raise ValueError(f"{type(config).__name__}.{name} = {x!r} is outside [{low}, {high}]")


def _tuples(v: Any) -> Any:
    return tuple(_tuples(x) for x in v) if isinstance(v, (list, tuple)) else v


@dataclass(frozen=True)
class ModelConfig:
    """Base of every model config. Subclasses are frozen dataclasses whose fields all have defaults."""

    type: ClassVar[str] = ""
    # field -> (low, high), inclusive: numeric ranges checked by __post_init__ before anything is built
    # (sizes bound what a hostile config.json can make a loader allocate; see :func:`check_bounds`)
    BOUNDS: ClassVar[Mapping[str, tuple[float, float]]] = {}
    # Where and in which precision the model runs. A loader moves the model there; saving stores what the
    # config says but an artifact loads on any device (``load_artifact(..., device=)`` overrides it).
    device: str = "cpu"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if not isinstance(self.device, str) or not self.device:
            raise ValueError(f"device must be a non-empty string such as 'cpu' or 'cuda:0', got {self.device!r}")
        check_bounds(self, self.BOUNDS)

    @property
    def torch_dtype(self):
        import torch

        return getattr(torch, self.dtype)

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with ``type`` first; tuples become lists."""

        def plain(v: Any) -> Any:
            if isinstance(v, tuple):
                return [plain(x) for x in v]
            if isinstance(v, list):
                return [plain(x) for x in v]
            if isinstance(v, dict):
                return {k: plain(x) for k, x in v.items()}
            return v

        return {"type": self.type, **{f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}}

    @classmethod
    def from_dict(cls: type[C], d: Mapping[str, Any]) -> C:
        d = dict(d)
        t = d.pop("type", cls.type)
        if t != cls.type:
            raise ValueError(f"{cls.__name__} is type {cls.type!r}, the dict says {t!r}")
        unknown = sorted(set(d) - cls.field_names())
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {unknown}")
        # JSON has no tuples: lists come back as tuples for tuple-typed fields, so a round trip compares equal
        # and the frozen config stays hashable
        tuple_fields = {f.name for f in dataclasses.fields(cls) if str(f.type).startswith(("tuple", "Tuple"))}
        return cls(**{k: _tuples(v) if k in tuple_fields else v for k, v in d.items()})

    def replace(self: C, **changes: Any) -> C:  # noqa: PYI019 (typing.Self is 3.11+; the package supports 3.10)
        return dataclasses.replace(self, **changes)


__all__ = [
    "CONFIG_REGISTRY",
    "DTYPES",
    "LAZY_CONFIG_TYPES",
    "PLACEMENT_FIELDS",
    "ModelConfig",
    "check_bounds",
    "config_class",
    "config_from_dict",
    "known_config_types",
    "register_config",
    "register_lazy_config",
]
