"""The harness on a tiny deterministic env: pairing, determinism, report files."""
import json

import numpy as np

from latentstack.sim.evaluation import evaluate, outcome_table, write_report
from latentstack.sim.suites import Suite, TaskSpec


class LineEnv:
    """1-D point that must reach x >= 1; the seed sets the start. Success is reachable in <= 8 steps."""

    def __init__(self, task, image_size=8, camera="none", max_episode_steps=10, instruction=""):
        self.task = task
        self.max_episode_steps = max_episode_steps
        self.closed = False

    def _obs(self):
        return {"image": np.zeros((8, 8, 3), np.uint8), "state": np.array([self.x], np.float32),
                "instruction": "go right", "task": self.task}

    def reset(self, seed):
        self.x = np.random.default_rng(seed).uniform(-1, 0)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.x += float(action[0])
        self.t += 1
        success = self.x >= 1.0
        return self._obs(), float(success), success, self.t >= self.max_episode_steps, {"success": success}

    def close(self):
        self.closed = True


class NoisyPolicy:
    """Steps of random size: success depends on the seed, so pairing matters."""

    def reset(self, seed=None):
        self.rng = np.random.default_rng(seed)

    def select_action(self, obs):
        return np.array([self.rng.uniform(0.0, 0.4)], np.float32)

    def latent_sites(self):
        return {}


SUITE = Suite(
    name="line",
    tasks=(TaskSpec("line-a", "go right", 8), TaskSpec("line-b", "go right", 6)),
    seeds={"train": range(10), "select": range(10, 20), "test": range(20, 40)},
    image_size=8,
    camera="none",
)


def _run():
    return evaluate(SUITE, {"a": NoisyPolicy(), "b": NoisyPolicy()}, episodes_per_task=12, progress=False,
                    env_factory=LineEnv)


def test_same_seeds_identical_tables():
    r1, r2 = _run(), _run()
    assert outcome_table(r1) == outcome_table(r2)
    # Two identical policies on paired seeds give identical per-episode outcomes.
    assert [e.success for e in r1["a"].episodes] == [e.success for e in r1["b"].episodes]
    assert [e.seed for e in r1["a"].episodes][:12] == list(range(20, 32))
    succ = [e.success for e in r1["a"].episodes]
    assert 0 < sum(succ) < len(succ)  # the toy really has both outcomes


def test_report_files(tmp_path):
    res = _run()
    jp, pp = write_report(res, tmp_path, {"title": "t"})
    data = json.loads(jp.read_text())
    block = data["conditions"]["a"]["overall"]
    assert block["episodes"] == 24
    assert 0.0 <= block["ci_low"] <= block["success"] <= block["ci_high"] <= 1.0
    assert set(data["conditions"]["a"]["per_task"]) == {"line-a", "line-b"}
    assert pp.stat().st_size > 1000
