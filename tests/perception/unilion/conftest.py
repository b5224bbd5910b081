"""Shared small fixtures: two frames of a UniLION sequence on the ``unilion_test`` grid (25.6 m, 32×48 images)."""
from __future__ import annotations

import pytest

from latentstack.sim import unilion_scenes as us


def small_scene_config(**kw: object) -> us.UniSceneConfig:
    base = {"point_range": (0.0, -12.8, -3.0, 25.6, 12.8, 1.0), "place_x": (4.0, 24.0), "place_y": 12.0,
            "bev_range": (0.0, -12.8, 25.6, 12.8), "image_size": (32, 48), "num_frames": 2}
    base.update(kw)
    return us.UniSceneConfig(**base)


@pytest.fixture(scope="session")
def small_frames() -> tuple[list[us.UniFrame], us.UniSceneConfig]:
    cfg = small_scene_config()
    return us.generate_sequence(us.SPLIT_SEEDS["train"][0], cfg), cfg


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """These models are tiny: intra-op threads only add contention on a shared 2-core runner (measured 0.5 s
    vs >5 s per overfit step under load)."""
