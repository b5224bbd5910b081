"""Ray evaluation (local cluster, 2 CPUs): the same paired outcomes, in the same order, as the in-process run."""
import functools
import os
import sys
import time

import numpy as np
import pytest

from latentstack.sim.evaluation import _shards, evaluate, evaluate_parallel
from latentstack.sim.suites import Suite, TaskSpec

ray = pytest.importorskip("ray")


class LineEnv:
    """1-D point that must reach x >= 1; the seed sets the start (as in test_evaluation.py)."""

    def __init__(self, task, image_size=8, camera="none", max_episode_steps=10, instruction=""):
        self.task, self.max_episode_steps = task, max_episode_steps

    def _obs(self):
        return {"image": np.zeros((8, 8, 3), np.uint8), "state": np.array([self.x], np.float32),
                "instruction": "go right", "task": self.task}

    def reset(self, seed):
        self.x, self.t = np.random.default_rng(seed).uniform(-1, 0), 0
        return self._obs(), {}

    def step(self, action):
        self.x += float(action[0])
        self.t += 1
        success = self.x >= 1.0
        return self._obs(), float(success), success, self.t >= self.max_episode_steps, {"success": success}

    def close(self):
        pass


class NoisyPolicy:
    """Random step sizes from the episode seed, scaled: outcomes depend on seed and condition."""

    def __init__(self, scale=0.4):
        self.scale = scale

    def reset(self, seed=None):
        self.rng = np.random.default_rng(seed)

    def select_action(self, obs):
        return np.array([self.rng.uniform(0.0, self.scale)], np.float32)

    def latent_sites(self):
        return {}


class WorkerEnvProbe(NoisyPolicy):
    """NoisyPolicy(0.4) inside a Ray worker set up as evaluate_parallel promises (one torch/OpenMP thread,
    MuJoCo's GL backend, not a fork of the driver); a policy that never moves anywhere else."""

    driver_pid = os.getpid()

    def select_action(self, obs):
        import torch

        # MKL_NUM_THREADS is set by ray_worker_env only (Ray itself sets OMP_NUM_THREADS for 1-CPU actors)
        ok = (os.environ.get("OMP_NUM_THREADS") == "1" == os.environ.get("MKL_NUM_THREADS")
              and bool(os.environ.get("MUJOCO_GL")) and torch.get_num_threads() == 1
              and os.getppid() != self.driver_pid)
        a = super().select_action(obs)
        return a if ok else np.zeros_like(a)


def make_conditions(scales, probe=False):
    out = {f"s{s}": functools.partial(NoisyPolicy, s) for s in scales}
    return {**out, "probe": functools.partial(WorkerEnvProbe, 0.4)} if probe else out


SUITE = Suite(name="line", tasks=(TaskSpec("line-a", "go right", 8), TaskSpec("line-b", "go right", 6),
                                  TaskSpec("line-c", "go right", 7)),
              seeds={"train": range(10), "select": range(10, 20), "test": range(20, 40)}, image_size=8, camera="none")


@pytest.fixture(scope="module")
def fakes_by_value():
    """The fakes live in this test module, which Ray workers cannot import: Ray sends them by value."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def _key(results):
    return {n: [(e.task, e.seed, e.success, e.length) for e in r.episodes] for n, r in results.items()}


def test_shards_cover_tasks_and_seeds_in_order():
    sh = _shards(["a", "b"], list(range(20, 27)), workers=2, chunk=3)
    assert sh == [("a", [20, 21, 22]), ("a", [23, 24, 25]), ("a", [26]),
                  ("b", [20, 21, 22]), ("b", [23, 24, 25]), ("b", [26])]
    assert sum(len(s) for _, s in _shards(["a", "b", "c"], list(range(9)), workers=2, chunk=None)) == 27


def test_ray_outcomes_equal_in_process(fakes_by_value, monkeypatch):
    """The one Ray start of this module: evaluate_parallel starts a local cluster (2 CPUs) and shuts it down."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert not ray.is_initialized()
    make = functools.partial(make_conditions, (0.5, 0.4))
    ref = evaluate(SUITE, make(), 7, progress=False, env_factory=LineEnv)
    t0 = time.perf_counter()
    par = evaluate_parallel(SUITE, functools.partial(make_conditions, (0.5, 0.4), probe=True), 7, workers=2,
                            progress=False, env_factory=LineEnv, chunk=3)
    print(f"ray evaluation incl. start-up {time.perf_counter() - t0:.1f} s")
    assert not ray.is_initialized()  # the cluster it started is shut down
    probe = _key(par).pop("probe")
    assert {k: v for k, v in _key(par).items() if k != "probe"} == _key(ref)
    assert probe == _key(ref)["s0.4"]  # the workers had the promised environment
    succ = [e.success for e in ref["s0.4"].episodes]
    assert 0 < sum(succ) < len(succ)  # both outcomes occur, so a seed mix-up would show
    assert _key(ref)["s0.5"] != _key(ref)["s0.4"]  # conditions differ: a condition mix-up would show
    assert len(par["s0.5"].latencies_s) == len(ref["s0.5"].latencies_s)  # one latency per policy call


def test_one_worker_runs_in_process(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    make = functools.partial(make_conditions, (0.4,))
    was = ray.is_initialized()
    res = evaluate_parallel(SUITE, make, 3, workers=1, progress=False, env_factory=LineEnv)
    assert ray.is_initialized() == was  # no Ray started for workers=1
    assert _key(res) == _key(evaluate(SUITE, make(), 3, progress=False, env_factory=LineEnv))
