"""Perception graph latency: per-node p50/p99 and sustained frame rate, in one process and over DDS (issue 16 item 5).

Runs ``ros/graphs/perception.yaml`` (simulated 64-beam LiDAR -> ``lidar_detection`` with ``policies/lion_tiny``;
simulated stereo pair -> ``stereo_depth`` with ``policies/stereo_sa2_tiny``) as ``lstack launch`` does
(:func:`latentstack.ros.launcher.run_inprocess` / :func:`~latentstack.ros.launcher.run_multiprocess`), with a probe
that subscribes (raw, undecoded) to each node's input and output topics:

- ``inproc``: every node in this process on the in-process bus (one executor thread, each perception node's model
  on its own worker thread);
- ``dds``: ``--transport dds --multiprocess``: one process per group (sensors / lidar / stereo) over Cyclone DDS on
  loopback; the probe is a fourth DDS participant in this process.

Latency of a node, per frame: publish time of its output minus publish time of the input it answers (the same
header stamp), both read from the transport clock at publish time (the in-process bus's write time; the DDS
writer's source timestamp, so a cross-process hop is included in the number and probe delivery delays are not).
The simulated sensors stamp headers with sim time (``k * dt_s``), so the input's publish time stands in for the
acquisition stamp of a real sensor. For stereo the input time is the later of the left/right images. The sensors
run lockstep (the next frame goes out when the answer arrives), so the sustained frame rate is the rate a node
answers back-to-back frames: ``(n - 1) / (t_out[last] - t_out[first])``. The first ``--warmup`` frames (model
warm-up, DDS discovery) are excluded.

    python benchmarks/perception_graph.py --frames 12 --out reports/perception_graph            # CPU
    python benchmarks/perception_graph.py --frames 30 --device cuda --out reports/perception_graph_cuda
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")
REPO = Path(__file__).resolve().parents[1]
GRAPH = "ros/graphs/perception.yaml"
# node -> (input topics (an output answers the latest of them), output topic)
PIPELINES: dict[str, tuple[tuple[str, ...], str]] = {
    "lidar_detection": (("/lidar/points",), "/lidar/detections"),
    "stereo_depth": (("/stereo/left/image_rect", "/stereo/right/image_rect"), "/stereo/depth"),
}
TOPIC_TYPES = {
    "/lidar/points": "sensor_msgs/msg/PointCloud2",
    "/lidar/detections": "vision_msgs/msg/Detection3DArray",
    "/stereo/left/image_rect": "sensor_msgs/msg/Image",
    "/stereo/right/image_rect": "sensor_msgs/msg/Image",
    "/stereo/depth": "sensor_msgs/msg/Image",
}


def header_stamp_ns(cdr: bytes) -> int:
    """Header stamp of a serialized message whose first field is ``std_msgs/Header`` (no full decode: a 2 MB
    cloud is not decoded twice). CDR: 4-byte encapsulation (byte 1: 0/2 big-, 1/3 little-endian), then
    ``int32 sec, uint32 nanosec``."""
    order = "<" if cdr[1] & 1 else ">"
    sec, nsec = struct.unpack_from(order + "iI", cdr, 4)
    return sec * 1_000_000_000 + nsec


class Probe:
    """Raw subscriptions recording (header stamp, publish time) per topic; thread-safe appends."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.seen: dict[str, list[tuple[int, int]]] = {t: [] for t in TOPIC_TYPES}
        self._lock = threading.Lock()
        for topic, typ in TOPIC_TYPES.items():
            transport.create_subscription(topic, typ, self._cb(topic), "sensor_data", raw=True)

    def _cb(self, topic: str) -> Any:
        def on(raw: Any) -> None:
            with self._lock:
                self.seen[topic].append((header_stamp_ns(raw.data), int(raw.timestamp_ns)))
        return on


def frame_latencies(seen: dict[str, list[tuple[int, int]]], inputs: tuple[str, ...], output: str
                    ) -> list[tuple[int, float, int]]:
    """``(stamp, latency_ms, t_out_ns)`` per answered frame, in output order.

    The output's first publish for a stamp; the input time is, over the input topics, the latest publish of that
    stamp at or before the output (a lockstep sensor republishes an unanswered frame: the copy the node answered
    is the last one before its answer). Frames whose inputs the probe did not see are skipped."""
    out: dict[int, int] = {}
    for stamp, t in seen[output]:
        out.setdefault(stamp, t)
    rows = []
    for stamp, t_out in sorted(out.items(), key=lambda kv: kv[1]):
        t_in = []
        for topic in inputs:
            ts = [t for s, t in seen[topic] if s == stamp and t <= t_out]
            if not ts:
                break
            t_in.append(max(ts))
        else:
            rows.append((stamp, (t_out - max(t_in)) / 1e6, t_out))
    return rows


