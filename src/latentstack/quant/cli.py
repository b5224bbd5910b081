"""``lstack quantize``: quantize a policy checkpoint, calibrate ATM/OHB on select-seed frames,
write an artifact. Wire with ``add_quantize_parser(subparsers)`` in ``latentstack.cli``."""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import Any

__all__ = ["add_quantize_parser", "cmd_quantize"]


def add_quantize_parser(subparsers: Any) -> argparse.ArgumentParser:
    from .layouts import LAYOUTS
    from .quantizers import PRESETS

    q = subparsers.add_parser("quantize", help="post-training quantization (QuantVLA) → artifact under policies/")
    q.add_argument("--policy", default="policies/vla_metaworld_mt6", help="source checkpoint directory")
    q.add_argument("--layout", default="paper", choices=sorted(LAYOUTS))
    q.add_argument("--preset", default="w4a8", choices=sorted(k for k, v in PRESETS.items() if v.execution == "int"))
    q.add_argument("--atm-ohb", default="code", choices=["code", "paper", "paper_main", "none"],
                   help="ATM/OHB clamp preset, or none")
    q.add_argument("--suite", default="metaworld_mt6")
    q.add_argument("--calib-per-task", type=int, default=2, help="select-seed episodes per task (first frames)")
    q.add_argument("--noop-steps", type=int, default=0, help="extra frames per episode after no-op actions")
    q.add_argument("--calib-seed", type=int, default=0, help="flow-noise seed (same for teacher and student)")
    q.add_argument("--out", default=None,
                   help="artifact dir (default: <policy>/quant/<layout>_<preset>[_atm_ohb], spec §10)")
    q.set_defaults(func=cmd_quantize)
    return q


def cmd_quantize(args: argparse.Namespace) -> int:
    from latentstack.policies.factory import make_policy

    from .apply import quantize_model
    from .artifact import save_quantized
    from .calib_data import calibration_observations, collate
    from .calibrate import calibrate_atm_ohb, drift, policy_runner

    teacher = make_policy(args.policy)
    student = copy.deepcopy(teacher)
    obs, prov = calibration_observations(args.suite, per_task=args.calib_per_task, noop_steps=args.noop_steps)
    run = policy_runner([collate(obs)], seed=args.calib_seed)
    res = quantize_model(student, args.layout, args.preset, calibrate=lambda: run(student))
    cal = None
    if args.atm_ohb != "none":
        cal = calibrate_atm_ohb(teacher, student, run,
                                preset=args.atm_ohb, meta={**prov, "noise_seed": args.calib_seed,
                                                           "observations": len(obs)})
        cal.meta["drift_before"] = drift(cal.teacher, cal.student)
    name = f"{args.layout}_{args.preset}" + ("" if cal is None else "_atm_ohb")
    out = args.out or str(Path(args.policy) / "quant" / name)
    path = save_quantized(student, res, out, source=args.policy, calibration=cal)
    card = json.loads((path / "card.json").read_text())
    m = card["memory"]
    print(f"wrote {path}: {res.count} layers, {m['measured_bytes']} B (saving {m['saving_vs_fp32']:.1%} vs fp32)")
    return 0
