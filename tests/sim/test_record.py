"""Expert demos -> LeRobotDataset -> read back with LeRobot's own loader."""
import json
import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest

from latentstack.sim.experts import make_expert
from latentstack.sim.metaworld_env import MetaWorldLangEnv
from latentstack.sim.record import FPS, STEPS_AFTER_SUCCESS, load_demos, record_demos, run_expert_episode
from latentstack.sim.suites import Suite, TaskSpec

SIZE = 32
SUITE = Suite(
    name="tiny",
    tasks=(TaskSpec("handle-press-v3", "press the handle down", 90),
           TaskSpec("coffee-button-v3", "press the button on the coffee machine", 90)),
    seeds={"train": range(10), "select": range(100, 110), "test": range(200, 210)},
    image_size=SIZE,
    camera="corner4",
)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    root = tmp_path_factory.mktemp("demos") / "ds"
    ds = record_demos(SUITE, root, episodes_per_task=1, split="train", repo_id="test/tiny", progress=False)
    return root, ds


def _reference_episode(spec, seed):
    env = MetaWorldLangEnv(spec.name, image_size=SIZE, camera=SUITE.camera,
                           max_episode_steps=spec.max_episode_steps, instruction=spec.instruction)
    try:
        frames, first = run_expert_episode(env, make_expert(spec.name), seed)
    finally:
        env.close()
    return frames, first


def test_summary(recorded):
    root, ds = recorded
    s = json.loads((root / "recording.json").read_text())
    assert s == ds.recording_summary
    assert s["episodes"] == 2 and s["fps"] == FPS == 80
    for spec in SUITE.tasks:
        t = s["tasks"][spec.name]
        assert t["successes"] == 1 and t["kept_seeds"] == [0] and t["attempts"] == 1
    assert s["frames"] == ds.num_frames


def test_read_back_matches_rollout(recorded):
    root, _ = recorded
    ds = load_demos(root, repo_id="test/tiny")
    assert ds.num_episodes == 2 and ds.fps == 80
    feats = ds.meta.features
    assert feats["observation.image"]["dtype"] == "image"
    assert tuple(feats["observation.image"]["shape"]) == (SIZE, SIZE, 3)
    assert feats["observation.image"]["names"] == ["height", "width", "channels"]
    assert feats["observation.state"]["dtype"] == "float32" and tuple(feats["observation.state"]["shape"]) == (4,)
    assert feats["action"]["dtype"] == "float32" and tuple(feats["action"]["shape"]) == (4,)
    assert set(ds.meta.tasks.index) == {t.instruction for t in SUITE.tasks}

    start = 0
    for ep, spec in enumerate(SUITE.tasks):
        frames, first = _reference_episode(spec, seed=0)
        assert first is not None and len(frames) == first + STEPS_AFTER_SUCCESS
        items = [ds[start + i] for i in range(len(frames))]
        assert all(int(it["episode_index"]) == ep for it in items)
        if start + len(frames) < len(ds):
            assert int(ds[start + len(frames)]["episode_index"]) == ep + 1
        for i, (image, state, action) in enumerate(frames):
            it = items[i]
            assert it["task"] == spec.instruction
            assert int(it["frame_index"]) == i
            np.testing.assert_array_equal(it["action"].numpy(), action)
            np.testing.assert_array_equal(it["observation.state"].numpy(), state)
            img = it["observation.image"]
            assert tuple(img.shape) == (3, SIZE, SIZE)  # LeRobot returns CHW float in [0, 1]
            back = (img.numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8)
            np.testing.assert_array_equal(back, image)  # PNG is lossless
        start += len(frames)
    assert start == len(ds)


def test_refuses_to_overwrite(recorded):
    root, _ = recorded
    with pytest.raises(FileExistsError):
        record_demos(SUITE, root, episodes_per_task=1, progress=False)
