"""Evaluation suites as data: tasks, instructions, time limits and disjoint seed splits.

A suite lives in ``sim/suites/<name>.yaml`` in a checkout (``share/latentstack/suites/`` when installed)::

    name: metaworld_mt6
    env: metaworld
    image_size: 64
    camera: corner4
    seeds:
      train:  {start: 0, stop: 1000}       # expert demonstrations
      select: {start: 10000, stop: 10100}  # checkpoint / hyper-parameter selection
      test:   {start: 20000, stop: 20100}  # held out: reported numbers only
    tasks:
      - {name: drawer-close-v3, instruction: close the drawer, max_episode_steps: 160}

Suites are found by name through the one data resolver, :func:`latentstack.core.paths.find_data`
(checkout, wheel install or colcon install alike).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from latentstack.core.paths import find_data, list_data, resolve_path

__all__ = ["SPLITS", "Suite", "TaskSpec", "load_suite"]

SPLITS = ("train", "select", "test")


@dataclass(frozen=True)
class TaskSpec:
    name: str
    instruction: str
    max_episode_steps: int


@dataclass(frozen=True)
class Suite:
    name: str
    tasks: tuple[TaskSpec, ...]
    seeds: Mapping[str, range]
    image_size: int = 64
    camera: str = "corner4"
    env: str = field(default="metaworld", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(self.tasks))
        validate_seeds(self.seeds)

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tasks)

    def task(self, name: str) -> TaskSpec:
        for t in self.tasks:
            if t.name == name or t.name == f"{name}-v3":
                return t
        raise KeyError(f"task {name!r} not in suite {self.name!r}: {self.task_names}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "env": self.env,
            "image_size": self.image_size,
            "camera": self.camera,
            "seeds": {k: {"start": r.start, "stop": r.stop} for k, r in self.seeds.items()},
            "tasks": [
                {"name": t.name, "instruction": t.instruction, "max_episode_steps": t.max_episode_steps}
                for t in self.tasks
            ],
        }


def validate_seeds(seeds: Mapping[str, range]) -> None:
    """The train/select/test seed ranges must exist, be non-empty, and not overlap (ValueError)."""
    missing = [s for s in SPLITS if s not in seeds]
    if missing:
        raise ValueError(f"suite seeds lack the split(s) {missing}; need {list(SPLITS)}")
    items = list(seeds.items())
    for name, r in items:
        if not isinstance(r, range) or r.step != 1:
            raise ValueError(f"seeds[{name!r}] must be a contiguous range, got {r!r}")
        if len(r) == 0:
            raise ValueError(f"seeds[{name!r}] is empty")
    for i, (a, ra) in enumerate(items):
        for b, rb in items[i + 1:]:
            if max(ra.start, rb.start) < min(ra.stop, rb.stop):
                raise ValueError(
                    f"seed ranges overlap: {a}={ra.start}..{ra.stop - 1} and {b}={rb.start}..{rb.stop - 1}"
                )


def _parse_range(name: str, v: Any) -> range:
    if isinstance(v, range):
        return v
    if isinstance(v, Mapping):
        return range(int(v["start"]), int(v["stop"]))
    if isinstance(v, (list, tuple)) and len(v) == 2:
        return range(int(v[0]), int(v[1]))
    raise ValueError(f"seeds.{name}: expected {{start, stop}} or [start, stop], got {v!r}")


def suite_from_dict(d: Mapping[str, Any]) -> Suite:
    from .metaworld_env import TASK_INSTRUCTIONS, canonical_task

    env = str(d.get("env", "metaworld"))
    tasks = []
    for t in d["tasks"]:
        if isinstance(t, str):
            t = {"name": t}
        name = canonical_task(t["name"]) if env == "metaworld" else str(t["name"])
        instruction = t.get("instruction") or TASK_INSTRUCTIONS.get(name, name)
        tasks.append(TaskSpec(name, str(instruction), int(t.get("max_episode_steps", 200))))
    if not tasks:
        raise ValueError("a suite needs at least one task")
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate task names in suite: {names}")
    seeds = {k: _parse_range(k, v) for k, v in d["seeds"].items()}
    return Suite(
        name=str(d["name"]),
        tasks=tuple(tasks),
        seeds=seeds,
        image_size=int(d.get("image_size", 64)),
        camera=str(d.get("camera", "corner4")),
        env=env,
    )


def load_suite(name_or_path: str | os.PathLike) -> Suite:
    """A suite by name (``find_data("suites", name)``) or by path to a YAML file."""
    import yaml

    # A path (also checkout-relative, e.g. sim/suites/x.yaml from any cwd) first, else a name.
    path = resolve_path(name_or_path)
    if not path.is_file():
        try:
            path = find_data("suites", str(name_or_path))
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{e}; available suites: {list_data('suites')}") from None
    with open(path) as f:
        d = yaml.safe_load(f)
    d.setdefault("name", path.stem)
    return suite_from_dict(d)
