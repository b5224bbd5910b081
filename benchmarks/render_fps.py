"""MetaWorld step+render throughput: MuJoCo's default visual quality vs the three CPU knobs.

Both settings and both image sizes run in one process, interleaved over repeats (the
machine is shared and noisy); the JSON reports the median of the repeats and the
fast/default ratio measured within the same run.

    MUJOCO_GL=egl python benchmarks/render_fps.py            # -> reports/sim/render_fps.{json,png}
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np

from latentstack.sim.experts import make_expert
from latentstack.sim.metaworld_env import MetaWorldLangEnv

KNOBS = {"default": False, "fast": True}


def measure(env: MetaWorldLangEnv, expert, seconds: float, min_steps: int, seed: int) -> dict:
    """Steps (expert actions, each step renders its observation) for ``seconds`` or ``min_steps``."""
    env.reset(seed=seed)
    n = 0
    c0 = time.process_time()  # CPU time of all threads of this process (llvmpipe's included)
    t0 = time.perf_counter()
    while True:
        _, _, term, trunc, _ = env.step(expert(env.full_state))
        n += 1
        if term or trunc:
            env.reset(seed=seed + n)
        dt = time.perf_counter() - t0
        if n >= min_steps and dt >= seconds:
            break
    cpu = time.process_time() - c0
    return {"steps": n, "seconds": dt, "fps": n / dt, "cpu_ms_per_step": 1000 * cpu / n}


def measure_physics(task: str, seconds: float, seed: int) -> float:
    """Step throughput without rendering (the MetaWorld env underneath, expert actions)."""
    env = MetaWorldLangEnv(task, image_size=16)
    expert = make_expert(task)
    mw = env.unwrapped_metaworld
    env.reset(seed=seed)
    full = env.full_state
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        full, _, _, trunc, info = mw.step(expert(full))
        n += 1
        if info["success"] or trunc or n % 150 == 0:
            env.reset(seed=seed + n)
            full = env.full_state
    env.close()
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="button-press-topdown-v3")
    p.add_argument("--camera", default="corner4")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 96])
    p.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    p.add_argument("--min-steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("reports/sim"))
    args = p.parse_args(argv)

    expert = make_expert(args.task)
    envs = {
        (knob, s): MetaWorldLangEnv(args.task, image_size=s, camera=args.camera, max_episode_steps=500,
                                    fast_render=fast)
        for knob, fast in KNOBS.items() for s in args.sizes
    }
    for env in envs.values():  # create GL contexts outside the timed loops
        env.reset(seed=0)
    runs: dict[str, list[float]] = {f"{k}@{s}": [] for k, s in envs}
    cpu_ms: dict[str, list[float]] = {f"{k}@{s}": [] for k, s in envs}
    for r in range(args.repeats):
        for (knob, s), env in envs.items():
            m = measure(env, expert, args.seconds, args.min_steps, seed=1000 * r)
            runs[f"{knob}@{s}"].append(m["fps"])
            cpu_ms[f"{knob}@{s}"].append(m["cpu_ms_per_step"])
            print(f"repeat {r} {knob:8s} {s:4d}px  {m['fps']:7.1f} step+render/s  "
                  f"{m['cpu_ms_per_step']:6.2f} CPU ms/step ({m['steps']} steps)", flush=True)
    for env in envs.values():
        env.close()
    physics = measure_physics(args.task, args.seconds, seed=7)

    results = {}
    for s in args.sizes:
        d = statistics.median(runs[f"default@{s}"])
        f = statistics.median(runs[f"fast@{s}"])
        dc = statistics.median(cpu_ms[f"default@{s}"])
        fc = statistics.median(cpu_ms[f"fast@{s}"])
        results[str(s)] = {
            "default_fps": round(d, 1),
            "fast_fps": round(f, 1),
            "speedup": round(f / d, 2),
            "default_cpu_ms_per_step": round(dc, 2),
            "fast_cpu_ms_per_step": round(fc, 2),
            "cpu_speedup": round(dc / fc, 2),
            "default_runs": [round(x, 1) for x in runs[f"default@{s}"]],
            "fast_runs": [round(x, 1) for x in runs[f"fast@{s}"]],
        }
    import mujoco

    mj_version = mujoco.__version__
    report = {
        "benchmark": "render_fps",
        "what": "MetaWorldLangEnv.step (expert action + physics + one render of the observation image), "
                "median of interleaved repeats; fps is wall clock, cpu_ms_per_step is process CPU time "
                "(all threads, robust to other load on a shared machine)",
        "load_average": list(os.getloadavg()),
        "task": args.task,
        "camera": args.camera,
        "knobs": {"default": "MuJoCo/MetaWorld defaults",
                  "fast": "vis.quality.shadowsize=0, vis.quality.offsamples=0, mat_reflectance[:]=0"},
        "sizes": results,
        "physics_only_steps_per_s": round(physics, 1),
        "repeats": args.repeats,
        "seconds_per_measurement": args.seconds,
        "env": {"MUJOCO_GL": os.environ.get("MUJOCO_GL"), "mujoco": mj_version, "python": sys.version.split()[0],
                "machine": platform.machine(), "cpus": os.cpu_count()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    jp = args.out / "render_fps.json"
    jp.write_text(json.dumps(report, indent=2))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9, 3.8))
    x = np.arange(len(args.sizes))
    w = 0.38
    colors = {"default": "#999999", "fast": "#c0392b"}
    for i, knob in enumerate(KNOBS):
        vals = [results[str(s)][f"{knob}_fps"] for s in args.sizes]
        errs = [[v - min(results[str(s)][f"{knob}_runs"]) for v, s in zip(vals, args.sizes)],
                [max(results[str(s)][f"{knob}_runs"]) - v for v, s in zip(vals, args.sizes)]]
        bars = ax.bar(x + (i - 0.5) * w, vals, w, yerr=errs, capsize=3, color=colors[knob], label=f"{knob} knobs")
        for b, v, s in zip(bars, vals, args.sizes):
            top = max(results[str(s)][f"{knob}_runs"])
            ax.text(b.get_x() + b.get_width() / 2, top * 1.1, f"{v:.0f}", ha="center", va="bottom", fontsize=8)
        cvals = [results[str(s)][f"{knob}_cpu_ms_per_step"] for s in args.sizes]
        cbars = ax2.bar(x + (i - 0.5) * w, cvals, w, color=colors[knob], label=f"{knob} knobs")
        for b, v in zip(cbars, cvals):
            ax2.text(b.get_x() + b.get_width() / 2, v, f"{v:.1f}", ha="center", va="bottom", fontsize=8)
    ax.axhline(physics, ls="--", lw=1, color="k", label=f"physics only ({physics:.0f}/s)")
    ax.set_yscale("log")
    ax.set_ylim(1, physics * 3)
    ax.set_xticks(x, [f"{s}x{s}\n(x{results[str(s)]['speedup']:.1f} wall)" for s in args.sizes])
    ax.set_ylabel("step + render per second (wall, log)")
    ax.legend(fontsize=7, loc="upper left")
    ax2.set_xticks(x, [f"{s}x{s}\n(x{results[str(s)]['cpu_speedup']:.1f} CPU)" for s in args.sizes])
    ax2.set_ylabel("CPU ms per step (all threads)")
    ax2.legend(fontsize=7, loc="center right")
    fig.suptitle(f"MetaWorld {args.task} ({args.camera}): default vs fast render knobs, one run", fontsize=9)
    fig.tight_layout()
    pp = args.out / "render_fps.png"
    fig.savefig(pp, dpi=120)
    plt.close(fig)
    print(json.dumps(results, indent=2))
    print(f"wrote {jp} and {pp}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
