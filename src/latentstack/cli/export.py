"""``lstack export --format onnx <artifact>``: the VLA's chunk prediction as ONNX (K denoising steps unrolled,
noise as an input; :mod:`latentstack.policies.vla.export`), the SA2 stereo model (refinement iterations unrolled;
:mod:`latentstack.perception.stereo.export`) or the LION detector (one scan, dynamic number of points, head maps
out; :mod:`latentstack.perception.lion.export`), each checked against the eager model with onnxruntime.

Torch-free: the exporter loads when the command runs.
"""
from __future__ import annotations

import argparse
from typing import Any

from latentstack.cli.common import LazyCommand, add_out_arg

__all__ = ["add_parser", "lidar_cloud"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("export", help="export a policy artifact (VLA chunk prediction) to ONNX, checked with "
                       "onnxruntime against eager")
    p.add_argument("artifact", help="VLA policy artifact (e.g. policies/vla_metaworld_mt6), stereo model "
                   "artifact (policies/stereo_sa2_tiny) or LION detector (policies/lion_tiny)")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="export format")
    p.add_argument("--num-steps", type=int, default=None,
                   help="VLA: denoising steps K to unroll; stereo: refinement iterations (default: the config's)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset")
    p.add_argument("--tol", type=float, default=None,
                   help="max |onnxruntime - eager| to pass (default: 1e-4 on VLA actions, 1e-3 px on disparities, "
                   "1e-3 on LION head maps)")
    add_out_arg(p, None, help="output directory (default outputs/export/<artifact name>)")
    p.set_defaults(func=LazyCommand("latentstack.cli.export:cmd_export"))
    return p


def cmd_export(args: argparse.Namespace) -> int:
    """Loads the artifact, writes the ``.onnx`` (``vla_chunk``, ``stereo`` or ``lion``) + ``export.json`` (the
    onnxruntime check), exit 1 on a failed check."""
    from pathlib import Path

    from latentstack.core.artifacts import read_artifact_doc
    from latentstack.core.paths import resolve_path

    out = args.out or str(Path("outputs") / "export" / Path(args.artifact.split(":")[-1]).name)
    kind = None if ":" in args.artifact else read_artifact_doc(resolve_path(args.artifact)).get("type")
    if kind == "lion":
        from latentstack.perception.lion.export import CHECK_CLOUDS, EXAMPLE_CLOUD, export_lion_onnx
        from latentstack.perception.lion.modeling_lion import load_detector

        if args.num_steps is not None:
            raise SystemExit("lstack export: --num-steps does not apply to a LION detector")
        made = {"generator": "latentstack.sim.lidar_scenes.generate_scan, default config; [seed, n points or all]",
                "example": list(EXAMPLE_CLOUD), "check": [list(c) for c in CHECK_CLOUDS],
                "subsample": "numpy default_rng(seed).permutation, first n points"}
        rec = export_lion_onnx(load_detector(resolve_path(args.artifact), device="cpu"), out,
                               lidar_cloud(*EXAMPLE_CLOUD), [lidar_cloud(s, n) for s, n in CHECK_CLOUDS],
                               opset=args.opset, source=args.artifact, clouds_from=made,
                               **({} if args.tol is None else {"tol": args.tol}))
        return _report(out, rec, None)
    if kind == "stereo":
        from latentstack.perception.stereo.export import export_stereo_onnx
        from latentstack.perception.stereo.model import load_stereo_model

        rec = export_stereo_onnx(load_stereo_model(resolve_path(args.artifact), device="cpu"), out,
                                 iters=args.num_steps, opset=args.opset, source=args.artifact,
                                 **({} if args.tol is None else {"tol": args.tol}))
        return _report(out, rec, "iters")

    from latentstack.policies.factory import make_policy
    from latentstack.policies.vla.export import export_onnx

    policy = make_policy(args.artifact, device="cpu")
    if not hasattr(policy, "_chunk"):
        raise SystemExit(f"lstack export: {args.artifact} is a {type(policy).__name__}; ONNX export covers the VLA")
    rec = export_onnx(policy, out, num_steps=args.num_steps, opset=args.opset, source=args.artifact,
                      **({} if args.tol is None else {"tol": args.tol}))
    return _report(out, rec, "num_steps")


def _report(out: str, rec: dict, steps_key: str | None) -> int:
    chk = rec["check"]
    steps = f"{steps_key}={rec[steps_key]}, " if steps_key else ""
    dets = (f"; detections {chk['detections_matched']}/{chk['detections_eager']} matched"
            if "detections_eager" in chk else "")
    print(f"lstack export: {out}/{rec['file']} ({steps}opset {rec['opset']}); onnxruntime vs "
          f"eager max |diff| {chk['max_abs']:.2e} (tol {chk['tol']}){dets} -> {'ok' if chk['passed'] else 'FAILED'}")
    return 0 if chk["passed"] else 1


def lidar_cloud(seed: int, n: int | None = None) -> Any:
    """The ``lidar_scenes`` scan of ``seed`` as (P, 4) float32, or ``n`` of its points drawn without replacement
    (here, at the entry-point layer: the model packages do not import the simulator)."""
    import numpy as np

    from latentstack.sim.lidar_scenes import generate_scan

    pts = generate_scan(int(seed)).points.astype(np.float32)
    if n is not None and n < len(pts):
        pts = pts[np.random.default_rng(seed).permutation(len(pts))[:n]]
    return pts
