"""Policy node core: synchronized observations -> Policy -> clamped actions, with a watchdog.

Inputs: ``camera/image_raw`` (Image) + ``joint_states`` (JointState) paired by header stamp,
``instruction`` (String) and ``episode`` events (start => ``policy.reset(seed)``).
Output: ``action`` (``latentstack_msgs/ActionCommand``, ``action_dim`` values, stamped and sequenced:
see :mod:`.commands`). Episode events are taken only from ``episode_publishers`` (node names), and a
start event that does not advance its publisher session's episode index (a replay) is refused.
Images larger than ``max_image_width`` x ``max_image_height`` are refused from their header, before
any pixel is converted or reaches the policy.

Two triggers:

- ``observation`` (lockstep): exactly one answer per new synchronized observation. An
  observation whose stamp is not newer than the last one acted on waits for the next
  episode-start event, so an episode's first frame is never answered by the previous
  episode's policy state, on any transport. Watchdog: when no observation was answered for
  longer than ``watchdog_timeout_s`` (none arrived, or none could be acted on, e.g. stamps that
  went backwards or too far ahead), the node publishes the hold action, checked every half timeout.
- ``timer``: one action every ``1 / control_rate_hz`` s from the latest observation; when
  image or state is older than ``watchdog_timeout_s`` (or missing) the node publishes the
  hold action instead (zero motion, gripper kept, by default).

The node always answers: every tick (timer) or observation (lockstep) gets either a valid
clamped action or the hold action, never nothing. Policy outputs that are non-finite or of the
wrong size, and policies that raise, are answered with the hold action (logged rate-limited,
counted in ``bad_policy_output`` / ``policy_error``). Watchdog holds are published as
``KIND_WATCHDOG_HOLD`` stamped with the node clock (see :mod:`.interfaces`: a lockstep sim ignores
them, a robot applies them); answers are ``KIND_ACTION`` stamped with the observation they answer.
All actions are clamped to ``[action_low, action_high]``.

Bounded clock skew: an image or joint state stamped more than ``max_clock_skew_s`` ahead of the
node's clock is refused (logged rate-limited, counted in ``future_stamp``), so one bogus stamp
(say, from 2038) cannot become the "last stamp acted on" and freeze the lockstep policy until the
next episode. Stamps in the past are fine (a sim stamps its own sim time from 0).

Steering (COAST), quantization (QuantVLA) and residual (KORR) switches are parameters that are
validated here and handed to adapters registered with :func:`register_policy_adapter`; the methods
themselves land in later issues, and until an adapter is registered enabling a switch fails at
construction (never silently).
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from latentstack import msgs
from latentstack.policies.async_chunks import AGGREGATIONS, ThreadedChunkExecutor, VLAChunker
from latentstack.policies.protocol import Policy

from .base import (
    NodeCore,
    NodeParams,
    ParameterError,
    available_device,
    check,
    check_device_param,
    check_finite,
    check_publisher_list,
    params_from_mapping,
    params_to_dict,
)
from .commands import KIND_ACTION, KIND_WATCHDOG_HOLD, CommandSequencer, action_command_msg
from .interfaces import (
    ACTION_TYPE,
    EPISODE_QOS,
    EPISODE_TYPE,
    IMAGE_TYPE,
    INSTRUCTION_QOS,
    INSTRUCTION_TYPE,
    JOINT_STATE_TYPE,
    EpisodeGate,
    decode_episode_event,
    is_valid_seed,
)

__all__ = [
    "ADAPTER_KINDS",
    "PolicyNodeCore",
    "PolicyNodeParams",
    "apply_policy_adapters",
    "register_policy_adapter",
    "resolve_policy_path",
]

TRIGGERS = ("observation", "timer")
HOLD_MODES = ("zero_motion", "zeros", "last")
QUANT_MODES = ("none", "w8a8", "w4a8")
ADAPTER_KINDS = ("quantization", "steering", "residual")  # the order they are applied in

PolicyAdapter = Callable[[Any, "PolicyNodeParams"], Any]
POLICY_ADAPTERS: dict[str, PolicyAdapter] = {}


# Built-in adapters, imported only when a node enables them (the robot-side node without the
# steering/KORR stacks never imports them). ``register_policy_adapter`` overrides these.
DEFAULT_ADAPTERS: dict[str, str] = {
    "steering": "latentstack.steering.node_adapter:steering_adapter",
    "residual": "latentstack.koopman.node_adapter:residual_adapter",
}


def _default_adapter(kind: str) -> PolicyAdapter | None:
    import importlib

    target = DEFAULT_ADAPTERS.get(kind)
    if target is None:
        return None
    module, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return None


def register_policy_adapter(kind: str, adapter: PolicyAdapter, *, overwrite: bool = False) -> None:
    """Hook for the COAST / QuantVLA / KORR issues: ``adapter(policy, params) -> policy``."""
    if kind not in ADAPTER_KINDS:
        raise ValueError(f"unknown adapter kind {kind!r}; choose one of {ADAPTER_KINDS}")
    if kind in POLICY_ADAPTERS and not overwrite:
        raise ValueError(f"a {kind} adapter is already registered")
    POLICY_ADAPTERS[kind] = adapter


@dataclass(frozen=True)
class PolicyNodeParams(NodeParams):
    """Parameters of the policy node (ROS parameter names are the field names)."""

    # checkpoint dir, "random:<dir>", a registered name, or ws://host:port (a policy served by `lstack serve`: each
    # chunk's first n_action_steps actions run open-loop, one request per chunk; reset(seed) reseeds its noise there)
    policy: str = "policies/vla_metaworld_mt6"
    image_topic: str = "camera/image_raw"
    state_topic: str = "joint_states"
    instruction_topic: str = "instruction"
    episode_topic: str = "episode"
    action_topic: str = "action"
    state_joints: tuple[str, ...] = ("hand_x", "hand_y", "hand_z", "gripper")  # () = message order
    default_instruction: str = ""
    trigger: str = "observation"  # observation (lockstep) | timer
    control_rate_hz: float = 80.0
    watchdog_timeout_s: float = 0.25
    sync_tolerance_s: float = 0.0  # max |stamp(image) - stamp(state)| of one observation
    max_clock_skew_s: float = 1.0  # observations stamped further ahead of the node clock are refused
    wait_for_episode: bool = False  # act only after an episode-start event (sim graphs)
    # who may send episode events: node names (relative to this node's namespace) / "guid:<hex>"; () = anyone
    episode_publishers: tuple[str, ...] = ("sim_bridge",)
    max_image_width: int = 1024  # larger images are refused before conversion (input cap)
    max_image_height: int = 1024
    action_dim: int = 4
    action_low: tuple[float, ...] = (-1.0,)  # one value (broadcast) or action_dim values
    action_high: tuple[float, ...] = (1.0,)
    hold_mode: str = "zero_motion"  # zero_motion (first motion_dims zeroed, rest kept) | zeros | last
    motion_dims: int = 3
    seed: int = 0  # noise seed until the first episode event
    torch_threads: int = 1
    device: str = "cpu"  # where the policy runs: cpu | cuda | cuda:N | mps (checked when the node starts)
    # switches for later issues (validated and passed to registered adapters)
    quantization: str = "none"  # none | w8a8 | w4a8 (QuantVLA)
    quant_calibration: str = ""  # calibration artifact path
    steering: str = ""  # conceptor artifact path (COAST); "" = off
    steering_beta: float = 0.0
    residual: str = ""  # residual head artifact path (KORR); "" = off
    # off | latest_only | weighted_average | rtc: infer the next chunk in a background thread while the current one
    # executes (latentstack.policies.async_chunks.ThreadedChunkExecutor; local chunk policies, no adapters)
    async_chunks: str = "off"

    def __post_init__(self) -> None:
        check(bool(self.policy), "parameter 'policy' must name a checkpoint, 'random:<dir>' or a registry name")
        check(self.trigger in TRIGGERS, f"trigger must be one of {TRIGGERS}, got {self.trigger!r}")
        check(self.hold_mode in HOLD_MODES, f"hold_mode must be one of {HOLD_MODES}, got {self.hold_mode!r}")
        check(self.quantization in QUANT_MODES, f"quantization must be one of {QUANT_MODES}, got {self.quantization!r}")
        for name in ("control_rate_hz", "watchdog_timeout_s", "sync_tolerance_s", "max_clock_skew_s",
                     "steering_beta"):
            check_finite(name, getattr(self, name))
        check(self.control_rate_hz > 0, f"control_rate_hz must be > 0, got {self.control_rate_hz}")
        check(self.watchdog_timeout_s > 0, f"watchdog_timeout_s must be > 0, got {self.watchdog_timeout_s}")
        check(self.sync_tolerance_s >= 0, f"sync_tolerance_s must be >= 0, got {self.sync_tolerance_s}")
        check(self.max_clock_skew_s >= 0, f"max_clock_skew_s must be >= 0, got {self.max_clock_skew_s}")
        check(self.action_dim >= 1, f"action_dim must be >= 1, got {self.action_dim}")
        check(0 <= self.motion_dims <= self.action_dim, f"motion_dims must be in [0, action_dim], got {self.motion_dims}")
        check(is_valid_seed(self.seed), f"seed must be an integer in [0, 2**63 - 1], got {self.seed!r}")
        check(self.torch_threads >= 1, f"torch_threads must be >= 1, got {self.torch_threads}")
        check(1 <= self.max_image_width <= 16384 and 1 <= self.max_image_height <= 16384,
              f"max_image_width / max_image_height must be in [1, 16384], got {self.max_image_width} x "
              f"{self.max_image_height}")
        check_publisher_list("episode_publishers", self.episode_publishers)
        check_device_param(self.device)
        lo, hi = self.bounds()
        check(bool(np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))), "action bounds must be finite")
        check(bool(np.all(lo <= hi)), f"action_low {tuple(lo)} must be <= action_high {tuple(hi)}")
        check(self.steering_beta >= 0, f"steering_beta must be >= 0, got {self.steering_beta}")
        check(self.steering_beta == 0 or bool(self.steering), "steering_beta > 0 needs a 'steering' artifact")
        check(not self.quant_calibration or self.quantization != "none",
              "quant_calibration is set but quantization is 'none'")
        check(self.async_chunks in ("off", *AGGREGATIONS),
              f"async_chunks must be 'off' or one of {AGGREGATIONS}, got {self.async_chunks!r}")
        check(self.async_chunks == "off" or not (self.enabled_adapters() or is_remote_spec(self.policy)),
              "async_chunks needs a local chunk policy without quantization / steering / residual adapters")

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        def vec(v: tuple[float, ...], name: str) -> np.ndarray:
            a = np.asarray(v, dtype=np.float32).reshape(-1)
            check(a.size in (1, self.action_dim), f"{name} needs 1 or action_dim={self.action_dim} values, got {a.size}")
            return np.broadcast_to(a, (self.action_dim,)).copy()

        return vec(self.action_low, "action_low"), vec(self.action_high, "action_high")

    def enabled_adapters(self) -> list[str]:
        on = {"quantization": self.quantization != "none", "steering": bool(self.steering),
              "residual": bool(self.residual)}
        return [k for k in ADAPTER_KINDS if on[k]]


def is_remote_spec(spec: str) -> bool:
    """``ws://host:port`` / ``wss://...``: a policy served by ``lstack serve`` (see :mod:`latentstack.serving`)."""
    return spec.startswith(("ws://", "wss://"))


