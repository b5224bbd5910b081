"""MetaWorld v3 as a language-conditioned, image-based gymnasium environment.

Observation (a dict):
    ``image``        uint8 (S, S, 3), upright RGB from one fixed camera
    ``state``        float32 (4,): hand xyz + gripper opening (proprioception only)
    ``instruction``  the task's instruction string
    ``task``         the MetaWorld task name, e.g. ``"drawer-close-v3"``

``reset(seed=s)`` fixes the initial configuration: the object/goal positions are drawn
from MetaWorld's own random-reset space with a generator seeded by ``s`` (not one of
MetaWorld's 50 frozen goal variations), so disjoint seed ranges give disjoint initial
states and the same seed gives bit-identical observations.

Rendering uses ``mujoco.Renderer`` directly. With ``fast_render=True`` (the default) three
cost knobs are applied before the first render: no shadow map, no MSAA, no reflections
(about 10x faster on CPU/llvmpipe, see benchmarks/render_fps.py). MetaWorld's corner
cameras are defined upside down (their image-up axis points to the floor); their images
are rotated by 180 degrees so they are upright and not mirrored.
"""
from __future__ import annotations

import os

# MuJoCo reads MUJOCO_GL once, at import; without it offscreen rendering falls back to GLFW
# and fails on a headless machine.
os.environ.setdefault("MUJOCO_GL", "egl")

import string
from typing import Any, ClassVar

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

__all__ = ["CAMERAS", "TASK_INSTRUCTIONS", "MetaWorldLangEnv", "canonical_task"]

# One instruction per MetaWorld v3 task.
TASK_INSTRUCTIONS: dict[str, str] = {
    "assembly-v3": "put the ring on the peg",
    "basketball-v3": "dunk the ball into the basket",
    "bin-picking-v3": "move the cube from one bin to the other",
    "box-close-v3": "put the lid on the box",
    "button-press-topdown-v3": "press the button from the top",
    "button-press-topdown-wall-v3": "press the button from the top behind the wall",
    "button-press-v3": "press the button from the front",
    "button-press-wall-v3": "press the button behind the wall",
    "coffee-button-v3": "press the button on the coffee machine",
    "coffee-pull-v3": "pull the mug away from the coffee machine",
    "coffee-push-v3": "push the mug under the coffee machine",
    "dial-turn-v3": "turn the dial",
    "disassemble-v3": "take the ring off the peg",
    "door-close-v3": "close the door",
    "door-lock-v3": "lock the door",
    "door-open-v3": "open the door",
    "door-unlock-v3": "unlock the door",
    "drawer-close-v3": "close the drawer",
    "drawer-open-v3": "open the drawer",
    "faucet-close-v3": "turn the faucet off",
    "faucet-open-v3": "turn the faucet on",
    "hammer-v3": "hammer the nail into the wall",
    "hand-insert-v3": "put the cube into the hole",
    "handle-press-side-v3": "press the handle down from the side",
    "handle-press-v3": "press the handle down",
    "handle-pull-side-v3": "pull the handle up from the side",
    "handle-pull-v3": "pull the handle up",
    "lever-pull-v3": "pull the lever up",
    "peg-insert-side-v3": "insert the peg into the hole",
    "peg-unplug-side-v3": "unplug the peg",
    "pick-out-of-hole-v3": "pick the cube out of the hole",
    "pick-place-v3": "pick up the cube and place it at the goal",
    "pick-place-wall-v3": "pick up the cube and place it at the goal behind the wall",
    "plate-slide-back-side-v3": "slide the plate back into the goal from the side",
    "plate-slide-back-v3": "slide the plate back into the goal",
    "plate-slide-side-v3": "slide the plate sideways into the goal",
    "plate-slide-v3": "slide the plate into the goal",
    "push-back-v3": "push the puck back to the goal",
    "push-v3": "push the puck to the goal",
    "push-wall-v3": "push the puck to the goal behind the wall",
    "reach-v3": "reach the goal position",
    "reach-wall-v3": "reach the goal position behind the wall",
    "shelf-place-v3": "place the cube on the shelf",
    "soccer-v3": "kick the ball into the goal",
    "stick-pull-v3": "pull the container with the stick",
    "stick-push-v3": "push the container with the stick",
    "sweep-into-v3": "sweep the cube into the hole",
    "sweep-v3": "sweep the cube off the table",
    "window-close-v3": "slide the window closed",
    "window-open-v3": "slide the window open",
}

CAMERAS = ("corner", "corner2", "corner3", "corner4", "topview")

_TEXT_CHARSET = string.ascii_letters + string.digits + " -_.,;:'!?()/"


def canonical_task(task: str) -> str:
    """``"drawer-close"`` or ``"drawer-close-v3"`` -> ``"drawer-close-v3"``."""
    name = task if task.endswith("-v3") else f"{task}-v3"
    if name not in TASK_INSTRUCTIONS:
        raise ValueError(f"unknown MetaWorld v3 task {task!r}; known: {sorted(TASK_INSTRUCTIONS)}")
    return name


def apply_fast_render_knobs(model: mujoco.MjModel) -> None:
    """The three CPU rendering knobs; they must be set before the first render."""
    model.vis.quality.shadowsize = 0
    model.vis.quality.offsamples = 0
    model.mat_reflectance[:] = 0


