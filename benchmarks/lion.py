"""LION operator scaling: forward time vs voxel count, against windowed attention of the same width.

One run, one process, same voxels for every operator:

- ``lion_mamba``   — one LION layer (X- then Y-ordered BiMamba over equal-size groups, K = 4096,
                     KITTI's first block) on the shared selective scan;
- ``lion_retnet``  — the same layer with the RetNet operator (chunked linear attention);
- ``win_attn_K``   — the same grouping with softmax self-attention (4 heads, pre-norm, out proj) in
                     place of the linear RNN, at K = 4096 (same groups as LION) and K = 256
                     (a typical window-transformer group size).

Voxels are random active sites in the KITTI grid (352 × 400 × 32), batch 1, C = 64,
5k → 40k voxels. Median of ``--repeats`` runs, 1 thread, under ``torch.no_grad``, timed by the
thread's CPU time (``--clock thread_cpu``, default) because the shared box starves low-priority
jobs and wall time then measures the scheduler; ``--clock wall`` gives perf_counter. Compare
ratios within this run, not absolute times across runs. Writes
``reports/lion/bench_lion.json`` and ``bench_lion.png``.

    nice -n 10 .venv/bin/python benchmarks/lion.py
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from latentstack.perception.lion.backbone import LIONLayer
from latentstack.perception.lion.configuration_lion import get_preset
from latentstack.perception.lion.sparse import SparseVoxels
from latentstack.perception.lion.window import group_mapping


class WindowAttentionLayer(nn.Module):
    """Same X/Y grouping as a LION layer, but each operator block is softmax attention (pre-norm)."""

    def __init__(self, channels: int, window: tuple[int, int, int], group_size: int, heads: int = 4) -> None:
        super().__init__()
        self.window, self.group_size, self.heads = window, group_size, heads
        self.norm = nn.ModuleList(nn.LayerNorm(channels) for _ in range(2))
        self.qkv = nn.ModuleList(nn.Linear(channels, 3 * channels) for _ in range(2))
        self.proj = nn.ModuleList(nn.Linear(channels, channels) for _ in range(2))

    def forward(self, x: SparseVoxels) -> SparseVoxels:
        z, y, xx = x.spatial_shape
        maps = group_mapping(x.coords, x.batch_size, (xx, y, z), self.window, self.group_size, False)
        f = x.features
        for i, d in enumerate(("x", "y")):
            g = maps[d].gather(f)
            n, k, c = g.shape
            q, kk, v = self.qkv[i](self.norm[i](g)).view(n, k, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
            o = F.scaled_dot_product_attention(q, kk, v).transpose(1, 2).reshape(n, k, c)
            f = maps[d].scatter(g + self.proj[i](o), f.shape[0])
        return x.replace(f)


def random_voxels(n: int, shape: tuple[int, int, int], channels: int, seed: int) -> SparseVoxels:
    rng = np.random.default_rng(seed)
    z, y, x = shape
    flat = rng.choice(z * y * x, size=n, replace=False)
    coords = np.stack([np.zeros(n, np.int64), flat // (y * x), (flat // x) % y, flat % x], 1)
    g = torch.Generator().manual_seed(seed)
    return SparseVoxels(torch.randn(n, channels, generator=g), torch.from_numpy(coords), shape, 1)


def timeit(fn, repeats: int, clock=time.perf_counter) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t = clock()
        fn()
        ts.append(clock() - t)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--counts", type=int, nargs="+", default=[5000, 10000, 20000, 40000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="reports/lion")
    ap.add_argument("--clock", default="thread_cpu", choices=["thread_cpu", "wall"],
                    help="thread_cpu: CPU time of this (single-threaded) thread — robust on a shared, "
                         "oversubscribed box; wall: perf_counter")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.clock == "thread_cpu" and args.threads != 1:
        raise SystemExit("--clock thread_cpu measures one thread; use --threads 1 or --clock wall")
    clock = time.thread_time if args.clock == "thread_cpu" else time.perf_counter
    torch.manual_seed(0)
    c, shape, win = 64, (32, 400, 352), (13, 13, 32)
    mamba = LIONLayer(get_preset("lion_kitti_mamba", d_state=16), win, 4096, shift=False).eval()
    retnet = LIONLayer(get_preset("lion_kitti_mamba", operator="retnet"), win, 4096, shift=False).eval()
    ops = {"lion_mamba": mamba, "lion_retnet": retnet,
           "win_attn_K4096": WindowAttentionLayer(c, win, 4096).eval(),
           "win_attn_K256": WindowAttentionLayer(c, win, 256).eval()}
    results: dict[str, list[float]] = {k: [] for k in ops}
    from tqdm import tqdm

    with torch.no_grad():
        for n in tqdm(args.counts, desc="voxel counts"):
            x = random_voxels(n, shape, c, seed=n)
            for name, op in ops.items():
                results[name].append(timeit(lambda op=op, x=x: op(x), args.repeats, clock))
    counts = np.asarray(args.counts, float)
    summary = {}
    for name, ts in results.items():
        t = np.asarray(ts)
        slope = float(np.polyfit(np.log(counts), np.log(t), 1)[0])
        per_voxel = t / counts
        summary[name] = {"seconds": ts, "loglog_slope": slope,
                         "time_per_voxel_ratio_last_first": float(per_voxel[-1] / per_voxel[0])}
    base = np.asarray(results["lion_mamba"])
    for name in ops:
        summary[name]["ratio_to_lion_mamba"] = (np.asarray(results[name]) / base).tolist()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"voxel_counts": args.counts, "channels": c, "grid_zyx": shape, "window": win, "threads": args.threads, "clock": args.clock,
           "repeats": args.repeats, "torch": torch.__version__, "results": summary,
           "command": " ".join(["nice -n 10 .venv/bin/python benchmarks/lion.py", *sys.argv[1:]])}
    (out / "bench_lion.json").write_text(json.dumps(doc, indent=1) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, ts in results.items():
        ax.loglog(counts, ts, "o-", label=f"{name} (slope {summary[name]['loglog_slope']:.2f})")
    ax.loglog(counts, base[0] * counts / counts[0], "k:", label="linear from lion_mamba @5k")
    ax.set_xlabel("active voxels")
    ax.set_ylabel(f"forward time of one layer (s, {args.clock})")
    ax.set_title("LION layer vs windowed attention, C=64, 1 thread")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "bench_lion.png", dpi=100)
    for name in ops:
        print(f"{name:>16}: " + "  ".join(f"{t * 1e3:8.1f}ms" for t in results[name])
              + f"   slope {summary[name]['loglog_slope']:.2f}")


if __name__ == "__main__":
    main()
