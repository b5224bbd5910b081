"""Sim bridge core: runs a gymnasium env (MetaWorld by default) as a ROS-style robot.

Publishes per step ``camera/image_raw`` (rgb8 Image), ``camera/camera_info`` and
``joint_states`` (hand x/y/z + gripper) with one shared stamp (sim time of the step), the
instruction (``instruction``, latched) and ``episode`` start/end events; applies
``action`` commands (``latentstack_msgs/ActionCommand``, see :mod:`.commands`) from the nodes named in
``action_publishers`` only.

``lockstep=True``: the env steps exactly when an action for the current observation
arrives, so a closed loop through the node graph reproduces
:func:`latentstack.sim.evaluation.run_episode` on the same seeds (both keep the episode's books with
:class:`latentstack.sim.rollout.EpisodeState`; this node is event-driven, so it shares the per-step
function, not the loop). The observation is
re-sent every ``republish_s`` while no action comes (late subscribers over DDS).
``lockstep=False``: the env steps at ``rate_hz`` with the newest action, or the hold
action (zero motion, gripper kept) when none arrived within ``action_timeout_s``.

Episodes run task by task, seed by seed, exactly like ``evaluate``: one env per task,
``env.reset(seed)`` per episode. A malformed or wrong-length action is logged and ignored;
out-of-range values are clamped to the action space (and counted). Every command goes through a
:class:`~.commands.CommandFilter`: replayed, out-of-order and foreign-session commands are refused
(counted as ``command_<reason>``); lockstep applies only the answer stamped with its current observation's
stamp (others: ``command_stale``), free-running refuses answers older than ``action_timeout_s`` of sim
time or stamped after the current observation. A policy node's watchdog hold answers no observation: lockstep ignores it (counted), free-running
applies it like any action.

Episode seeds must be integers in ``[0, 2**63 - 1]`` (``seeds`` parameter: checked at start-up). An
episode whose seed is outside that range, or whose ``env.reset`` raises, is refused with a log
(counted in ``episodes_refused``, no start event, no result) and the run goes on with the next one.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from latentstack import msgs
from latentstack.sim.rollout import EpisodeResult, EpisodeState

from .base import (
    CLOCK_QOS,
    CLOCK_TOPIC,
    CLOCK_TYPE,
    NodeCore,
    NodeParams,
    check,
    check_finite,
    check_publisher_list,
)
from .commands import CommandFilter, CommandSequencer, decode_action_command
from .interfaces import (
    ACTION_TYPE,
    CAMERA_INFO_TYPE,
    EPISODE_QOS,
    EPISODE_TYPE,
    IMAGE_TYPE,
    INSTRUCTION_QOS,
    INSTRUCTION_TYPE,
    JOINT_STATE_TYPE,
    EpisodeEvent,
    episode_event_msg,
    is_valid_seed,
)
from .tf import TF_STATIC_QOS, TF_TYPE, tf_message, transform_stamped

__all__ = ["Episode", "SimBridgeCore", "SimBridgeParams", "plan_episodes"]

SPLITS = ("train", "select", "test")


@dataclass(frozen=True)
class SimBridgeParams(NodeParams):
    """Parameters of the sim bridge (ROS parameter names are the field names)."""

    suite: str = "metaworld_mt6"
    tasks: tuple[str, ...] = ()  # subset of the suite's tasks; () = all
    split: str = "test"
    episodes_per_task: int = 1
    seeds: tuple[int, ...] = ()  # explicit seeds (override split / episodes_per_task)
    image_size: int = 0  # 0 = the suite's
    camera: str = ""  # "" = the suite's
    max_episode_steps: int = 0  # 0 = the task's
    lockstep: bool = True
    rate_hz: float = 80.0  # free-running step rate (lockstep=False)
    action_timeout_s: float = 0.25  # free-running: hold when the newest action is older
    republish_s: float = 1.0  # lockstep: re-send the observation after this long without an action
    step_dt_s: float = 0.0125  # sim time per env step (MetaWorld: frame_skip 5 x 2.5 ms), for stamps
    image_topic: str = "camera/image_raw"
    camera_info_topic: str = "camera/camera_info"
    state_topic: str = "joint_states"
    instruction_topic: str = "instruction"
    episode_topic: str = "episode"
    action_topic: str = "action"
    frame_id: str = "camera"
    joint_names: tuple[str, ...] = ("hand_x", "hand_y", "hand_z", "gripper")
    action_dim: int = 4
    motion_dims: int = 3
    # who may command the sim: node names (relative to this node's namespace) / "guid:<hex>"; () = anyone
    action_publishers: tuple[str, ...] = ("policy_node",)
    session_timeout_s: float = 1.0  # a second command session is refused while the first published this recently
    publish_clock: bool = True  # /clock = the step's sim time (restarts at 0 with each episode, as a sim reset)
    world_frame: str = "world"  # parent of the camera's optical frame on /tf_static

    def __post_init__(self) -> None:
        check_publisher_list("action_publishers", self.action_publishers)
        check_finite("session_timeout_s", self.session_timeout_s)
        check(self.session_timeout_s >= 0, f"session_timeout_s must be >= 0, got {self.session_timeout_s}")
        check(self.split in SPLITS, f"split must be one of {SPLITS}, got {self.split!r}")
        check(self.episodes_per_task >= 1, f"episodes_per_task must be >= 1, got {self.episodes_per_task}")
        for name in ("rate_hz", "action_timeout_s", "republish_s", "step_dt_s"):
            check_finite(name, getattr(self, name))
            check(getattr(self, name) > 0, f"{name} must be > 0, got {getattr(self, name)}")
        check(self.image_size >= 0 and self.max_episode_steps >= 0, "image_size / max_episode_steps must be >= 0")
        check(self.action_dim >= 1 and 0 <= self.motion_dims <= self.action_dim, "bad action_dim / motion_dims")
        check(len(self.joint_names) > 0, "joint_names must not be empty")
        check(len(set(self.tasks)) == len(self.tasks), f"duplicate tasks {self.tasks}")
        bad = [s for s in self.seeds if not is_valid_seed(s)]
        check(not bad, f"seeds must be integers in [0, 2**63 - 1], got {bad}")


@dataclass(frozen=True)
class Episode:
    task: str
    seed: int
    instruction: str
    max_episode_steps: int


def plan_episodes(params: SimBridgeParams) -> tuple[list[Episode], Any]:
    """The (task, seed) list in ``evaluate`` order, and the suite it came from."""
    from latentstack.sim.suites import load_suite

    suite = load_suite(params.suite)
    specs = [suite.task(t) for t in params.tasks] if params.tasks else list(suite.tasks)
    if params.seeds:
        seeds = [int(s) for s in params.seeds]
    else:
        pool = list(suite.seeds[params.split])
        if len(pool) < params.episodes_per_task:
            raise ValueError(f"suite {suite.name} has {len(pool)} {params.split} seeds, asked {params.episodes_per_task}")
        seeds = pool[: params.episodes_per_task]
    eps = [Episode(s.name, seed, s.instruction, params.max_episode_steps or s.max_episode_steps)
           for s in specs for seed in seeds]
    return eps, suite


EnvFactory = Callable[..., Any]


class SimBridgeCore(NodeCore):
    """Env in, ROS topics out (see module docstring). Call :meth:`start` once subscribers exist."""

    default_name: ClassVar[str] = "sim_bridge"
    Params: ClassVar[type] = SimBridgeParams

    def __init__(self, transport: Any, params: SimBridgeParams | None = None, *,
                 env_factory: EnvFactory | None = None, episodes: Sequence[Episode] | None = None,
                 name: str | None = None, namespace: str = "/") -> None:
        super().__init__(transport, params, name=name, namespace=namespace)
        p: SimBridgeParams = self.params
        if episodes is None:
            episodes, suite = plan_episodes(p)
            self.image_size = p.image_size or suite.image_size
            self.camera = p.camera or suite.camera
        else:
            self.image_size = p.image_size or 64
            self.camera = p.camera or "corner4"
        self.episodes: list[Episode] = list(episodes)
        if env_factory is None:
            from latentstack.sim.metaworld_env import MetaWorldLangEnv

            env_factory = MetaWorldLangEnv
        self.env_factory = env_factory
        self.results: list[EpisodeResult] = []
        self.env: Any = None
        self._env_task: str | None = None
        self._ep_index = -1
        self._episode: EpisodeState | None = None  # the shared per-episode bookkeeping (obs, t, success)
        self._awaiting = False
        self._last_sent_ns = 0
        self._latest_action: tuple[np.ndarray, int] | None = None
        self._last_applied: np.ndarray | None = None
        self._started = False
        self._instruction_sent: str | None = None
        self.low = np.full(p.action_dim, -1.0, np.float32)
        self.high = np.full(p.action_dim, 1.0, np.float32)
        # lockstep checks an answer's stamp against the awaited observation itself; free-running by age
        self.commands = CommandFilter(max_age_s=None if p.lockstep else p.action_timeout_s,
                                      max_future_s=None if p.lockstep else 0.0,
                                      session_timeout_s=p.session_timeout_s)
        self.episode_session = CommandSequencer().session  # tells this run's episode events from replays

        self.image_pub = self.create_publisher(p.image_topic, IMAGE_TYPE, "sensor_data")
        self.info_pub = self.create_publisher(p.camera_info_topic, CAMERA_INFO_TYPE, "sensor_data")
        self.state_pub = self.create_publisher(p.state_topic, JOINT_STATE_TYPE, "sensor_data")
        self.instruction_pub = self.create_publisher(p.instruction_topic, INSTRUCTION_TYPE, INSTRUCTION_QOS)
        self.episode_pub = self.create_publisher(p.episode_topic, EPISODE_TYPE, EPISODE_QOS)
        self.clock_pub = self.create_publisher(CLOCK_TOPIC, CLOCK_TYPE, CLOCK_QOS) if p.publish_clock else None
        self.tf_static_pub = self.create_publisher("/tf_static", TF_TYPE, TF_STATIC_QOS)
        self._tf_sent: tuple[int, str] | None = None  # (env, camera) whose camera pose went out on /tf_static
        self.create_subscription(p.action_topic, ACTION_TYPE, self._on_action, "default",
                                 allowed_publishers=p.action_publishers)
        if p.lockstep:
            self.create_timer(p.republish_s, self._republish)
        else:
            self.create_timer(1.0 / p.rate_hz, self._free_run_step)

    # -- properties
    @property
    def _obs(self) -> Any:
        return None if self._episode is None else self._episode.obs

    @property
    def _t(self) -> int:
        return 0 if self._episode is None else self._episode.t

    @property
    def finished(self) -> bool:
        return self._started and self._ep_index >= len(self.episodes)

    @property
    def current(self) -> Episode | None:
        return self.episodes[self._ep_index] if 0 <= self._ep_index < len(self.episodes) else None

    # -- episodes
    def start(self) -> None:
        """Begins the first episode (publishes its start event and first observation)."""
        if self._started:
            return
        self._started = True
        self._next_episode()

    def _make_env(self, ep: Episode) -> Any:
        if self.env is not None and self._env_task == ep.task and self.env.max_episode_steps == ep.max_episode_steps:
            return self.env
        self._close_env()
        self.env = self.env_factory(ep.task, image_size=self.image_size, camera=self.camera,
                                    max_episode_steps=ep.max_episode_steps, instruction=ep.instruction)
        self._env_task = ep.task
        return self.env

    def _close_env(self) -> None:
        if self.env is not None and hasattr(self.env, "close"):
            self.env.close()
        self.env = None
        self._env_task = None

    def _reset_episode(self, ep: Episode) -> Any:
        """The episode's first observation, or None (logged, counted) when its seed or env reset is refused."""
        if not is_valid_seed(ep.seed):
            self.counters["episodes_refused"] += 1
            self.log.error("[%s] refused episode %d (%s): seed %r is not an integer in [0, 2**63 - 1]",
                           self.name, self._ep_index, ep.task, ep.seed)
            return None
        try:
            obs, _ = self._make_env(ep).reset(seed=ep.seed)
        except Exception as exc:  # noqa: BLE001 - one bad episode must not stall the whole run
            self.counters["episodes_refused"] += 1
            self.log.error("[%s] refused episode %d (%s, seed %r): env reset raised %s: %s",
                           self.name, self._ep_index, ep.task, ep.seed, type(exc).__name__, exc)
            self._close_env()  # a half-reset env is not reused
            return None
        return obs

    def _next_episode(self) -> None:
        while True:  # a loop, not recursion: any number of refused episodes in a row
            self._ep_index += 1
            ep = self.current
            if ep is None:
                self._awaiting = False
                self._close_env()
                self.log.info("[%s] all %d episodes done", self.name, len(self.episodes))
                return
            obs = self._reset_episode(ep)
            if obs is not None:
                break
        self._episode = EpisodeState(obs)
        self._latest_action = None
        self._last_applied = None
        self.episode_pub.publish(episode_event_msg(
            EpisodeEvent("start", ep.task, ep.seed, ep.instruction, index=self._ep_index,
                         session=self.episode_session, source=self.fq_name), self.transport.distro))
        if ep.instruction != self._instruction_sent:
            self.instruction_pub.publish(msgs.string_msg(ep.instruction, self.transport.distro))
            self._instruction_sent = ep.instruction
        self._publish_observation()

    def _end_episode(self) -> None:
        ep = self.current
        assert ep is not None
        assert self._episode is not None
        res = self._episode.result(getattr(self.env, "task", ep.task), ep.seed)
        self.results.append(res)
        self.episode_pub.publish(episode_event_msg(
            EpisodeEvent("end", ep.task, ep.seed, ep.instruction, success=res.success, length=res.length,
                         index=self._ep_index, session=self.episode_session, source=self.fq_name),
            self.transport.distro))
        self.log.info("[%s] episode %d %s seed %d: %s in %d steps", self.name, self._ep_index, ep.task, ep.seed,
                      "success" if res.success else "failure", res.length)
        self._next_episode()

    # -- observations
    def stamp(self) -> int:
        return round(self._t * self.params.step_dt_s * 1e9)

    def _camera_info(self, stamp: int, h: int, w: int) -> Any:
        fovy = 45.0  # non-MuJoCo envs (tests): a default field of view
        model = getattr(self.env, "model", None)
        if model is not None and hasattr(model, "cam_fovy"):
            import mujoco

            cam = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, self.camera)
            if cam >= 0:
                fovy = float(model.cam_fovy[cam])
        return msgs.camera_info_from_fovy(w, h, fovy, stamp, self.params.frame_id, self.transport.distro)

    def _publish_camera_tf(self, stamp: int) -> None:
        """``world_frame -> frame_id`` (the camera's optical frame: x right, y down, z forward) on /tf_static, once
        per env and camera; MuJoCo envs only (a camera looks along its -z with y up)."""
        key = (id(self.env), self.camera)
        model, data = getattr(self.env, "model", None), getattr(self.env, "data", None)
        if self._tf_sent == key or model is None or data is None or not hasattr(model, "cam_fovy"):
            return
        import mujoco
        from scipy.spatial.transform import Rotation

        cam = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, self.camera)
        if cam < 0:
            return
        rot = np.asarray(data.cam_xmat[cam], np.float64).reshape(3, 3) @ np.diag([1.0, -1.0, -1.0])
        quat = Rotation.from_matrix(rot).as_quat()  # x, y, z, w
        d, p = self.transport.distro, self.params
        tf = transform_stamped(p.world_frame, p.frame_id, stamp, data.cam_xpos[cam], quat, d)
        self.tf_static_pub.publish(tf_message([tf], d))
        self._tf_sent = key

    def _publish_observation(self) -> None:
        assert self._obs is not None
        p, d = self.params, self.transport.distro
        stamp = self.stamp()
        img = np.asarray(self._obs["image"])
        state = np.asarray(self._obs["state"], dtype=np.float32).reshape(-1)
        if state.size != len(p.joint_names):
            raise ValueError(f"env state has {state.size} values, joint_names has {len(p.joint_names)}")
        if self.clock_pub is not None:  # before the observation: a use_sim_time policy node is at its stamp
            self.clock_pub.publish(msgs.new(CLOCK_TYPE, d, clock=msgs.ns_to_time(stamp, d)))
        self._publish_camera_tf(stamp)
        self.info_pub.publish(self._camera_info(stamp, img.shape[0], img.shape[1]))
        self.image_pub.publish(msgs.image_to_msg(img, "rgb8", stamp, p.frame_id, d))
        self.state_pub.publish(msgs.joint_state(p.joint_names, state.astype(np.float64), stamp=stamp, distro=d))
        self._awaiting = True
        self._last_sent_ns = self.now_ns()

    def _republish(self) -> None:
        if not self._awaiting or self._obs is None:
            return
        if self.now_ns() - self._last_sent_ns >= int(self.params.republish_s * 1e9):
            self.counters["republished"] += 1
            self._publish_observation()

    # -- actions
    def _on_action(self, msg: Any) -> None:
        cmd = decode_action_command(msg, self.params.action_dim)  # MessageValueError: logged, counted, dropped
        reason = self.commands.check(cmd, self.now_ns(), reference_stamp_ns=self.stamp())
        if reason is not None:
            self.warn(f"command_{reason}", "refused action command (session %d, sequence %d, stamp %d ns): %s",
                      cmd.session, cmd.sequence, cmd.stamp_ns, reason.replace("_", " "))
            return
        a = np.clip(cmd.values, self.low, self.high)
        if not np.array_equal(a, cmd.values):
            self.warn("action_clamped", "action %s outside [-1, 1]; clamped", np.round(cmd.values, 3).tolist())
        if self.params.lockstep:
            if cmd.is_hold:  # not the answer to this observation
                self.counters["watchdog_hold_ignored"] += 1
                return
            if not self._awaiting:
                self.counters["unexpected_action"] += 1
                return
            if cmd.stamp_ns != self.stamp():  # answers some other observation (a late or forged one)
                self.warn("command_stale", "refused action stamped %d ns: the awaited observation is stamped %d ns",
                          cmd.stamp_ns, self.stamp())
                return
            self._step(a)
        else:
            self._latest_action = (a, self.now_ns())

    def _hold(self) -> np.ndarray:
        a = np.zeros(self.params.action_dim, np.float32)
        if self._last_applied is not None:
            a[self.params.motion_dims:] = self._last_applied[self.params.motion_dims:]
        return a

    def _free_run_step(self) -> None:
        if not self._started or self.finished or self._obs is None:
            return
        act = self._latest_action
        if act is None or self.now_ns() - act[1] > int(self.params.action_timeout_s * 1e9):
            self.counters["hold_steps"] += 1
            a = self._hold()
        else:
            a = act[0]
        self._step(a)

    def _step(self, action: np.ndarray) -> None:
        self._awaiting = False
        assert self._episode is not None
        tr = self._episode.step(self.env, action)  # the rollout loop's step: same books as run_episode
        self._last_applied = action
        if tr.terminated or tr.truncated:
            self._end_episode()
        else:
            self._publish_observation()

    def close(self) -> None:
        self._close_env()
        super().close()
