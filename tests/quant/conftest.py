"""Shared fixtures for the quant tests: the shipped VLA and a small batch of observations."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from latentstack.policies.factory import make_policy

SHIPPED = Path(__file__).resolve().parents[2] / "policies" / "vla_metaworld_mt6"


@pytest.fixture(scope="session")
def vla_fp():
    torch.manual_seed(0)
    return make_policy(SHIPPED)


@pytest.fixture
def vla(vla_fp):
    return copy.deepcopy(vla_fp)


@pytest.fixture(scope="session")
def obs_batch() -> dict[str, Any]:
    """Synthetic observations (images are noise): enough for numeric checks, no simulator needed."""
    rng = np.random.default_rng(0)
    tasks = [("press the button from the top", "button-press-topdown-v3"), ("close the drawer", "drawer-close-v3"),
             ("press the handle down", "handle-press-v3")]
    return {"image": rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8),
            "state": rng.standard_normal((3, 4)).astype(np.float32),
            "instruction": [t[0] for t in tasks], "task": [t[1] for t in tasks]}


def predict(model, batch, seed: int = 0) -> torch.Tensor:
    with torch.no_grad():
        return model.predict_action_chunk(batch, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """2-thread OpenMP stalls when the other core is busy (kernels.md); these tests are small."""
