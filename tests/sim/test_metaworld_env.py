"""MetaWorldLangEnv: spaces, upright images, seeding, step semantics, experts on the suite tasks."""
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco
import numpy as np
import pytest

from latentstack.sim.experts import make_expert
from latentstack.sim.metaworld_env import TASK_INSTRUCTIONS, MetaWorldLangEnv, canonical_task
from latentstack.sim.suites import load_suite

SUITE = load_suite("metaworld_mt6")
CAMERA = SUITE.camera
SIZE = 64


@pytest.fixture(scope="module")
def env():
    e = MetaWorldLangEnv("button-press-topdown", image_size=SIZE, camera=CAMERA, max_episode_steps=200)
    yield e
    e.close()


def test_obs_spaces_and_dtypes(env):
    obs, _ = env.reset(seed=3)
    assert set(obs) == {"image", "state", "instruction", "task"}
    assert obs["image"].shape == (SIZE, SIZE, 3) and obs["image"].dtype == np.uint8
    assert obs["state"].shape == (4,) and obs["state"].dtype == np.float32
    assert obs["task"] == "button-press-topdown-v3" == env.task
    assert obs["instruction"] == TASK_INSTRUCTIONS["button-press-topdown-v3"] == "press the button from the top"
    assert env.observation_space.contains(obs)
    assert env.action_space.shape == (4,)
    # proprioception only: hand xyz + gripper opening, equal to the first 4 entries of the full state
    assert env.full_state.shape == (39,)
    np.testing.assert_array_equal(obs["state"], env.full_state[:4].astype(np.float32))
    assert obs["image"].std() > 10  # not a blank frame


def _project(model, data, cam_id, point, size):
    """Pinhole projection of a world point into the *upright* image (row, col)."""
    pos, xmat = data.cam_xpos[cam_id], data.cam_xmat[cam_id].reshape(3, 3)
    c = xmat.T @ (np.asarray(point) - pos)  # camera frame: x right, y up, looks along -z
    f = (size / 2) / np.tan(np.deg2rad(model.cam_fovy[cam_id]) / 2)
    col, row = size / 2 + f * c[0] / -c[2], size / 2 - f * c[1] / -c[2]
    if xmat[2, 1] < 0:  # camera mounted upside down: its upright view is the 180-degree rotation
        col, row = size - col, size - row
    return row, col


def test_image_is_upright_and_not_mirrored(env):
    env.reset(seed=3)
    img = env.render()
    m, d = env.model, env.data
    cam = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, CAMERA)
    # 1) the same frame straight from mujoco.Renderer, rotated by 180 degrees (MetaWorld's corner
    #    cameras have their up axis pointing at the floor)
    assert d.cam_xmat[cam].reshape(3, 3)[2, 1] < 0
    with mujoco.Renderer(m, SIZE, SIZE) as r:
        r.update_scene(d, camera=cam)
        raw = r.render()
    np.testing.assert_array_equal(img, raw[::-1, ::-1])
    # 2) floor/table below the grey background: brown table pixels sit in the lower half
    rgb = img.astype(int)
    brown = (rgb[..., 0] - rgb[..., 2] > 25) & (rgb[..., 1] - rgb[..., 2] > 5) & (rgb[..., 0] < 200)
    rows = np.nonzero(brown)[0]
    assert rows.size > 200 and rows.mean() > SIZE * 0.55
    # 3) not mirrored: the yellow button box appears where the pinhole model puts it
    yellow = (rgb[..., 0] > 150) & (rgb[..., 1] > 110) & (rgb[..., 2] < 80)
    ys, xs = np.nonzero(yellow)
    assert ys.size > 10
    row, col = _project(m, d, cam, d.body("box").xpos, SIZE)
    assert abs(col - SIZE / 2) > 8, "box too close to the centre column for a mirror test"
    assert abs(xs.mean() - col) < 6 and abs(ys.mean() - row) < 8


def test_same_seed_identical_and_different_seeds_differ(env):
    o1, _ = env.reset(seed=11)
    f1 = env.full_state
    for _ in range(5):  # disturb the simulator between the two resets
        env.step(np.ones(4, np.float32))
    env.reset(seed=42)
    o2, _ = env.reset(seed=11)
    np.testing.assert_array_equal(o1["image"], o2["image"])
    np.testing.assert_array_equal(o1["state"], o2["state"])
    np.testing.assert_array_equal(f1, env.full_state)
    # different seeds: different object positions (MetaWorld's random vector, not 50 frozen goals)
    positions = set()
    for seed in range(6):
        env.reset(seed=seed)
        positions.add(tuple(np.round(env.full_state[4:7], 6)))
    assert len(positions) == 6
    # seeds from the train and the test range give different initial states
    env.reset(seed=SUITE.seeds["train"][0])
    a = env.full_state[4:7]
    env.reset(seed=SUITE.seeds["test"][0])
    assert not np.allclose(a, env.full_state[4:7])


def test_step_semantics():
    e = MetaWorldLangEnv("drawer-close-v3", image_size=16, camera=CAMERA, max_episode_steps=4)
    try:
        e.reset(seed=0)
        for t in range(4):
            obs, reward, terminated, truncated, info = e.step(np.array([5.0, -5.0, 0.0, 0.0]))  # clipped
            assert isinstance(info["success"], bool) and isinstance(reward, float)
            assert terminated is False
            assert truncated is (t == 3)
            assert obs["image"].shape == (16, 16, 3)
        with pytest.raises(RuntimeError):
            e.step(np.zeros(4))
    finally:
        e.close()


def test_task_names_and_instruction_override():
    assert canonical_task("drawer-close") == "drawer-close-v3"
    with pytest.raises(ValueError):
        canonical_task("no-such-task")
    assert len(TASK_INSTRUCTIONS) == 50
    e = MetaWorldLangEnv("drawer-close", image_size=16, camera=CAMERA, instruction="shut it")
    try:
        assert e.reset(seed=0)[0]["instruction"] == "shut it"
    finally:
        e.close()


@pytest.mark.parametrize("spec", SUITE.tasks, ids=lambda s: s.name)
def test_expert_succeeds_on_suite_task(spec):
    e = MetaWorldLangEnv(spec.name, image_size=16, camera=SUITE.camera,
                         max_episode_steps=spec.max_episode_steps, instruction=spec.instruction)
    expert = make_expert(spec.name)
    try:
        seed = SUITE.seeds["test"][0]
        e.reset(seed=seed)
        for _ in range(spec.max_episode_steps):
            action = expert(e.full_state)
            assert action.dtype == np.float32 and action.shape == (4,) and np.all(np.abs(action) <= 1)
            _, _, terminated, truncated, info = e.step(action)
            if terminated or truncated:
                break
        assert terminated and info["success"], f"expert failed {spec.name} seed {seed}"
    finally:
        e.close()
