"""Suites as data: loading, the shipped suite, seed-range validation."""
import dataclasses

import pytest

from latentstack.core.paths import find_data
from latentstack.sim.suites import Suite, TaskSpec, load_suite

SEEDS = {"train": range(1000), "select": range(10000, 10100), "test": range(20000, 20100)}


def test_shipped_suite_loads():
    s = load_suite("metaworld_mt6")
    assert s.name == "metaworld_mt6"
    assert len(s.tasks) == 6 and all(isinstance(t, TaskSpec) for t in s.tasks)
    assert all(t.name.endswith("-v3") and t.instruction and 0 < t.max_episode_steps <= 200 for t in s.tasks)
    assert len({t.instruction for t in s.tasks}) == 6
    assert {k: (r.start, r.stop) for k, r in s.seeds.items()} == {
        "train": (0, 1000), "fit": (5000, 6000), "select": (10000, 10100), "test": (20000, 20100)}
    assert s.image_size == 64 and s.camera == "corner4"
    # by path too (the resolver's file, and the checkout-relative path from any cwd)
    assert load_suite(find_data("suites", "metaworld_mt6")) == s
    assert load_suite("sim/suites/metaworld_mt6.yaml") == s


def test_suite_is_frozen():
    s = load_suite("metaworld_mt6")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.name = "other"
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.tasks[0].max_episode_steps = 1


@pytest.mark.parametrize("bad", [
    {"train": range(100), "select": range(50, 150), "test": range(200, 300)},
    {"train": range(100), "select": range(100, 150), "test": range(99, 120)},
    {"train": range(500, 600), "select": range(10), "test": range(10)},
])
def test_overlapping_seed_ranges_raise(bad):
    with pytest.raises(ValueError, match="overlap"):
        Suite("x", (TaskSpec("reach-v3", "reach", 50),), bad)


def test_missing_or_empty_split_raises():
    with pytest.raises(ValueError):
        Suite("x", (TaskSpec("reach-v3", "reach", 50),), {"train": range(10), "test": range(10, 20)})
    with pytest.raises(ValueError):
        Suite("x", (TaskSpec("reach-v3", "reach", 50),), {**SEEDS, "select": range(5, 5)})


def test_yaml_overlap_raises_and_defaults(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(
        "name: bad\nimage_size: 32\ncamera: corner\n"
        "seeds: {train: {start: 0, stop: 100}, select: {start: 90, stop: 110}, test: [200, 300]}\n"
        "tasks: [drawer-close]\n"
    )
    with pytest.raises(ValueError, match="overlap"):
        load_suite(p)
    p.write_text(p.read_text().replace("start: 90", "start: 100"))
    s = load_suite(p)
    assert s.tasks[0].name == "drawer-close-v3" and s.tasks[0].instruction == "close the drawer"
    assert s.seeds["test"] == range(200, 300) and s.image_size == 32


def test_root_env_var(tmp_path, monkeypatch):
    (tmp_path / "sim" / "suites").mkdir(parents=True)
    (tmp_path / "sim" / "suites" / "tiny.yaml").write_text(
        "seeds: {train: [0, 5], select: [5, 6], test: [6, 8]}\n"
        "tasks: [{name: reach-v3, instruction: go, max_episode_steps: 20}]\n"
    )
    monkeypatch.setenv("LATENTSTACK_ROOT", str(tmp_path))
    s = load_suite("tiny")
    assert s.name == "tiny" and s.tasks == (TaskSpec("reach-v3", "go", 20),)
    with pytest.raises(FileNotFoundError):
        load_suite("metaworld_mt6")


def test_mt6_has_a_fit_split_apart_from_demos_and_evaluation():
    suite = load_suite("metaworld_mt6")
    fit = set(suite.seeds["fit"])
    for other in ("train", "select", "test"):
        assert fit.isdisjoint(suite.seeds[other])
