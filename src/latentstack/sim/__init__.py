"""Simulated environments, scripted experts, demo recording, suites and the evaluation harness.

Imports are lazy: ``import latentstack.sim`` does not load MuJoCo, MetaWorld or LeRobot.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MetaWorldLangEnv": "metaworld_env",
    "TASK_INSTRUCTIONS": "metaworld_env",
    "make_expert": "experts",
    "record_demos": "record",
    "load_demos": "record",
    "TaskSpec": "suites",
    "Suite": "suites",
    "load_suite": "suites",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
