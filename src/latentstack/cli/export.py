"""``lstack export --format onnx <artifact>``: the VLA's chunk prediction as ONNX (K denoising steps unrolled,
noise as an input), checked against the eager model with onnxruntime (:mod:`latentstack.policies.vla.export`).

Torch-free: the exporter loads when the command runs.
"""
from __future__ import annotations

import argparse
from typing import Any

from latentstack.cli.common import LazyCommand, add_out_arg

__all__ = ["add_parser"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("export", help="export a policy artifact (VLA chunk prediction) to ONNX, checked with "
                       "onnxruntime against eager")
    p.add_argument("artifact", help="VLA policy artifact dir (e.g. policies/vla_metaworld_mt6)")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="export format")
    p.add_argument("--num-steps", type=int, default=None, help="denoising steps K to unroll (default: the config's)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset")
    p.add_argument("--tol", type=float, default=1e-4, help="max |onnxruntime - eager| on the actions to pass")
    add_out_arg(p, None, help="output directory (default outputs/export/<artifact name>)")
    p.set_defaults(func=LazyCommand("latentstack.cli.export:cmd_export"))
    return p


def cmd_export(args: argparse.Namespace) -> int:
    """Loads the artifact, writes ``vla_chunk.onnx`` + ``export.json`` (the onnxruntime check), exit 1 on a
    failed check."""
    from pathlib import Path

    from latentstack.policies.factory import make_policy
    from latentstack.policies.vla.export import export_onnx

    policy = make_policy(args.artifact, device="cpu")
    if not hasattr(policy, "_chunk"):
        raise SystemExit(f"lstack export: {args.artifact} is a {type(policy).__name__}; ONNX export covers the VLA")
    out = args.out or str(Path("outputs") / "export" / Path(args.artifact.split(":")[-1]).name)
    rec = export_onnx(policy, out, num_steps=args.num_steps, opset=args.opset, tol=args.tol, source=args.artifact)
    chk = rec["check"]
    print(f"lstack export: {out}/{rec['file']} (K={rec['num_steps']}, opset {rec['opset']}); onnxruntime vs eager "
          f"max |diff| {chk['max_abs']:.2e} (tol {chk['tol']}) -> {'ok' if chk['passed'] else 'FAILED'}")
    return 0 if chk["passed"] else 1