def summarize(rows: list[tuple[int, float, int]], warmup: int) -> dict[str, Any]:
    """p50/p99/mean/max latency (ms) and the sustained frame rate over the frames after ``warmup``."""
    kept = rows[warmup:]
    lat = np.array([r[1] for r in kept], float)
    t = np.array([r[2] for r in kept], float) / 1e9
    res: dict[str, Any] = {"frames_measured": len(kept), "frames_answered": len(rows)}
    if len(lat):
        res.update(p50_ms=float(np.percentile(lat, 50)), p99_ms=float(np.percentile(lat, 99)),
                   mean_ms=float(lat.mean()), max_ms=float(lat.max()), latencies_ms=[round(x, 3) for x in lat])
    res["fps"] = float((len(t) - 1) / (t[-1] - t[0])) if len(t) >= 2 and t[-1] > t[0] else None
    return res


def graph_spec(frames: int, device: str, torch_threads: int) -> Any:
    from latentstack.ros.graph import load_graph

    spec = load_graph(REPO / GRAPH)
    for n in spec.nodes:
        if n.kind in ("lidar_scene", "stereo_scene"):
            n.params["frames"] = frames
        if n.kind in ("lidar_detection", "stereo_depth"):
            n.params["device"] = device
            n.params["torch_threads"] = torch_threads
        if n.kind == "recorder":
            n.enabled = False
    return spec.validate()


def run_mode(mode: str, frames: int, device: str, torch_threads: int, timeout: float) -> dict[str, Any]:
    """One graph run with the probe attached; the probe's records and the run's node counters."""
    from latentstack.ros.launcher import make_graph_transport, run_inprocess, run_multiprocess

    spec = graph_spec(frames, device, torch_threads)
    t0 = time.perf_counter()
    if mode == "inproc":
        tr = make_graph_transport(spec, "inproc")
        try:
            probe = Probe(tr)  # delivered by the graph's executor (same transport), raw: no decoding
            run = run_inprocess(spec, transport=tr, timeout=timeout)
        finally:
            tr.close()
    elif mode == "dds":
        dom = random.randint(100, 200)  # a private domain: parallel runs on this host do not cross-talk
        tr = make_graph_transport(spec, "dds", domain_id=dom, config="loopback")
        stop = threading.Event()
        try:
            probe = Probe(tr)

            def spin() -> None:
                while not stop.is_set():
                    tr.spin_once(0.05)

            th = threading.Thread(target=spin, name="probe", daemon=True)
            th.start()
            try:
                run = run_multiprocess(spec, domain_id=dom, timeout=timeout, config="loopback")
                time.sleep(0.5)  # the last answers' samples
            finally:
                stop.set()
                th.join(5)
        finally:
            tr.close()
    else:
        raise ValueError(f"mode must be inproc or dds, got {mode!r}")
    return {"seen": probe.seen, "finished": run.finished, "wall_s": time.perf_counter() - t0,
            "counters": {k: v.get("counters", {}) for k, v in run.stats.items()}}


def cloud_description(seed: int = 200_000) -> str:
    """What '64-beam cloud' means here: the scene's beam pattern and the first frame's point count."""
    from latentstack.sim.lidar_scenes import LidarSceneConfig, scan_sequence

    c = LidarSceneConfig()
    n = len(scan_sequence(seed, 1)[0].points)
    return (f"{c.num_beams}-beam scan, {c.azimuth_fov_deg:g} deg azimuth at {c.azimuth_step_deg:g} deg, "
            f"{n} points after the crop (lidar_scene seed {seed})")


