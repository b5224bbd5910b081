"""KORR: Koopman-guided online residual refinement of a frozen action-chunked base policy.

Modules (spec korr.md §11): ``configuration_korr`` (frozen configs + named presets), ``modeling_korr``
(KORR / goal-KORR / ResiP / non-linear-dynamics residual actor-critics behind one interface), ``ppo`` and
``trainer`` (residual PPO with the joint Koopman loss), ``diagnostics`` (var φ, relative error, ρ(K)),
``oracles`` (EDMDc, ResDMD, Koopa lstsq), ``toy_env`` (batched torch insertion), ``base_policy`` (chunked
BC base), ``residual_policy`` / ``node_adapter`` (the residual inside a Policy), ``robosuite_task``.
Names below load lazily so ``import latentstack.koopman`` stays cheap.
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "ResidualConfig": "configuration_korr",
    "PPOConfig": "configuration_korr",
    "residual_config": "configuration_korr",
    "ppo_config": "configuration_korr",
    "KORRResidual": "modeling_korr",
    "ResiPResidual": "modeling_korr",
    "DynamicsResidual": "modeling_korr",
    "KoopmanOperator": "modeling_korr",
    "make_residual": "modeling_korr",
    "train_residual": "trainer",
    "koopman_diagnostics": "diagnostics",
    "edmdc": "oracles",
    "resdmd": "oracles",
    "koopa_operator": "oracles",
    "save_residual": "artifact",
    "load_residual": "artifact",
    "ResidualPolicy": "residual_policy",
    "residual_adapter": "node_adapter",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [  # noqa: RUF022
    "ResidualConfig",
    "PPOConfig",
    "residual_config",
    "ppo_config",
    "KORRResidual",
    "ResiPResidual",
    "DynamicsResidual",
    "KoopmanOperator",
    "make_residual",
    "train_residual",
    "koopman_diagnostics",
    "edmdc",
    "resdmd",
    "koopa_operator",
    "save_residual",
    "load_residual",
    "ResidualPolicy",
    "residual_adapter",
]
