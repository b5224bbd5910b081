"""``lstack quantize``: quantize a policy checkpoint, calibrate ATM/OHB on select-seed frames, write an artifact.
The flags are in :mod:`latentstack.cli.quantize` (torch-free)."""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

__all__ = ["cmd_quantize"]


def cmd_quantize(args: argparse.Namespace) -> int:
    from latentstack.policies.factory import make_policy

    from .apply import quantize_model
    from .artifact import save_quantized
    from .calib_data import calibration_observations, collate
    from .calibrate import calibrate_atm_ohb, drift, policy_runner

    teacher = make_policy(args.policy, device=getattr(args, "device", "cpu"))
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
    m = json.loads((path / "config.json").read_text())["extra"]["memory"]
    print(f"wrote {path}: {res.count} layers, {m['measured_bytes']} B (saving {m['saving_vs_fp32']:.1%} vs fp32)")
    return 0
