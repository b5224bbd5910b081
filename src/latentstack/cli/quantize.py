"""``lstack quantize``: post-training quantization (QuantVLA) of a policy checkpoint into an artifact (command in
``quant/cli.py``). Layout and preset names are checked when parsed, by importing the quantization tables only
then (``--help`` stays torch-free)."""
from __future__ import annotations

import argparse
from typing import Any

from latentstack.cli.common import LazyCommand, add_device_arg, add_out_arg, add_policy_arg, add_suite_arg

__all__ = ["add_parser", "add_quantize_parser"]


def _layout(name: str) -> str:
    from latentstack.quant.layouts import LAYOUTS

    if name not in LAYOUTS:
        raise argparse.ArgumentTypeError(f"unknown layout {name!r}; choose one of {sorted(LAYOUTS)}")
    return name


def _int_preset(name: str) -> str:
    from latentstack.quant.quantizers import PRESETS

    ints = sorted(k for k, v in PRESETS.items() if v.execution == "int")
    if name not in ints:
        raise argparse.ArgumentTypeError(f"{name!r} is not an integer-execution preset (only those are artifacts); "
                                         f"choose one of {ints}")
    return name


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    q = subparsers.add_parser("quantize", help="post-training quantization (QuantVLA) → artifact under policies/")
    add_policy_arg(q, help="source checkpoint directory")
    q.add_argument("--layout", default="paper", type=_layout, help="which linears to quantize (default paper)")
    q.add_argument("--preset", default="w4a8", type=_int_preset,
                   help="integer-execution quantizer preset, e.g. w4a8 | w8a8 (default w4a8)")
    q.add_argument("--atm-ohb", default="code", choices=["code", "paper", "paper_main", "none"],
                   help="ATM/OHB clamp preset, or none")
    add_suite_arg(q)
    q.add_argument("--calib-per-task", type=int, default=2, help="select-seed episodes per task (first frames)")
    q.add_argument("--noop-steps", type=int, default=0, help="extra frames per episode after no-op actions")
    q.add_argument("--calib-seed", type=int, default=0, help="flow-noise seed (same for teacher and student)")
    add_device_arg(q, help="where calibration runs: cpu | cuda | cuda:N | mps (default cpu); the artifact loads "
                           "on any device")
    add_out_arg(q, help="artifact dir (default: <policy>/quant/<layout>_<preset>[_atm_ohb], spec §10)")
    q.set_defaults(func=LazyCommand("latentstack.quant.cli:cmd_quantize"))
    return q


add_quantize_parser = add_parser  # the name ``tests/quant`` and older call sites use
