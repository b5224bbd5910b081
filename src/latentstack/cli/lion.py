"""``lstack lion gen-data | train | eval``: LION 3-D LiDAR detection (commands in ``perception/lion/cli.py``)."""
from __future__ import annotations

import argparse
from typing import Any

from latentstack.cli.common import (
    LazyCommand,
    add_data_arg,
    add_device_arg,
    add_flag,
    add_model_arg,
    add_out_arg,
    add_seed_arg,
    add_threads_arg,
)

__all__ = ["add_lion_train_arguments", "add_parser"]

_CMD = "latentstack.perception.lion.cli:"
_DATA_HELP = "directory of the LiDAR splits (train/val/test .npz)"


def add_lion_train_arguments(t: argparse.ArgumentParser) -> None:
    t.add_argument("--preset", default="lion_tiny", help="detector preset (latentstack.perception.lion PRESETS)")
    add_out_arg(t, required=True, help="checkpoint directory (safetensors + config.json + train_log)")
    add_data_arg(t, "data/lion", help=_DATA_HELP, aliases=("--data-dir",))
    t.add_argument("--train-scans", type=int, default=400)
    add_flag(t, "--steps", aliases=("--iterations",), type=int, default=400, help="optimizer steps")
    t.add_argument("--batch-size", type=int, default=4)
    t.add_argument("--lr", type=float, default=3e-3)
    add_seed_arg(t)
    add_threads_arg(t, 1)
    add_device_arg(t)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("lion", help="LION 3-D LiDAR detection: synthetic data, training, AP evaluation")
    sub = p.add_subparsers(dest="lion_cmd", required=True)

    g = sub.add_parser("gen-data", help="generate the MuJoCo LiDAR splits (npz, documented format)")
    add_data_arg(g, "data/lion", help="directory to write the splits to", aliases=("--data-dir",))
    g.add_argument("--train", type=int, default=400)
    g.add_argument("--val", type=int, default=50)
    g.add_argument("--test", type=int, default=100)
    g.set_defaults(func=LazyCommand(_CMD + "cmd_gen_data"))

    t = sub.add_parser("train", help="train a LION detector preset from scratch")
    add_lion_train_arguments(t)
    t.set_defaults(func=LazyCommand(_CMD + "cmd_train"))

    e = sub.add_parser("eval", help="BEV/3-D AP R40 on held-out test scans, baselines in the same run")
    add_model_arg(e, help="detector checkpoint(s) to evaluate (repeatable); e.g. lion=policies/lion_tiny")
    e.add_argument("--no-clustering", action="store_true", help="skip the non-learned clustering baseline")
    add_data_arg(e, "data/lion", help=_DATA_HELP, aliases=("--data-dir",))
    e.add_argument("--split", default="test", choices=["val", "test"])
    e.add_argument("--scans", type=int, default=100)
    add_out_arg(e, "reports/lion", help="report directory (lion.json, PNG, summary.md)")
    add_threads_arg(e, 1)
    add_device_arg(e)
    e.set_defaults(func=LazyCommand(_CMD + "cmd_eval"))
    return p