def resolve_policy_path(spec: str) -> str:
    """Relative checkpoint paths: the cwd first, then the checkout / installed data (``random:`` kept)."""
    if is_remote_spec(spec):
        return spec
    if spec.startswith("random:"):
        return "random:" + resolve_policy_path(spec[len("random:"):])
    p = Path(spec)
    if p.is_absolute() or p.exists() or os.sep not in spec and "/" not in spec:  # "vla": a registered name
        return spec
    from latentstack.core.paths import resolve_path

    cand = resolve_path(p)
    return str(cand) if cand.exists() else spec


def apply_policy_adapters(policy: Any, params: PolicyNodeParams) -> Any:
    """Applies the enabled quantization -> steering -> residual adapters; fails loudly if one is missing."""
    for path_param in ("steering", "residual", "quant_calibration"):
        v = getattr(params, path_param)
        if v and not Path(v).exists():  # artifacts are folders (config.json + tensors)
            raise FileNotFoundError(f"parameter {path_param!r}: no such artifact {v}")
    for kind in params.enabled_adapters():
        adapter = POLICY_ADAPTERS.get(kind) or _default_adapter(kind)
        if adapter is None:
            raise NotImplementedError(
                f"policy node: '{kind}' is enabled but no {kind} adapter is registered; the method "
                "(quantization: QuantVLA, steering: COAST, residual: KORR) lands in a later issue"
            )
        policy = adapter(policy, params)
    return policy


