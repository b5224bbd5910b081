"""``lstack unilion gen-data``: UniLION's MuJoCo driving sequences (LiDAR + cameras + BEV labels).

``train`` and ``eval`` follow with the training recipe (issue 17)."""
from __future__ import annotations

import argparse
from typing import Any

from latentstack.cli.common import LazyCommand, add_data_arg

__all__ = ["add_parser"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("unilion", help="UniLION: LiDAR + camera + temporal tokens in one LION backbone")
    sub = p.add_subparsers(dest="unilion_cmd", required=True)
    g = sub.add_parser("gen-data", help="generate the MuJoCo driving-sequence splits ({split}.npz + {split}.json)")
    add_data_arg(g, "data/unilion", help="directory to write the splits to")
    g.add_argument("--train", type=int, default=48, help="training sequences")
    g.add_argument("--val", type=int, default=8, help="validation sequences")
    g.add_argument("--test", type=int, default=16, help="test sequences")
    g.add_argument("--frames", type=int, default=8, help="frames per sequence")
    g.set_defaults(func=LazyCommand("latentstack.sim.unilion_scenes:cmd_gen_data"))
    return p
