"""``lstack unilion gen-data | train | eval``: UniLION's MuJoCo driving sequences (LiDAR + cameras + BEV labels),
training one model for L / LT / LC / LCT (or the LION-only baseline), and the held-out evaluation
(commands in ``perception/unilion/cli.py``)."""
from __future__ import annotations

import argparse
from typing import Any

from latentstack.cli.common import (
    LazyCommand,
    add_data_arg,
    add_device_arg,
    add_flag,
    add_out_arg,
    add_seed_arg,
    add_threads_arg,
)

__all__ = ["add_parser"]

_CMD = "latentstack.perception.unilion.cli:"
_DATA_HELP = "directory of the sequence splits ({split}.npz + {split}.json)"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("unilion", help="UniLION: LiDAR + camera + temporal tokens in one LION backbone")
    sub = p.add_subparsers(dest="unilion_cmd", required=True)
    g = sub.add_parser("gen-data", help="generate the MuJoCo driving-sequence splits ({split}.npz + {split}.json)")
    add_data_arg(g, "data/unilion", help="directory to write the splits to")
    g.add_argument("--train", type=int, default=96, help="training sequences")
    g.add_argument("--val", type=int, default=8, help="validation sequences")
    g.add_argument("--test", type=int, default=32, help="test sequences")
    g.add_argument("--frames", type=int, default=8, help="frames per sequence")
    g.set_defaults(func=LazyCommand("latentstack.sim.unilion_scenes:cmd_gen_data"))

    t = sub.add_parser("train", help="train UniLION (modality dropout over L/LT/LC/LCT) or the LION-only baseline")
    t.add_argument("--kind", default="unilion", choices=["unilion", "lion_only"],
                   help="unilion: one model for every mode; lion_only: the same model trained on L tokens only")
    t.add_argument("--preset", default="unilion_tiny", help="model preset (latentstack.perception.unilion PRESETS)")
    add_out_arg(t, required=True, help="artifact directory (safetensors + config.json + train_log)")
    add_data_arg(t, "data/unilion", help=_DATA_HELP)
    add_flag(t, "--steps", aliases=("--iterations",), type=int, default=800, help="optimizer steps")
    t.add_argument("--batch-size", type=int, default=2, help="frame pairs per step")
    t.add_argument("--lr", type=float, default=3e-3)
    add_seed_arg(t)
    add_threads_arg(t, 1)
    add_device_arg(t)
    t.set_defaults(func=LazyCommand(_CMD + "cmd_train"))

    e = sub.add_parser("eval", help="BEV AP / seg mIoU / occupancy IoU per mode on held-out sequences, with baselines")
    e.add_argument("--unilion", default="policies/unilion_tiny", help="the UniLION artifact (evaluated in every mode)")
    e.add_argument("--lion-only", default="policies/unilion_tiny_lion_only",
                   help="the LION-only baseline artifact ('' to skip)")
    e.add_argument("--no-clustering", action="store_true", help="skip the non-learned clustering baseline")
    add_data_arg(e, "data/unilion", help=_DATA_HELP)
    e.add_argument("--split", default="test", choices=["val", "test"])
    e.add_argument("--bootstrap", type=int, default=1000, help="paired bootstrap resamples (frames)")
    add_out_arg(e, "reports/unilion", help="report directory (unilion.json, PNG, summary.md)")
    add_threads_arg(e, 1)
    add_device_arg(e)
    e.set_defaults(func=LazyCommand(_CMD + "cmd_eval"))

    c = sub.add_parser("card", help="render CARD.md of the UniLION artifacts from their config.json and the report")
    c.add_argument("--report", default="reports/unilion/unilion.json")
    c.add_argument("artifacts", nargs="*", default=["policies/unilion_tiny", "policies/unilion_tiny_lion_only"])
    c.set_defaults(func=LazyCommand(_CMD + "cmd_card"))
    return p