def load_policy(params: PolicyNodeParams) -> Policy:
    if is_remote_spec(params.policy):
        # ws://host:port: the model runs in `lstack serve`; this side needs numpy/msgpack/websockets only (no torch)
        from latentstack.serving.client import RemotePolicy

        if params.enabled_adapters():
            raise ParameterError(f"parameter 'policy' {params.policy!r} is a remote policy: quantization / steering / "
                                 "residual run where the model is (serve such an artifact), not in this node")
        return RemotePolicy(params.policy)
    import torch

    from latentstack.policies.factory import make_policy

    device = available_device(params.device)  # a clear ParameterError before anything loads
    torch.set_num_threads(params.torch_threads)
    policy = make_policy(resolve_policy_path(params.policy), device=device)
    if hasattr(policy, "eval"):
        policy.eval()
    return policy


class PolicyNodeCore(NodeCore):
    """Observations in, actions out (see module docstring)."""

    default_name: ClassVar[str] = "policy_node"
    Params: ClassVar[type] = PolicyNodeParams

    def __init__(self, transport: Any, params: PolicyNodeParams | None = None, *, policy: Policy | None = None,
                 name: str | None = None, namespace: str = "/") -> None:
        super().__init__(transport, params, name=name, namespace=namespace)
        p: PolicyNodeParams = self.params
        try:
            if policy is None:
                policy = load_policy(p)
            elif "torch" in sys.modules and isinstance(policy, sys.modules["torch"].nn.Module):
                sys.modules["torch"].set_num_threads(p.torch_threads)  # injected torch policy: same rule
            self.policy = apply_policy_adapters(policy, p)
            if p.async_chunks != "off":
                self.policy = ThreadedChunkExecutor(VLAChunker(self.policy), aggregate=p.async_chunks)
        except BaseException:
            self.close()  # leave the transport as it was (no half-registered node)
            raise
        self.low, self.high = p.bounds()
        self.policy.reset(seed=p.seed)
        self._img: tuple[int, np.ndarray, int, int] | None = None  # (stamp, array, recv_ns, seq)
        self._state: tuple[int, np.ndarray, int, int] | None = None
        self._seq = 0
        self._acted_pair: tuple[int, int] | None = None
        self._last_stamp: int | None = None
        self._episode_started = not p.wait_for_episode
        self.instruction = p.default_instruction
        self.task = ""
        self.last_action: np.ndarray | None = None
        self.actions_published = 0
        self.holds_published = 0
        self._last_answer_ns = self.now_ns()  # when the last observation was answered (watchdog)
        self.sequencer = CommandSequencer()  # this run's command session and sequence numbers
        self.episode_gate = EpisodeGate()

        self.action_pub = self.create_publisher(p.action_topic, ACTION_TYPE, "default")
        self.create_subscription(p.image_topic, IMAGE_TYPE, self._on_image, "sensor_data")
        self.create_subscription(p.state_topic, JOINT_STATE_TYPE, self._on_state, "sensor_data")
        self.create_subscription(p.instruction_topic, INSTRUCTION_TYPE, self._on_instruction, INSTRUCTION_QOS)
        self.create_subscription(p.episode_topic, EPISODE_TYPE, self._on_episode, EPISODE_QOS,
                                 allowed_publishers=p.episode_publishers)
        if p.trigger == "timer":
            self.create_timer(1.0 / p.control_rate_hz, self._on_timer)
        else:  # lockstep watchdog: a silent upstream must not leave the last action running
            self.create_timer(p.watchdog_timeout_s / 2, self._on_watchdog)

    def close(self) -> None:
        super().close()
        stop = getattr(self.__dict__.get("policy"), "close", None)  # async chunks: stop the inference thread
        if isinstance(self.__dict__.get("policy"), ThreadedChunkExecutor) and stop is not None:
            stop()

    # -- run-time parameters (the rclpy wrapper forwards ROS parameter changes here)
    RUNTIME_PARAMETERS: ClassVar[tuple[str, ...]] = ("steering", "steering_beta")

    def on_set_parameters(self, changes: dict[str, Any]) -> tuple[bool, str]:
        """Apply run-time changes atomically; returns ``(accepted, reason)``, never raises.

        All requested values are coerced and validated together exactly like start-up values (so
        ``steering_beta='0.5'`` becomes 0.5 in both the parameter and the gate), then applied; a
        refused change leaves the parameters and the steering gate as they were.
        """
        try:
            return self._set_parameters(dict(changes))
        except Exception as exc:  # noqa: BLE001 - the ROS executor must never see an exception from here
            self.warn("param", "refused parameter change %s: %s: %s", changes, type(exc).__name__, exc)
            return False, f"{type(exc).__name__}: {exc}"

    def _set_parameters(self, changes: dict[str, Any]) -> tuple[bool, str]:
        other = sorted(set(changes) - set(self.RUNTIME_PARAMETERS))
        if other:
            return False, f"parameters {other} are fixed at start-up; only {list(self.RUNTIME_PARAMETERS)} change at run time"
        if not changes:
            return True, ""
        set_steering = getattr(self.policy, "set_steering", None)
        if set_steering is None:
            return False, "this node was started without a steering artifact (parameter 'steering'); restart it with one"
        old: PolicyNodeParams = self.params
        try:  # 1. validate the whole new parameter set before touching anything
            new = params_from_mapping(type(old), {**params_to_dict(old), **changes})
        except ParameterError as exc:
            self.warn("param", "refused parameter change %s: %s", changes, exc)
            return False, str(exc)
        try:  # 2. apply (the adapter validates the artifact and β before it swaps the gate)
            set_steering(new.steering, new.steering_beta)
        except Exception as exc:  # noqa: BLE001 - any adapter failure refuses the change
            self.warn("param", "refused parameter change %s: %s: %s", changes, type(exc).__name__, exc)
            try:  # an adapter that failed half-way is put back to the old values
                set_steering(old.steering, old.steering_beta)
            except Exception:  # logged with traceback; the refusal stands
                self.log.exception("[%s] could not restore steering %r beta %s", self.name, old.steering,
                                   old.steering_beta)
            return False, f"{type(exc).__name__}: {exc}"
        self.params = new
        return True, ""

    # -- inputs
    def _on_image(self, msg: Any) -> None:
        p = self.params
        if int(msg.width) > p.max_image_width or int(msg.height) > p.max_image_height:  # before any conversion
            raise msgs.MessageValueError(f"image {msg.width}x{msg.height} exceeds the input cap "
                                         f"{p.max_image_width}x{p.max_image_height} (max_image_width/height)")
        img = msgs.msg_to_image(msg, want="rgb8")
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise msgs.MessageValueError(f"policy needs an rgb8 image, got {msg.encoding} {img.shape}")
        if img.shape[0] < 1 or img.shape[1] < 1:  # an empty image makes the VLA raise: refuse it here
            raise msgs.MessageValueError(f"policy needs a non-empty image, got {img.shape[1]}x{img.shape[0]}")
        stamp, now = msgs.stamp_ns(msg), self.now_ns()
        if not self._stamp_ok(stamp, now, "image"):
            return
        self._seq += 1
        self._img = (stamp, img, now, self._seq)
        self._maybe_act()

    def _on_state(self, msg: Any) -> None:
        names = self.params.state_joints or None
        with np.errstate(over="ignore"):  # the overflow is refused just below
            pos = msgs.joint_state_positions(msg, names).astype(np.float32)
        if not np.all(np.isfinite(pos)):  # finite in float64 (e.g. 1e300) but not in the policy's float32
            raise msgs.MessageValueError("JointState positions overflow float32")
        stamp, now = msgs.stamp_ns(msg), self.now_ns()
        if not self._stamp_ok(stamp, now, "joint state"):
            return
        self._seq += 1
        self._state = (stamp, pos, now, self._seq)
        self._maybe_act()

    def _stamp_ok(self, stamp: int, now: int, what: str) -> bool:
        """False (logged, counted) for a stamp beyond the allowed clock skew ahead of the node clock."""
        ahead = stamp - now
        if ahead > int(self.params.max_clock_skew_s * 1e9):
            self.warn("future_stamp", "refused %s stamped %.3f s ahead of the node clock (max clock skew %s s)",
                      what, ahead / 1e9, self.params.max_clock_skew_s)
            return False
        return True

    def _on_instruction(self, msg: Any) -> None:
        self.instruction = str(msg.data)

    def _on_episode(self, msg: Any) -> None:
        ev = decode_episode_event(msg)
        if ev is None or ev.event != "start":
            return
        refused = self.episode_gate.check(ev)
        if refused is not None:
            self.warn("bad_episode", "refused episode start (task %r, seed %r): %s", ev.task, ev.seed, refused)
            return
        try:  # a seed the policy cannot take refuses the event; the node keeps its state and goes on
            self.policy.reset(seed=ev.seed)
        except Exception as exc:  # noqa: BLE001 - any reset failure refuses the event
            self.warn("bad_episode", "refused episode start (task %r, seed %r): policy reset raised %s: %s",
                      ev.task, ev.seed, type(exc).__name__, exc)
            return
        self.task = ev.task
        if ev.instruction:
            self.instruction = ev.instruction
        self._last_stamp = None
        self._episode_started = True
        self.counters["episodes"] += 1
        self._maybe_act()

    # -- acting
    def _synced(self) -> bool:
        if self._img is None or self._state is None:
            return False
        tol = int(self.params.sync_tolerance_s * 1e9)
        return abs(self._img[0] - self._state[0]) <= tol

    def _maybe_act(self) -> None:
        if self.params.trigger != "observation" or not self._episode_started or not self._synced():
            return
        assert self._img is not None and self._state is not None
        pair = (self._img[3], self._state[3])
        stamp = max(self._img[0], self._state[0])
        if pair == self._acted_pair:
            return
        if self._last_stamp is not None and stamp <= self._last_stamp:
            self.counters["waiting_for_episode"] += 1
            return
        self._act(stamp, pair)

    def _on_timer(self) -> None:
        now = self.now_ns()
        limit = int(self.params.watchdog_timeout_s * 1e9)
        if not self._episode_started or self._img is None or self._state is None:
            self._publish_hold("no observation yet")
            return
        age = now - min(self._img[2], self._state[2])
        if age > limit:
            self._publish_hold(f"observation is {age / 1e9:.3f} s old (> {self.params.watchdog_timeout_s} s)")
            return
        if not self._synced():
            self._publish_hold("image and joint state stamps differ")
            return
        self._act(max(self._img[0], self._state[0]), (self._img[3], self._state[3]))

    def _on_watchdog(self) -> None:
        """Lockstep mode: hold (every half timeout) while no observation was answered for ``watchdog_timeout_s``."""
        age = self.now_ns() - self._last_answer_ns
        if age > int(self.params.watchdog_timeout_s * 1e9):
            self._publish_hold(f"no observation answered for {age / 1e9:.3f} s (> {self.params.watchdog_timeout_s} s)")

    def observation(self) -> dict[str, Any]:
        assert self._img is not None and self._state is not None
        return {"image": self._img[1], "state": self._state[1], "instruction": self.instruction or self.task,
                "task": self.task}

    def _act(self, stamp: int, pair: tuple[int, int]) -> None:
        self._acted_pair = pair
        self._last_stamp = stamp
        try:
            action = np.asarray(self.policy.select_action(self.observation()), dtype=np.float32).reshape(-1)
        except Exception as exc:  # noqa: BLE001 - a policy failure is answered with the hold, never silence
            self.warn("policy_error", "policy raised %s: %s; holding", type(exc).__name__, exc)
            self._publish_hold(None, stamp)
            return
        finally:  # the watchdog counts from the answer: a slow policy is not mistaken for a silent upstream
            self._last_answer_ns = self.now_ns()
        if action.size != self.params.action_dim or not np.all(np.isfinite(action)):
            self.warn("bad_policy_output", "policy returned %s values (finite: %s); holding",
                      action.size, bool(np.all(np.isfinite(action))))
            self._publish_hold(None, stamp)
            return
        clamped = np.clip(action, self.low, self.high)
        if not np.array_equal(clamped, action):
            self.counters["clamped"] += 1
        self.last_action = clamped
        self._publish(clamped, KIND_ACTION, stamp)
        self.actions_published += 1

    def _publish(self, values: np.ndarray, kind: int, stamp: int) -> None:
        self.action_pub.publish(action_command_msg(values, kind, stamp, self.sequencer, self.fq_name,
                                                   self.transport.distro))

    def hold_action(self) -> np.ndarray:
        p = self.params
        if p.hold_mode == "zeros" or self.last_action is None:
            a = np.zeros(p.action_dim, np.float32)
        else:
            a = self.last_action.copy()
            if p.hold_mode == "zero_motion":
                a[: p.motion_dims] = 0.0
        return np.clip(a, self.low, self.high)

    def _publish_hold(self, reason: str | None, stamp: int | None = None) -> None:
        """The hold action: ``reason`` set = a watchdog hold (stamped with the node clock), None = the answer to
        the observation stamped ``stamp``."""
        if reason is not None:
            self.warn("stale_observation", "watchdog: %s; holding", reason)
            self._publish(self.hold_action(), KIND_WATCHDOG_HOLD, self.now_ns())
        else:
            assert stamp is not None
            self._publish(self.hold_action(), KIND_ACTION, stamp)
        self.holds_published += 1
