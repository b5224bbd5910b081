"""Stereo speed benchmark: SA2-tiny (cross2d / bidi / unidi) vs ConvGRU twin vs OpenCV SGBM, and one
updater cell (SS2D vs ConvGRU) at 32×40 — interleaved repeats in one process, compared as ratios.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/stereo.py --out reports/stereo

Untrained weights (speed does not depend on them). Writes ``bench_stereo.json`` + ``bench_stereo.png``.
The box is shared: absolute times are noisy, the ratios within one run are the result.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from latentstack.perception.stereo.configuration_stereo import PRESETS
from latentstack.perception.stereo.model import SA2Tiny
from latentstack.perception.stereo.sgbm import SGBMConfig, sgbm_disparity
from latentstack.perception.stereo.update import SS2D, ConvGRU
from latentstack.stats import percentile_ms


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="reports/stereo")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--iters", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sizes = [(64, 128), (128, 160)]
    models = {name: SA2Tiny(PRESETS[name]).eval() for name in ("sa2_tiny", "sa2_tiny_bidi", "sa2_tiny_unidi", "convgru_tiny")}
    hidden = 64
    cells = {"ss2d_cross2d": SS2D(hidden, d_state=8, scan_mode="cross2d"), "ss2d_unidi": SS2D(hidden, d_state=8, scan_mode="unidi"),
             "convgru_cell": ConvGRU(hidden, hidden)}
    x32 = torch.randn(1, hidden, 32, 40)
    rng = np.random.default_rng(0)
    samples: dict[str, list[float]] = {}
    with torch.inference_mode():
        for h, w in sizes:  # warm-up
            l = torch.rand(1, 3, h, w) * 255
            for m in models.values():
                m(l, l, torch.tensor([20.0]), iters=1)
        for _ in range(args.repeats):  # interleaved: every method sees the same load drift
            for h, w in sizes:
                l, r = torch.rand(1, 3, h, w) * 255, torch.rand(1, 3, h, w) * 255
                for name, m in models.items():
                    t = time.perf_counter()
                    m(l, r, torch.tensor([20.0]), iters=args.iters)
                    samples.setdefault(f"{name}@{h}x{w}", []).append(time.perf_counter() - t)
                li = (rng.random((h, w, 3)) * 255).astype(np.uint8)
                t = time.perf_counter()
                sgbm_disparity(li, np.roll(li, -5, axis=1), SGBMConfig())
                samples.setdefault(f"sgbm@{h}x{w}", []).append(time.perf_counter() - t)
            for name, c in cells.items():
                t = time.perf_counter()
                c(x32) if name.startswith("ss2d") else c(x32, x32)
                samples.setdefault(f"{name}@32x40", []).append(time.perf_counter() - t)
    res = {k: {"p50_ms": percentile_ms(v, 50), "p90_ms": percentile_ms(v, 90), "n": len(v)} for k, v in samples.items()}
    ratios = {}
    for h, w in sizes:
        base = res[f"convgru_tiny@{h}x{w}"]["p50_ms"]
        for name in models:
            ratios[f"{name}/convgru_tiny@{h}x{w}"] = res[f"{name}@{h}x{w}"]["p50_ms"] / base
    ratios["ss2d_cross2d/convgru_cell@32x40"] = res["ss2d_cross2d@32x40"]["p50_ms"] / res["convgru_cell@32x40"]["p50_ms"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"threads": args.threads, "iters": args.iters, "repeats": args.repeats, "torch": torch.__version__,
            "machine": platform.machine(), "note": "shared 2-core box under load; compare ratios within this run",
            "command": f"OMP_NUM_THREADS={args.threads} nice -n 10 .venv/bin/python benchmarks/stereo.py --out {args.out}"}
    (out / "bench_stereo.json").write_text(json.dumps({"meta": meta, "latency": res, "ratios": ratios}, indent=2) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in res if not k.endswith("32x40")]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [3, 1]})
    axes[0].barh(keys, [res[k]["p50_ms"] for k in keys])
    axes[0].set_xlabel(f"p50 ms per pair ({args.iters} iterations, {args.threads} thread)")
    ck = [k for k in res if k.endswith("32x40")]
    axes[1].barh(ck, [res[k]["p50_ms"] for k in ck])
    axes[1].set_xlabel("p50 ms per cell call")
    fig.tight_layout()
    fig.savefig(out / "bench_stereo.png", dpi=90)
    for k, v in res.items():
        print(f"{k:32s} p50 {v['p50_ms']:8.1f} ms  p90 {v['p90_ms']:8.1f} ms")
    for k, v in ratios.items():
        print(f"{k:40s} {v:.2f}x")


if __name__ == "__main__":
    main()
