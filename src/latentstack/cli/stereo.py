"""``lstack stereo gen-data | pretrain | train | eval``: SA2-tiny stereo depth (commands in
``perception/stereo/cli.py``)."""
from __future__ import annotations

import argparse
from typing import Any

from latentstack.cli.common import (
    LazyCommand,
    add_data_arg,
    add_device_arg,
    add_model_arg,
    add_out_arg,
    add_seed_arg,
    add_threads_arg,
)

__all__ = ["add_parser", "add_stereo_train_arguments"]

_CMD = "latentstack.perception.stereo.cli:"
_DATA_HELP = "directory of the stereo splits (train/val/test .npz)"


def _recipe(q: argparse.ArgumentParser, steps: int, lr: float, batch: int) -> None:
    add_data_arg(q, "data/stereo", help=_DATA_HELP)
    q.add_argument("--steps", type=int, default=steps)
    q.add_argument("--batch-size", type=int, default=batch)
    q.add_argument("--lr", type=float, default=lr)
    add_seed_arg(q)
    add_threads_arg(q, 1)
    add_device_arg(q)


def add_stereo_train_arguments(t: argparse.ArgumentParser) -> None:
    _recipe(t, 700, 4e-4, 4)
    t.add_argument("--preset", default="sa2_tiny")
    t.add_argument("--encoder", default="data/stereo/run/encoder.safetensors", help="from `lstack stereo pretrain`")
    t.add_argument("--iters", type=int, default=8, help="refinement iterations (train and eval)")
    add_out_arg(t, required=True, help="checkpoint directory")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("stereo", help="StereoAdapter-2 (SA2-tiny) stereo depth on synthetic underwater scenes")
    s = p.add_subparsers(dest="stereo_command", required=True)

    g = s.add_parser("gen-data", help="render train/val/test splits with MuJoCo (disjoint seeds)")
    add_data_arg(g, "data/stereo", help="directory to write the splits to", aliases=("--out",))
    g.add_argument("--train", type=int, default=3000)
    g.add_argument("--val", type=int, default=200)
    g.add_argument("--test", type=int, default=400)
    g.add_argument("--height", type=int, default=64)
    g.add_argument("--width", type=int, default=128)
    g.set_defaults(func=LazyCommand(_CMD + "cmd_gen_data"))

    pt = s.add_parser("pretrain", help="monocular pretraining of the encoder + depth head")
    _recipe(pt, 900, 1e-3, 8)
    add_out_arg(pt, "data/stereo/run", help="directory for encoder.safetensors")
    pt.set_defaults(func=LazyCommand(_CMD + "cmd_pretrain"))

    t = s.add_parser("train", help="train SA2-tiny or the ConvGRU twin (same recipe) on a frozen, adapted encoder")
    add_stereo_train_arguments(t)
    t.set_defaults(func=LazyCommand(_CMD + "cmd_train"))

    e = s.add_parser("eval", help="held-out evaluation: models vs SGBM per turbidity; JSON + PNG")
    add_model_arg(e, help="name=checkpoint_dir (repeat)")
    add_data_arg(e, "data/stereo", help=_DATA_HELP)
    e.add_argument("--split", default="test", choices=["val", "test"])
    e.add_argument("--limit", type=int, default=None)
    e.add_argument("--turbidity", type=float, nargs="+", default=[0, 1, 2, 3, 4])
    e.add_argument("--iters", type=int, default=8)
    e.add_argument("--init-control", default=None, help="also score this model's mono initialisation alone")
    add_threads_arg(e, 1)
    e.add_argument("--batch-size", type=int, default=8)
    add_device_arg(e)
    add_out_arg(e, "reports/stereo", help="report directory")
    e.add_argument("--command-line", default="", help=argparse.SUPPRESS)
    e.set_defaults(func=LazyCommand(_CMD + "cmd_eval"))
    return p