class MetaWorldLangEnv(gym.Env):
    """One MetaWorld v3 task with image + proprioception observations and an instruction."""

    metadata: ClassVar[dict] = {"render_modes": ["rgb_array"], "render_fps": 80}

    def __init__(
        self,
        task: str,
        image_size: int = 64,
        camera: str = "corner",
        max_episode_steps: int = 200,
        instruction: str | None = None,
        *,
        fast_render: bool = True,
    ) -> None:
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS

        self.task = canonical_task(task)
        self.instruction = instruction if instruction is not None else TASK_INSTRUCTIONS[self.task]
        self.image_size = int(image_size)
        self.camera = camera
        self.max_episode_steps = int(max_episode_steps)
        self.render_mode = "rgb_array"

        env = ALL_V3_ENVIRONMENTS[self.task]()
        # Random initial configurations drawn from env.np_random (seeded in reset), instead of
        # one of the 50 frozen goal variations of the MT/ML benchmarks.
        env._freeze_rand_vec = False
        env.seeded_rand_vec = True
        env._set_task_called = True
        # Full observability of the 39-d state (the goal slot filled in) for the scripted
        # experts; policies only ever see image + 4-d proprioception.
        if env._partially_observable:
            env._partially_observable = False
            env.__dict__.pop("sawyer_observation_space", None)
        # MetaWorld raises when stepped past max_path_length; the time limit is ours.
        env.max_path_length = self.max_episode_steps
        self._env = env

        self._fast_render = bool(fast_render)
        if self._fast_render:
            apply_fast_render_knobs(env.model)
        self._cam_id = mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        if self._cam_id < 0:
            raise ValueError(f"unknown camera {camera!r}; MetaWorld cameras: {CAMERAS}")
        self._renderer: mujoco.Renderer | None = None
        self._rotate180: bool | None = None

        s = self.image_size
        self.observation_space = spaces.Dict(
            {
                "image": spaces.Box(0, 255, (s, s, 3), np.uint8),
                "state": spaces.Box(-np.inf, np.inf, (4,), np.float32),
                "instruction": spaces.Text(max_length=256, min_length=0, charset=_TEXT_CHARSET),
                "task": spaces.Text(max_length=64, min_length=0, charset=_TEXT_CHARSET),
            }
        )
        self.action_space = spaces.Box(-1.0, 1.0, (4,), np.float32)
        self._full_state = np.zeros(39, np.float64)
        self._image: np.ndarray | None = None
        self._t = 0

    # ------------------------------------------------------------------ properties
    @property
    def full_state(self) -> np.ndarray:
        """The raw 39-d MetaWorld observation (objects and goal included): for scripted experts only."""
        return self._full_state.copy()

    @property
    def unwrapped_metaworld(self):
        """The underlying MetaWorld ``SawyerXYZEnv``."""
        return self._env

    @property
    def model(self) -> mujoco.MjModel:
        return self._env.model

    @property
    def data(self) -> mujoco.MjData:
        return self._env.data

    @property
    def elapsed_steps(self) -> int:
        return self._t

    # ------------------------------------------------------------------ rendering
    def _render_image(self) -> np.ndarray:
        if self._renderer is None:
            s = self.image_size
            self._renderer = mujoco.Renderer(self._env.model, height=s, width=s)
        if self._rotate180 is None:
            # Column 1 of cam_xmat is the camera's image-up axis in world coordinates.
            up_z = self._env.data.cam_xmat[self._cam_id].reshape(3, 3)[2, 1]
            self._rotate180 = bool(up_z < 0)
        self._renderer.update_scene(self._env.data, camera=self._cam_id)
        img = self._renderer.render()
        if self._rotate180:
            img = img[::-1, ::-1]
        return np.ascontiguousarray(img)

    def render(self) -> np.ndarray | None:
        """The current camera image (same as ``obs["image"]``)."""
        if self._image is None:
            self._image = self._render_image()
        return self._image.copy()

    # ------------------------------------------------------------------ gym API
    def _obs(self) -> dict[str, Any]:
        self._image = self._render_image()
        return {
            "image": self._image,
            "state": self._full_state[:4].astype(np.float32),
            "instruction": self.instruction,
            "task": self.task,
        }

    def reset(self, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is None:
            # Unseeded resets stay reproducible from the env's own generator.
            seed = int(self.np_random.integers(0, 2**31 - 1))
        self._env.seed(int(seed))
        full, _ = self._env.reset()
        self._full_state = np.asarray(full, np.float64)
        self._t = 0
        return self._obs(), {"seed": int(seed), "success": False}

    def step(self, action: np.ndarray):
        if self._t >= self.max_episode_steps:
            raise RuntimeError("episode is over (truncated); call reset()")
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(4), -1.0, 1.0)
        full, reward, _, _, mw_info = self._env.step(a)
        self._full_state = np.asarray(full, np.float64)
        self._t += 1
        success = bool(mw_info.get("success", 0.0) > 0.5)
        info = {k: (float(v) if isinstance(v, (int, float, np.floating, np.integer)) else v)
                for k, v in mw_info.items()}
        info["success"] = success
        terminated = success
        truncated = self._t >= self.max_episode_steps
        return self._obs(), float(reward), terminated, truncated, info

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        if self._env is not None:
            self._env.close()
