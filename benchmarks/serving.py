"""``lstack serve`` on loopback: request latency (p50/p99) and throughput with 1/4/16 clients, batching on vs off.

    PYTHONPATH=src python benchmarks/serving.py                      # -> reports/serving/ (~1-2 min)
    PYTHONPATH=src python benchmarks/serving.py --seconds 2 --out /tmp/s   # quicker smoke run

For each batching setting the server is started as its own process exactly as a user would
(``lstack serve <artifact> --port 0 --threads T --batch-max B --batch-wait-ms W``) and the
clients run in this process as asyncio websocket clients over 127.0.0.1. Each client is a closed loop (send one
observation -- a 64x64 uint8 image, a 4-D state, an instruction, as the MetaWorld sim gives them -- wait for the
chunk, repeat) for ``--seconds`` after one warm-up request. Latency is the client-side round trip; throughput is
replies per second over all clients. Batching "on" is the default (``--batch-max 16 --batch-wait-ms 2``), "off"
is ``--batch-max 1``. The machine's other load (its 1-minute load average) is recorded: numbers on a shared
2-core box are indicative.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from latentstack.serving import msgpack_numpy


def start_server(artifact: str, batch_max: int, batch_wait_ms: float, threads: int) -> tuple[subprocess.Popen, int]:
    cmd = [sys.executable, "-c", "from latentstack.cli import main; raise SystemExit(main())", "serve", artifact, "--port", "0", "--threads", str(threads),
           "--batch-max", str(batch_max), "--batch-wait-ms", str(batch_wait_ms)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("lstack serve:"):  # "... on ws://127.0.0.1:PORT (...)"
            port = int(line.split("ws://127.0.0.1:")[1].split()[0])
            return proc, port
    proc.kill()
    raise RuntimeError(f"server did not start: {cmd}")


def observation(i: int) -> dict:
    rng = np.random.default_rng(i)
    return {"image": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
            "state": rng.uniform(-1, 1, 4).astype(np.float32), "instruction": "press the coffee button"}


async def client(port: int, i: int, seconds: float, start: asyncio.Event, lat: list[float],
                 batch_sizes: list[int]) -> None:
    async with connect(f"ws://127.0.0.1:{port}", compression=None, max_size=None) as ws:
        msgpack_numpy.unpackb(await ws.recv())
        payload = msgpack_numpy.packb(observation(i))
        await ws.send(payload)  # warm-up
        await ws.recv()
        await start.wait()
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            await ws.send(payload)
            reply = msgpack_numpy.unpackb(await ws.recv())
            lat.append((time.perf_counter() - t0) * 1000)
            batch_sizes.append(int(reply["server_timing"]["batch_size"]))


async def measure(port: int, n_clients: int, seconds: float) -> dict:
    start = asyncio.Event()
    lat: list[float] = []
    sizes: list[int] = []
    tasks = [asyncio.create_task(client(port, i, seconds, start, lat, sizes)) for i in range(n_clients)]
    await asyncio.sleep(0.5)  # all connected and warmed up
    t0 = time.perf_counter()
    start.set()
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - t0
    a = np.asarray(lat)
    return {"clients": n_clients, "requests": len(lat), "wall_s": wall, "throughput_rps": len(lat) / wall,
            "latency_ms_p50": float(np.percentile(a, 50)), "latency_ms_p99": float(np.percentile(a, 99)),
            "latency_ms_mean": float(a.mean()), "mean_batch_size": float(np.mean(sizes))}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for k, (name, rows) in enumerate(results.items()):
        x, c = [r["clients"] for r in rows], f"C{k}"
        ax1.plot(x, [r["throughput_rps"] for r in rows], "o-", color=c, label=f"batching {name}")
        ax2.plot(x, [r["latency_ms_p50"] for r in rows], "o-", color=c, label=f"p50, batching {name}")
        ax2.plot(x, [r["latency_ms_p99"] for r in rows], "x--", color=c, label=f"p99, batching {name}")
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    ax1.set_ylabel("replies / s (all clients)")
    ax2.set_ylabel("round-trip latency (ms)")
    ax2.set_yscale("log")
    fig.suptitle("lstack serve on loopback (VLA chunk, CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_outputs(doc: dict, out: Path) -> None:
    """serving.json, serving.png and summary.md from one run's document (``--from-json`` re-renders them)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "serving.json").write_text(json.dumps(doc, indent=2) + "\n")
    plot(doc["results"], out / "serving.png")
    lines = ["# `lstack serve` on loopback: latency and throughput, batching on vs off", "",
             f"Command: `{doc['command']}`", "",
             (f"Artifact `{doc['artifact']}` on the CPU ({doc['server_threads']} torch thread in the server process), "
              f"clients as asyncio websocket clients in another process, closed loop, {doc['seconds_per_point']:g} s "
              f"per point. Batching on: `--batch-max 16 --batch-wait-ms {doc['batch_wait_ms']:g}`; off: "
              f"`--batch-max 1`. Machine: {doc['cpu_count']} CPUs shared with other jobs (1-min load "
              f"{doc['loadavg_1min_before']:.1f} before, {doc['loadavg_1min_after']:.1f} after): indicative "
              "numbers."), "",
             "| batching | clients | replies/s | p50 ms | p99 ms | mean batch |", "|---|---|---|---|---|---|"]
    for name, rows in doc["results"].items():
        for r in rows:
            lines.append(f"| {name} | {r['clients']} | {r['throughput_rps']:.1f} | {r['latency_ms_p50']:.1f} | "
                         f"{r['latency_ms_p99']:.1f} | {r['mean_batch_size']:.1f} |")
    lines += ["", ("Batching stacks the requests that queued while the previous forward pass ran (plus those arriving "
              "within the wait window) into one `predict_action_chunk`; each request's sampling noise is still drawn "
              "from its own connection's generator, so a client gets the chunk it would get alone up to float "
              "rounding (tests/serving/test_server.py: `test_batching_on_vs_off_same_actions`, atol 1e-5). With one "
              "client batching can only add the wait window (2 ms; differences at 1 client here are the shared machine's noise).")]
    (out / "summary.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifact", default="policies/vla_metaworld_mt6")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--seconds", type=float, default=8.0, help="measured seconds per (setting, clients)")
    ap.add_argument("--threads", type=int, default=1, help="server torch threads")
    ap.add_argument("--batch-wait-ms", type=float, default=2.0)
    ap.add_argument("--out", default=str(ROOT / "reports" / "serving"))
    ap.add_argument("--from-json", default=None, help="re-render the PNG and summary from a serving.json")
    args = ap.parse_args(argv)
    if args.from_json:
        write_outputs(json.loads(Path(args.from_json).read_text()), Path(args.out))
        return 0
    settings = {"on": (16, args.batch_wait_ms), "off": (1, 0.0)}
    results: dict[str, list[dict]] = {}
    load_before = os.getloadavg()[0]
    for name, (bmax, wait) in settings.items():
        proc, port = start_server(args.artifact, bmax, wait, args.threads)
        try:
            results[name] = []
            for n in args.clients:
                row = asyncio.run(measure(port, n, args.seconds))
                results[name].append(row)
                print(f"batching {name:3s} clients {n:2d}: {row['throughput_rps']:7.1f} req/s  p50 "
                      f"{row['latency_ms_p50']:7.1f} ms  p99 {row['latency_ms_p99']:7.1f} ms  mean batch "
                      f"{row['mean_batch_size']:.1f}", flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    command = " ".join(["PYTHONPATH=src python benchmarks/serving.py", *(sys.argv[1:] if argv is None else argv)])
    doc = {"command": command, "artifact": args.artifact, "seconds_per_point": args.seconds,
           "server_threads": args.threads, "batch_wait_ms": args.batch_wait_ms,
           "settings": {k: {"batch_max": b, "batch_wait_ms": w} for k, (b, w) in settings.items()},
           "results": results, "cpu_count": os.cpu_count(), "platform": platform.platform(),
           "python": platform.python_version(), "loadavg_1min_before": load_before,
           "loadavg_1min_after": os.getloadavg()[0]}
    out = Path(args.out)
    write_outputs(doc, out)
    print(f"-> {out}/serving.json, serving.png, summary.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
