"""The one rollout loop: hook order, end rules, latencies, tapped latents, the batched form."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from latentstack.sim.evaluation import run_episode
from latentstack.sim.rollout import (
    EpisodeState,
    LatencyRecorder,
    RolloutHook,
    TapLatents,
    rollout,
    rollout_batched,
)


class CountEnv:
    """x += action each step; success (and terminated) once x >= goal; truncated at max_episode_steps."""

    task = "count"

    def __init__(self, goal: float = 3.0, max_episode_steps: int = 8) -> None:
        self.goal, self.max_episode_steps = goal, max_episode_steps

    def reset(self, seed):
        self.x, self.t = float(seed % 2), 0
        return {"x": self.x}, {}

    def step(self, action):
        self.x += float(action)
        self.t += 1
        success = self.x >= self.goal
        return {"x": self.x}, float(success), success, self.t >= self.max_episode_steps, {"success": success}


class Log(RolloutHook):
    def __init__(self, stop_at: int | None = None) -> None:
        self.events: list[tuple] = []
        self.stop_at = stop_at

    def start(self, seed):
        self.events.append(("start", seed))

    def on_reset(self, obs):
        self.events.append(("reset", obs["x"]))

    def on_action(self, obs, action, seconds):
        assert seconds >= 0
        self.events.append(("action", obs["x"], action))

    def on_step(self, tr):
        self.events.append(("step", tr.t, tr.obs["x"], tr.next_obs["x"], tr.terminated, tr.truncated))
        return self.stop_at is not None and tr.t >= self.stop_at

    def end(self, result):
        self.events.append(("end", None if result is None else (result.success, result.length)))


def test_order_of_calls_and_end_at_success():
    log = Log()
    resets = []
    res = rollout(CountEnv(), lambda obs: 1.0, seed=0, reset=resets.append, hooks=[log])
    assert resets == [0]
    assert (res.task, res.seed, res.success, res.length) == ("count", 0, True, 3)
    assert log.events == [
        ("start", 0), ("reset", 0.0),
        ("action", 0.0, 1.0), ("step", 1, 0.0, 1.0, False, False),
        ("action", 1.0, 1.0), ("step", 2, 1.0, 2.0, False, False),
        ("action", 2.0, 1.0), ("step", 3, 2.0, 3.0, True, False),
        ("end", (True, 3)),
    ]


def test_end_rules():
    env = CountEnv()
    assert rollout(env, lambda o: 0.0, seed=0).length == 8  # never succeeds: truncated
    # run on past terminate-at-success for 2 more steps (demo recording)
    assert rollout(env, lambda o: 1.0, seed=0, end_on_terminated=False, steps_after_success=2).length == 5
    # ... but truncation still ends it
    assert rollout(env, lambda o: 1.0, seed=0, end_on_terminated=False, steps_after_success=20).length == 8
    # max_steps: a fixed number of steps (calibration frames), 0 = the reset frame only
    log = Log()
    assert rollout(env, lambda o: 1.0, seed=0, end_on_terminated=False, max_steps=4, hooks=[log]).length == 4
    assert rollout(env, lambda o: 1.0, seed=0, max_steps=0, hooks=[log]).length == 0
    assert log.events[-3:] == [("start", 0), ("reset", 0.0), ("end", (False, 0))]
    # a hook may end it early (e.g. stop on a condition of its own)
    res = rollout(env, lambda o: 0.0, seed=1, hooks=[Log(stop_at=4)])
    assert (res.length, res.success) == (4, False)


def test_hooks_end_even_when_the_policy_raises():
    log = Log()

    def bad(obs):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        rollout(CountEnv(), bad, seed=0, hooks=[log])
    assert log.events[-1] == ("end", None)


class SeededPolicy:
    def reset(self, seed=None):
        self.rng = np.random.default_rng(seed)

    def select_action(self, obs):
        return float(self.rng.uniform(0.0, 1.0))


def test_run_episode_is_the_rollout_with_latencies():
    env, lat = CountEnv(max_episode_steps=6), []
    a = run_episode(env, SeededPolicy(), 7, lat)
    p = SeededPolicy()
    more = []
    b = rollout(env, p.select_action, 7, reset=lambda s: p.reset(seed=s), hooks=[LatencyRecorder(more)])
    assert a == b and len(lat) == a.length == len(more)


def test_episode_state_is_the_loops_bookkeeping():
    env = CountEnv()
    obs, _ = env.reset(seed=0)
    ep = EpisodeState(obs)
    for _ in range(4):
        tr = ep.step(env, 1.0)
    assert (ep.t, ep.success, ep.first_success, tr.terminated) == (4, True, 3, True)
    assert ep.result("count", 0) == rollout(env, lambda o: 1.0, 0, end_on_terminated=False,
                                            steps_after_success=1)


class TinyModel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 2)

    def latent_sites(self):
        from latentstack.latent import Site

        return {"hidden": Site("layer")}

    def reset(self, seed=None):
        pass

    def select_action(self, obs):
        with torch.no_grad():
            return float(self.layer(torch.tensor([[obs["x"]]]))[0, 0].abs())


def test_tap_latents_records_one_episode():
    torch.manual_seed(0)
    model = TinyModel()
    tap = TapLatents(model, ["hidden"])
    res = run_episode(CountEnv(), model, 0, hooks=[tap])
    assert len(tap.records["hidden"]) == res.length
    assert not model.layer._forward_hooks  # the Tap is closed after the episode


class BatchEnv:
    num_envs = 3

    def reset(self, seed):
        self.x = torch.full((3,), float(seed))
        return self.x.clone()

    def step(self, a):
        self.x = self.x + a
        return self.x.clone(), a * 2, self.x > 5, {}


def test_rollout_batched_steps_in_lockstep():
    seen, resets = [], []
    last, done = rollout_batched(BatchEnv(), 1, 4, lambda o: torch.ones(3),
                                 lambda o, a, n, r, d: seen.append((o[0].item(), n[0].item(), r[0].item())),
                                 reset=resets.append)
    assert resets == [1] and seen == [(1.0, 2.0, 2.0), (2.0, 3.0, 2.0), (3.0, 4.0, 2.0), (4.0, 5.0, 2.0)]
    assert torch.equal(last, torch.full((3,), 5.0)) and not done.any()
