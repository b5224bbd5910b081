from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

SHIPPED = Path(__file__).resolve().parents[2] / "policies" / "vla_metaworld_mt6"


@pytest.fixture(scope="module")
def vla():
    from latentstack.policies.factory import make_policy

    if not SHIPPED.exists():
        pytest.skip("shipped VLA checkpoint not present")
    p = make_policy(str(SHIPPED))
    p.eval()
    return p


@pytest.fixture(scope="module")
def vla_batch():
    g = np.random.default_rng(0)
    return {
        "image": g.integers(0, 256, size=(2, 64, 64, 3), dtype=np.uint8),
        "state": g.standard_normal((2, 4)).astype(np.float32),
        "instruction": ["press the button", "close the drawer"],
    }


def run_vla(policy, batch, seed: int = 0) -> torch.Tensor:
    return policy.predict_action_chunk(batch, generator=torch.Generator().manual_seed(seed))


def tiny_suite_yaml(name: str, tasks: list[tuple[str, str]], max_episode_steps: int) -> str:
    """A MetaWorld suite file with the project's split layout on small seed ranges (tests only)."""
    rows = "".join(f"  - {{name: {t}, instruction: {i}, max_episode_steps: {max_episode_steps}}}\n" for t, i in tasks)
    return (f"name: {name}\nenv: metaworld\nimage_size: 64\ncamera: corner4\nseeds:\n"
            "  train:  {start: 0, stop: 50}\n  fit:    {start: 60, stop: 90}\n"
            "  select: {start: 100, stop: 150}\n  test:   {start: 200, stop: 250}\n"
            f"tasks:\n{rows}")
