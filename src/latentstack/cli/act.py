"""``lstack act train``: LeRobot's ACT (small preset) on a LeRobotDataset (evaluate with ``lstack eval --policy``)."""
from __future__ import annotations

import argparse
from typing import Any

from latentstack.cli.common import (
    LazyCommand,
    add_data_arg,
    add_device_arg,
    add_out_arg,
    add_seed_arg,
    add_threads_arg,
)

__all__ = ["add_act_train_arguments", "add_parser"]

ACT_PRESET_NAMES = ("act_small", "act_tiny")  # latentstack.policies.lerobot_act.configuration_act.ACT_PRESETS


def add_act_train_arguments(t: argparse.ArgumentParser) -> None:
    add_data_arg(t, required=True, help="LeRobotDataset root, e.g. data/demos_metaworld_mt6", aliases=("--dataset",))
    add_out_arg(t, "policies/act_metaworld_mt6", help="checkpoint directory")
    t.add_argument("--repo-id", default=None, help="dataset repo id (default local/<root name>)")
    t.add_argument("--preset", default="act_small", choices=ACT_PRESET_NAMES)
    t.add_argument("--steps", type=int, default=100_000)
    t.add_argument("--time-budget-s", type=float, default=14 * 60.0, help="stop after this much training time")
    t.add_argument("--batch-size", type=int, default=16)
    add_seed_arg(t)
    add_threads_arg(t, 1)
    t.add_argument("--max-episodes", type=int, default=None, help="use only the first N episodes")
    add_device_arg(t)


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("act", help="LeRobot ACT adapter: train a small ACT (evaluate with `lstack eval --policy <dir>`)")
    acts = p.add_subparsers(dest="act_command", required=True)
    t = acts.add_parser("train", help="train LeRobot ACT on a LeRobotDataset (tqdm bar + loss plot)")
    add_act_train_arguments(t)
    t.set_defaults(func=LazyCommand("latentstack.policies.lerobot_act.cli:cmd_train"))
    return p
