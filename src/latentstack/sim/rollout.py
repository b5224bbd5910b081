"""The one rollout loop: an env stepped by a policy for one episode, with hooks for what each user needs.

Users: the evaluation harness (:func:`latentstack.sim.evaluation.run_episode`: latencies), demonstration
recording (:mod:`latentstack.sim.record`: frames, run on past the first success), COAST collection
(:mod:`latentstack.steering.collect`: latents tapped through :class:`TapLatents`). The event-driven sim
bridge node cannot own a loop (an action arrives as a message), so it shares the per-step bookkeeping,
:class:`EpisodeState`, which is what makes a closed loop through the node graph equal ``run_episode``.

Per episode, in this order::

    hooks.start(seed); obs = env.reset(seed=seed); reset(seed); hooks.on_reset(obs)
    repeat: action = act(obs) (timed); hooks.on_action(obs, action, seconds); EpisodeState.step(env, action);
            hooks.on_step(transition) -> True ends the episode
    until terminated (unless end_on_terminated=False), truncated, a hook's stop, ``steps_after_success``
    steps past the first success, or ``max_steps``; hooks.end(result) (also on an exception, with None)

Batched torch envs (KORR: ``N`` envs stepped in lockstep for a fixed number of steps, no per-env reset) have
their own loop, :func:`rollout_batched`: see its docstring for why it is not this one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "EpisodeResult",
    "EpisodeState",
    "LatencyRecorder",
    "RolloutHook",
    "TapLatents",
    "Transition",
    "rollout",
    "rollout_batched",
]


@dataclass(frozen=True)
class EpisodeResult:
    task: str
    seed: int
    success: bool
    length: int


@dataclass(frozen=True)
class Transition:
    t: int  # steps taken so far, this one included (1-based)
    obs: Any  # the observation the action was chosen on
    action: Any
    next_obs: Any
    reward: float
    terminated: bool
    truncated: bool
    info: dict


class EpisodeState:
    """One episode's bookkeeping: current observation, steps taken, success so far (``info["success"]``
    at any step), the first successful step. Shared by :func:`rollout` and the sim bridge node."""

    def __init__(self, obs: Any) -> None:
        self.obs = obs
        self.t = 0
        self.success = False
        self.first_success: int | None = None

    def step(self, env: Any, action: Any) -> Transition:
        next_obs, reward, terminated, truncated, info = env.step(action)
        self.t += 1
        tr = Transition(self.t, self.obs, action, next_obs, reward, bool(terminated), bool(truncated), info)
        self.obs = next_obs
        if bool(info.get("success", False)):
            self.success = True
            if self.first_success is None:
                self.first_success = self.t
        return tr

    def result(self, task: str, seed: int) -> EpisodeResult:
        return EpisodeResult(task=task, seed=int(seed), success=self.success, length=self.t)


class RolloutHook:
    """Base class of rollout hooks: override what you need (all no-ops here)."""

    def start(self, seed: int) -> None:
        """Before ``env.reset``."""

    def on_reset(self, obs: Any) -> None:
        """After the env and the policy were reset."""

    def on_action(self, obs: Any, action: Any, seconds: float) -> None:
        """After the policy chose ``action`` on ``obs`` in ``seconds`` (wall time), before the env steps."""

    def on_step(self, tr: Transition) -> bool | None:
        """After each env step; return True to end the episode here."""
        return None

    def end(self, result: EpisodeResult | None) -> None:
        """After the episode (``None`` when it raised)."""


class LatencyRecorder(RolloutHook):
    """Appends the wall time of every policy call to ``latencies_s``."""

    def __init__(self, latencies_s: list[float]) -> None:
        self.latencies_s = latencies_s

    def on_action(self, obs: Any, action: Any, seconds: float) -> None:
        self.latencies_s.append(seconds)


class TapLatents(RolloutHook):
    """Taps ``sites`` of ``model`` for the whole episode, env and policy reset included (as ``with Tap``
    around the episode); ``records`` holds the Tap's records of the last episode."""

    def __init__(self, model: Any, sites: Sequence[str], **tap_kwargs: Any) -> None:
        self.model, self.sites, self.tap_kwargs = model, list(sites), tap_kwargs
        self._tap: Any = None
        self.records: dict[str, list[Any]] = {}

    def start(self, seed: int) -> None:
        from latentstack.latent import Tap

        self._tap = Tap(self.model, self.sites, **self.tap_kwargs)
        self._tap.__enter__()

    def end(self, result: EpisodeResult | None) -> None:
        if self._tap is not None:
            self._tap.__exit__(None, None, None)
            self.records = self._tap.records
            self._tap = None


def rollout(
    env: Any,
    act: Callable[[Any], Any],
    seed: int,
    *,
    reset: Callable[[int], None] | None = None,
    hooks: Sequence[RolloutHook] = (),
    end_on_terminated: bool = True,
    steps_after_success: int | None = None,
    max_steps: int | None = None,
    task: str | None = None,
) -> EpisodeResult:
    """One closed-loop episode of ``env`` (gymnasium API, ``reset(seed=)``) driven by ``act(obs)``.

    ``reset(seed)`` resets the policy after the env (a policy's noise is seeded by the episode seed).
    ``end_on_terminated=False`` runs on after ``terminated`` (MetaWorld terminates at success); with
    ``steps_after_success=k`` the episode ends ``k`` steps after the first success; ``max_steps`` ends it
    after that many steps (0: reset only). ``task`` defaults to ``env.task``."""
    for h in hooks:
        h.start(seed)
    result: EpisodeResult | None = None
    try:
        obs, _ = env.reset(seed=seed)
        if reset is not None:
            reset(seed)
        for h in hooks:
            h.on_reset(obs)
        ep = EpisodeState(obs)
        while max_steps is None or ep.t < max_steps:
            t0 = time.perf_counter()
            action = act(ep.obs)
            seconds = time.perf_counter() - t0
            for h in hooks:
                h.on_action(ep.obs, action, seconds)
            tr = ep.step(env, action)
            stop = False
            for h in hooks:
                stop = bool(h.on_step(tr)) or stop
            if stop or tr.truncated or (end_on_terminated and tr.terminated):
                break
            if steps_after_success is not None and ep.first_success is not None \
                    and ep.t >= ep.first_success + steps_after_success:
                break
        result = ep.result(task if task is not None else env.task, seed)
        return result
    finally:
        for h in hooks:
            h.end(result)


def rollout_batched(
    env: Any,
    seed: int,
    num_steps: int,
    act: Callable[[Any], Any],
    on_step: Callable[[Any, Any, Any, Any, Any], None] | None = None,
    reset: Callable[[int], None] | None = None,
) -> tuple[Any, Any]:
    """``num_steps`` lockstep steps of a batched env (KORR's ``BatchedEnv``: ``reset(seed) -> obs``,
    ``step(action) -> (obs, reward, done, info)``, tensors with a leading env axis).

    Why not :func:`rollout`: all ``N`` envs reset together, run a fixed horizon and are never reset per env
    (an env that finished keeps stepping, flagged by ``done``), and PPO needs every transition in tensors.
    The per-step contract is the same: ``action = act(obs)`` then one env step, then
    ``on_step(obs, action, next_obs, reward, done)``. Returns ``(last_obs, last_done)``."""
    obs = env.reset(seed)
    if reset is not None:
        reset(seed)
    done = None
    for _ in range(num_steps):
        action = act(obs)
        next_obs, reward, done, _ = env.step(action)
        if on_step is not None:
            on_step(obs, action, next_obs, reward, done)
        obs = next_obs
    return obs, done