def cpu_name() -> str:
    """CPU model and the cores this process may use (the numbers depend on both)."""
    from latentstack.core.device import cpu_model_name

    name = cpu_model_name()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{name}, {cores} cores"


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(res["modes"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, node in zip(axes, PIPELINES, strict=True):
        data = [res["modes"][m]["nodes"][node].get("latencies_ms", []) for m in modes]
        ax.boxplot(data, whis=(1, 99), showfliers=True)
        ax.set_xticks(range(1, len(modes) + 1), modes)
        for i, m in enumerate(modes):
            s = res["modes"][m]["nodes"][node]
            if s.get("p50_ms") is not None:
                fps = f"{s['fps']:.2f} fps" if s.get("fps") else "fps n/a"
                ax.annotate(f"p50 {s['p50_ms']:.0f} ms\np99 {s['p99_ms']:.0f} ms\n{fps}", (i + 1, s["p50_ms"]),
                            xytext=(8, 0), textcoords="offset points", fontsize=8, va="center")
        ax.set_title(f"{node}\n{res['inputs'][node]}", fontsize=8)
        ax.set_ylabel("stamp -> output publish (ms)")
        ax.grid(alpha=0.3)
    fig.suptitle(f"perception graph latency, {res['device']} ({res['cpu']}), {res['frames']} frames/run", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_summary(res: dict[str, Any], out: Path, command: str) -> None:
    """Replaces the '## Latency' section of <out>/summary.md (other sections are kept)."""
    lines = ["## Latency (issue 16 item 5)", "", f"Command: `{command}`", "",
             f"Device {res['device']}, {res['cpu']}, torch threads per model {res['torch_threads']}; "
             f"{res['frames']} frames per run, the first {res['warmup']} excluded. Inputs: "
             + "; ".join(f"{k}: {v}" for k, v in res["inputs"].items()) + ".", "",
             "| transport | node | frames | p50 ms | p99 ms | mean ms | frame rate (fps) |",
             "|---|---|---|---|---|---|---|"]
    for mode, m in res["modes"].items():
        for node, s in m["nodes"].items():
            fmt = (lambda k, s=s: f"{s[k]:.1f}" if s.get(k) is not None else "n/a")
            lines.append(f"| {mode} | {node} | {s['frames_measured']} | {fmt('p50_ms')} | {fmt('p99_ms')} | "
                         f"{fmt('mean_ms')} | {'n/a' if s.get('fps') is None else format(s['fps'], '.2f')} |")
    lines += ["", ("Latency: output publish time minus the publish time of the input with the same header stamp, "
              "both from the transport clock at publish time (DDS: the writers' source timestamps, so the "
              "cross-process hop is inside the number). Lockstep sensors: the frame rate is back-to-back "
              "answering; the LiDAR and stereo pipelines run at the same time and share the CPU: in one process "
              "both models' worker threads and the executor share the GIL and the cores, over DDS each pipeline "
              "has its own process (the multi-process run can be faster on a multi-core machine). The load from "
              "other jobs on the machine changes the numbers from run to run: indicative. `latency.json` has every "
              "frame's latency; `latency.png` the distributions."), ""]
    path = out / "summary.md"
    old = path.read_text() if path.is_file() else "# Perception graph\n\n"
    head, sep, rest = old.partition("## Latency (issue 16 item 5)")
    tail = ""
    if sep:  # keep any section after ours
        nxt = rest.find("\n## ")
        tail = rest[nxt + 1:] if nxt >= 0 else ""
    path.write_text(head.rstrip() + "\n\n" + "\n".join(lines) + ("\n" + tail if tail else ""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=12, help="frames each simulated sensor streams per run")
    ap.add_argument("--warmup", type=int, default=2, help="first frames excluded (model warm-up, DDS discovery)")
    ap.add_argument("--modes", default="inproc,dds", help="comma-separated: inproc, dds (multi-process)")
    ap.add_argument("--device", default="cpu", help="device of the model nodes: cpu | cuda | cuda:N")
    ap.add_argument("--torch-threads", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--out", default="reports/perception_graph")
    args = ap.parse_args(argv)
    if args.frames < args.warmup + 2:
        ap.error("--frames must be >= --warmup + 2 (a frame rate needs two measured frames)")
    from latentstack.core.device import check_device

    device = check_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = graph_spec(args.frames, device, args.torch_threads)
    st = spec.node("stereo_scene").params
    res: dict[str, Any] = {
        "graph": GRAPH, "device": device, "frames": args.frames, "warmup": args.warmup,
        "torch_threads": args.torch_threads, "cpu": cpu_name(),
        "python": platform.python_version(),
        "inputs": {"lidar_detection": cloud_description(int(spec.node("lidar_scene").params.get("seed", 200_000))),
                   "stereo_depth": f"{st.get('width', 128)}x{st.get('height', 64)} rgb8 pair (stereo_scene)"},
        "modes": {},
    }
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        r = run_mode(mode, args.frames, device, args.torch_threads, args.timeout)
        nodes = {node: summarize(frame_latencies(r["seen"], ins, outp), args.warmup)
                 for node, (ins, outp) in PIPELINES.items()}
        res["modes"][mode] = {"finished": r["finished"], "wall_s": round(r["wall_s"], 2), "nodes": nodes,
                              "counters": r["counters"]}
        print(f"{mode}: {r['wall_s']:.1f} s, finished {r['finished']}; " + "; ".join(
            f"{n} p50 {s.get('p50_ms', float('nan')):.1f} ms p99 {s.get('p99_ms', float('nan')):.1f} ms "
            f"{s['fps'] or 0:.2f} fps ({s['frames_measured']} frames)" for n, s in nodes.items()), flush=True)
    (out / "latency.json").write_text(json.dumps(res, indent=2, default=str))
    plot(res, out / "latency.png")
    cmd = "python benchmarks/perception_graph.py " + " ".join(argv if argv is not None else sys.argv[1:])
    write_summary(res, out, cmd.strip())
    return 0 if all(m["finished"] for m in res["modes"].values()) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "src"))
    raise SystemExit(main())
