"""Policies: the Policy protocol, the project's small VLA, checkpoints, factory and training.

Only the protocol is imported eagerly (it needs numpy only); the model stack loads on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from latentstack.policies.protocol import ActionChunkQueue, Observation, Policy

_LAZY = {
    "VLAConfig": "latentstack.policies.vla.configuration_vla",
    "VLAPolicy": "latentstack.policies.vla.modeling_vla",
    "WordTokenizer": "latentstack.policies.vla.tokenizer",
    "save_pretrained": "latentstack.policies.checkpoint",
    "from_pretrained": "latentstack.policies.checkpoint",
    "save_policy": "latentstack.policies.checkpoint",
    "load_policy": "latentstack.policies.checkpoint",
    "read_policy_config": "latentstack.policies.checkpoint",
    "checkpoint_fingerprint": "latentstack.policies.checkpoint",
    "make_policy": "latentstack.policies.factory",
    "register_policy": "latentstack.policies.factory",
    "TrainConfig": "latentstack.policies.train",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'latentstack.policies' has no attribute {name!r}")


__all__ = [  # noqa: RUF022
    "ActionChunkQueue",
    "Observation",
    "Policy",
    "VLAConfig",
    "VLAPolicy",
    "WordTokenizer",
    "save_pretrained",
    "from_pretrained",
    "save_policy",
    "load_policy",
    "read_policy_config",
    "checkpoint_fingerprint",
    "make_policy",
    "register_policy",
    "TrainConfig",
]
