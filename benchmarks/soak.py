"""Soak benchmark: RSS and throughput of node graphs over minutes (issue 14: "flat RSS over >= 10 minutes").

Scenarios (each in its own process with ``--scenario all``, so they can run in parallel):

- ``metaworld``: the MetaWorld closed loop (``ros/graphs/metaworld.yaml``: sim bridge + the shipped VLA policy
  node, in-process transport, lockstep), episodes back to back over the suite's test seeds, cycling through the
  tasks (task changes every episode, so the env is closed and rebuilt each time: a leak there shows up).
- ``perception``: ``lidar_detection`` (``policies/lion_tiny``) fed synthetic PointCloud2 scans from the MuJoCo
  LiDAR scene generator, and ``stereo_depth`` (``policies/stereo_sa2_tiny``) fed rectified random-texture pairs
  with a known disparity + CameraInfo, each at a fixed rate (a frame that is late is skipped, never bursted).

Every ``--sample-s`` seconds the process RSS (psutil if installed, else ``/proc/self/status`` VmRSS) and the
messages/s since the last sample are recorded. The result per scenario: ``<out>/<scenario>.json`` (samples,
RSS start/end, RSS slope in MB/min by least squares over the second half of the run, throughput) and
``<out>/soak.png`` (RSS and throughput vs time, one panel per scenario).

    python benchmarks/soak.py --scenario all --minutes 10 --out reports/soak
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")
REPO = Path(__file__).resolve().parents[1]
SCENARIOS = ("metaworld", "perception")


# ----------------------------------------------------------------------------- measurement
def rss_mb() -> float:
    """Resident set size of this process in MiB (psutil when available, else /proc/self/status)."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("cannot read the RSS (no psutil, no /proc/self/status)")


def rss_slope_mb_per_min(t_s: list[float], rss: list[float]) -> float:
    """Least-squares slope of RSS vs time over the second half of the run (warm-up excluded), MB/min."""
    t = np.asarray(t_s, float)
    r = np.asarray(rss, float)
    keep = t >= t[-1] / 2 if len(t) else t.astype(bool)
    t, r = t[keep], r[keep]
    if len(t) < 2 or np.ptp(t) == 0:
        return float("nan")
    return float(np.polyfit(t / 60.0, r, 1)[0])


class Sampler:
    """Samples RSS and counters every ``every_s`` seconds; ``counts()`` returns cumulative message counts."""

    def __init__(self, counts: Callable[[], dict[str, int]], every_s: float, progress: bool, label: str) -> None:
        self.counts = counts
        self.every_s = every_s
        self.progress = progress
        self.label = label
        self.t0 = time.monotonic()
        self.samples: list[dict[str, Any]] = []
        self._last_t = self.t0
        self._last_c = counts()
        self.sample(force=True)

    def sample(self, force: bool = False) -> None:
        now = time.monotonic()
        if (not force and now - self._last_t < self.every_s) or (self.samples and now - self._last_t < 0.05):
            return
        c = self.counts()
        dt = now - self._last_t
        rates = {k: (v - self._last_c.get(k, 0)) / dt if dt > 0 else 0.0 for k, v in c.items()}
        s = {"t_s": round(now - self.t0, 3), "rss_mb": round(rss_mb(), 2), "counts": c,
             "rate_per_s": {k: round(v, 3) for k, v in rates.items()}}
        self.samples.append(s)
        self._last_t, self._last_c = now, c
        if self.progress:
            print(f"[{self.label}] t={s['t_s']:7.1f}s rss={s['rss_mb']:8.1f}MB "
                  + " ".join(f"{k}={v:.2f}/s" for k, v in rates.items()), flush=True)


def summarize(scenario: str, samples: list[dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
    t = [s["t_s"] for s in samples]
    r = [s["rss_mb"] for s in samples]
    dur = t[-1] if t else 0.0
    last = samples[-1]["counts"] if samples else {}
    first = samples[0]["counts"] if samples else {}
    # throughput over the whole run, and over the second half (steady state)
    half = [s for s in samples if s["t_s"] >= dur / 2] or samples
    th = {k: (last[k] - first.get(k, 0)) / dur if dur > 0 else 0.0 for k in last}
    hdur = half[-1]["t_s"] - half[0]["t_s"]
    th2 = {k: (half[-1]["counts"][k] - half[0]["counts"].get(k, 0)) / hdur if hdur > 0 else 0.0 for k in last}
    return {
        "scenario": scenario,
        "duration_s": round(dur, 2),
        "n_samples": len(samples),
        "rss_start_mb": r[0] if r else None,
        "rss_end_mb": r[-1] if r else None,
        "rss_max_mb": max(r) if r else None,
        "rss_second_half_slope_mb_per_min": round(rss_slope_mb_per_min(t, r), 4) if len(r) >= 2 else None,
        "throughput_per_s": {k: round(v, 3) for k, v in th.items()},
        "throughput_second_half_per_s": {k: round(v, 3) for k, v in th2.items()},
        "totals": last,
        **extra,
        "samples": samples,
    }


# ----------------------------------------------------------------------------- scenarios
def run_metaworld(seconds: float, sample_s: float, progress: bool, policy: str) -> dict[str, Any]:
    """Sim bridge + VLA policy node on the in-process bus, episodes cycling over tasks x test seeds."""
    import torch

    from latentstack.nodes.sim_bridge import Episode, SimBridgeParams, plan_episodes
    from latentstack.ros.graph import load_graph
    from latentstack.ros.launcher import build_graph, make_graph_transport
    from latentstack.sim.suites import load_suite

    torch.set_num_threads(1)
    spec = load_graph(str(REPO / "ros/graphs/metaworld.yaml"))
    spec.node("policy_node").params.update(policy=policy)
    suite = load_suite(spec.node("sim_bridge").params.get("suite", "metaworld_mt6"))
    seeds = list(suite.seeds["test"])
    # more episodes than any soak can finish; interleaved: task changes every episode, seed every len(tasks)
    base, _ = plan_episodes(SimBridgeParams(suite=suite.name, episodes_per_task=1))
    n = len(base) * len(seeds) * 4
    episodes = [Episode(base[i % len(base)].task, seeds[(i // len(base)) % len(seeds)], base[i % len(base)].instruction,
                        base[i % len(base)].max_episode_steps) for i in range(n)]
    # explicit episodes: the bridge then needs the suite's image size / camera as parameters
    spec.node("sim_bridge").params.update(image_size=suite.image_size, camera=suite.camera)
    spec.validate()
    tr = make_graph_transport(spec)
    graph = build_graph(spec, tr, node_kwargs={"sim_bridge": {"episodes": episodes}})
    sim = graph.sim_bridges[0]
    pol = graph.nodes["policy_node"]

    def counts() -> dict[str, int]:
        published = sum(p.published for nd in graph.nodes.values() for p in nd.publishers)
        # env steps actually taken (finished episodes + the current one); the policy's /action count also holds
        # the watchdog holds it sends while the bridge rebuilds an env (a lockstep bridge ignores those)
        steps = sum(r.length for r in sim.results) + sim._t
        actions = sum(pub.published for pub in pol.publishers if pub.topic.endswith("/action"))
        return {"sim_steps": int(steps), "actions_published": int(actions), "episodes": len(sim.results),
                "messages": int(published)}

    try:
        graph.start()
        sampler = Sampler(counts, sample_s, progress, "metaworld")
        end = time.monotonic() + seconds
        while time.monotonic() < end and not graph.finished():
            graph.executor.spin_once(0.05)
            sampler.sample()
        sampler.sample(force=True)
        stats = graph.stats()
    finally:
        graph.close()
        tr.close()
    # every node counter (errors, invalid messages, watchdog holds, ...) and the rate-limited log lines dropped
    counters = {name: {"counters": st["counters"], "log_suppressed": st["log_suppressed"]} for name, st in stats.items()}
    return summarize("metaworld", sampler.samples, {
        "graph": "ros/graphs/metaworld.yaml", "policy": policy, "transport": "inproc",
        "episodes_done": len(sim.results), "successes": sum(r.success for r in sim.results),
        "node_counters": counters})


def _stereo_pair(rng: np.random.Generator, h: int, w: int, disp: int) -> tuple[np.ndarray, np.ndarray]:
    """A random-texture rectified pair: the right image is the left shifted by ``disp`` pixels."""
    big = rng.integers(0, 256, (h // 4 + 1, (w + disp) // 4 + 1, 3), dtype=np.uint8)
    tex = np.repeat(np.repeat(big, 4, 0), 4, 1)[:h, : w + disp]  # 4x4 blocks: something to match
    left = np.ascontiguousarray(tex[:, disp: disp + w])
    right = np.ascontiguousarray(tex[:, :w])
    return left, right


def run_perception(seconds: float, sample_s: float, progress: bool, lidar_hz: float, stereo_hz: float,
                   stereo_size: tuple[int, int], async_inference: bool = False) -> dict[str, Any]:
    """lidar_detection (lion_tiny) + stereo_depth (stereo_sa2_tiny) on one in-process bus, fed at fixed rates."""
    import torch

    from latentstack import msgs
    from latentstack.nodes import Executor
    from latentstack.nodes.lidar_detection import (
        DETECTIONS_TYPE,
        POINTCLOUD_TYPE,
        LidarDetectionNodeCore,
        LidarDetectionParams,
    )
    from latentstack.nodes.stereo_depth import DISPARITY_TYPE, StereoDepthNodeCore, StereoDepthParams
    from latentstack.sim.lidar_scenes import generate_scan
    from latentstack.transport import SENSOR_DATA, InProcTransport

    torch.set_num_threads(1)
    tr = InProcTransport()
    # async_inference=False: inference in the callbacks (as reports/soak/perception.json was measured);
    # True (--async-inference): the nodes' default, the models on their worker threads (reports/soak/async/)
    lidar = LidarDetectionNodeCore(tr, LidarDetectionParams(model="policies/lion_tiny",
                                                            async_inference=async_inference))
    stereo = StereoDepthNodeCore(tr, StereoDepthParams(model="policies/stereo_sa2_tiny",
                                                       async_inference=async_inference))
    ex = Executor([lidar, stereo])
    pc_pub = tr.create_publisher("/points", POINTCLOUD_TYPE, SENSOR_DATA)
    l_pub = tr.create_publisher("/left/image_rect", "sensor_msgs/msg/Image", SENSOR_DATA)
    r_pub = tr.create_publisher("/right/image_rect", "sensor_msgs/msg/Image", SENSOR_DATA)
    li_pub = tr.create_publisher("/left/camera_info", "sensor_msgs/msg/CameraInfo", SENSOR_DATA)
    ri_pub = tr.create_publisher("/right/camera_info", "sensor_msgs/msg/CameraInfo", SENSOR_DATA)
    got = {"detections": 0, "depth": 0, "disparity": 0}

    def counter(key: str) -> Callable[[Any], None]:
        def cb(_msg: Any) -> None:
            got[key] += 1
        return cb

    tr.create_subscription("/detections", DETECTIONS_TYPE, counter("detections"), SENSOR_DATA)
    tr.create_subscription("/depth", "sensor_msgs/msg/Image", counter("depth"), SENSOR_DATA)
    tr.create_subscription("/disparity", DISPARITY_TYPE, counter("disparity"), SENSOR_DATA)

    # a fixed pool of inputs, re-sent with fresh stamps (the node decodes each message anew)
    scans = [generate_scan(s).points for s in range(4)]
    rng = np.random.default_rng(0)
    h, w = stereo_size
    pairs = [_stereo_pair(rng, h, w, d) for d in (4, 8, 12, 16)]
    f, baseline = 0.8 * w, 0.1
    sent = {"clouds": 0, "stereo_pairs": 0}

    def send_cloud(stamp: int) -> None:
        pts = scans[sent["clouds"] % len(scans)]
        arr = np.zeros(len(pts), dtype=[(k, np.float32) for k in ("x", "y", "z", "intensity")])
        for i, k in enumerate(("x", "y", "z", "intensity")):
            arr[k] = pts[:, i]
        pc_pub.publish(msgs.pointcloud2_from_numpy(arr, stamp=stamp, frame_id="lidar"))
        sent["clouds"] += 1

    def send_pair(stamp: int) -> None:
        left, right = pairs[sent["stereo_pairs"] % len(pairs)]
        li_pub.publish(msgs.camera_info(w, h, f, f, w / 2, h / 2, stamp=stamp, frame_id="left"))
        rinfo = msgs.camera_info(w, h, f, f, w / 2, h / 2, stamp=stamp, frame_id="right")
        rinfo.p[3] = -f * baseline  # ROS stereo convention: P[0,3] = -f*B
        ri_pub.publish(rinfo)
        l_pub.publish(msgs.image_to_msg(left, stamp=stamp, frame_id="left"))
        r_pub.publish(msgs.image_to_msg(right, stamp=stamp, frame_id="left"))
        sent["stereo_pairs"] += 1

    def counts() -> dict[str, int]:
        return {"lidar_frames": int(lidar.frames), "stereo_frames": int(stereo.frames),
                "messages_in": int(sum(s.received for nd in (lidar, stereo) for s in nd.subscriptions)),
                **{k: int(v) for k, v in sent.items()}}

    # warm-up outside the measured window: the first inference of each model is much slower (lazy init)
    tw = time.monotonic()
    send_cloud(tr.now_ns())
    send_pair(tr.now_ns())
    while ex.spin_once(0.0):
        pass
    if async_inference:  # the first inferences run on the workers: wait for them, then deliver their outputs
        for nd in (lidar, stereo):
            nd.wait_idle(600.0)
        while ex.spin_once(0.0):
            pass
    warmup_s = time.monotonic() - tw
    schedule = [(1.0 / lidar_hz, send_cloud), (1.0 / stereo_hz, send_pair)]
    t0 = time.monotonic()
    due = [t0 for _ in schedule]
    try:
        sampler = Sampler(counts, sample_s, progress, "perception")
        end = t0 + seconds
        while time.monotonic() < end:
            now = time.monotonic()
            for i, (period, send) in enumerate(schedule):
                if now >= due[i]:
                    send(tr.now_ns())
                    due[i] += period * (1 + (now - due[i]) // period)  # late frames are skipped, not bursted
            while ex.spin_once(0.0):  # deliver everything pending (inference runs here)
                pass
            sampler.sample()
            time.sleep(max(0.0, min(min(due) - time.monotonic(), 0.05)))
        sampler.sample(force=True)
        stats = {"lidar_detection": lidar.stats(), "stereo_depth": stereo.stats()}
    finally:
        ex.close()
        tr.close()
    # every node counter (errors, invalid messages, watchdog holds, ...) and the rate-limited log lines dropped
    counters = {name: {"counters": st["counters"], "log_suppressed": st["log_suppressed"]} for name, st in stats.items()}
    return summarize("perception", sampler.samples, {
        "lidar_model": "policies/lion_tiny", "stereo_model": "policies/stereo_sa2_tiny", "transport": "inproc",
        "async_inference": async_inference, "lidar_rate_hz": lidar_hz, "stereo_rate_hz": stereo_hz, "stereo_size_hw": [h, w],
        "lidar_points_per_cloud": [len(s) for s in scans], "outputs_received": dict(got),
        "warmup_s": round(warmup_s, 2),
        "node_counters": counters})


# ----------------------------------------------------------------------------- report
def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    for ax, res in zip(axes[0], results):
        t = [s["t_s"] / 60 for s in res["samples"]]
        ax.plot(t, [s["rss_mb"] for s in res["samples"]], "C0-", label="RSS (MB)")
        ax.set_xlabel("time (min)")
        ax.set_ylabel("RSS (MB)", color="C0")
        ax.set_title(f"{res['scenario']}: RSS slope (2nd half) {res['rss_second_half_slope_mb_per_min']:+.3f} MB/min",
                     fontsize=9)
        ax2 = ax.twinx()
        keys = [k for k in res["samples"][-1]["rate_per_s"] if k in ("sim_steps", "lidar_frames", "stereo_frames")]
        for j, k in enumerate(keys):
            ax2.plot(t[1:], [s["rate_per_s"][k] for s in res["samples"][1:]], f"C{j + 1}--", label=f"{k}/s")
        ax2.set_ylabel("throughput (1/s)")
        lines = ax.get_legend_handles_labels()
        lines2 = ax2.get_legend_handles_labels()
        ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def machine() -> dict[str, Any]:
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "cpu_count": os.cpu_count(),
            "platform": platform.platform(), "psutil": _has_psutil()}


def _has_psutil() -> bool:
    try:
        import psutil  # noqa: F401
    except ImportError:
        return False
    return True


def run_one(args: argparse.Namespace, scenario: str) -> dict[str, Any]:
    seconds = args.seconds if args.seconds is not None else args.minutes * 60.0
    progress = not args.quiet and sys.stdout.isatty()
    if scenario == "metaworld":
        res = run_metaworld(seconds, args.sample_s, progress, args.policy)
    else:
        res = run_perception(seconds, args.sample_s, progress, args.lidar_hz, args.stereo_hz,
                             (args.stereo_height, args.stereo_width), async_inference=args.async_inference)
    res["machine"] = machine()
    res["requested_s"] = seconds
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenario", choices=(*SCENARIOS, "all"), default="all",
                    help="all: each scenario in its own child process, in parallel")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--seconds", type=float, default=None, help="overrides --minutes (smoke tests)")
    ap.add_argument("--sample-s", type=float, default=5.0, help="RSS/throughput sampling period")
    ap.add_argument("--out", default="reports/soak")
    ap.add_argument("--policy", default="policies/vla_metaworld_mt6")
    ap.add_argument("--lidar-hz", type=float, default=2.0)
    ap.add_argument("--stereo-hz", type=float, default=1.0)
    ap.add_argument("--stereo-height", type=int, default=128)
    ap.add_argument("--stereo-width", type=int, default=256)
    ap.add_argument("--async-inference", action="store_true",
                    help="perception: run the models on the nodes' worker threads (their default) instead of in the "
                         "callbacks")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()  # before the chdir: --out is relative to the caller's directory
    out.mkdir(parents=True, exist_ok=True)
    os.chdir(REPO)  # shipped artifacts (policies/...) resolve repo-relative
    if args.scenario == "all":
        # separate processes: independent RSS, and two cores can run them side by side
        base = [a for a in (argv if argv is not None else sys.argv[1:])]
        procs = []
        for sc in SCENARIOS:
            cmd = [sys.executable, str(Path(__file__).resolve()), *_replace_scenario(base, sc)]
            procs.append(subprocess.Popen(cmd))
        rcs = [p.wait() for p in procs]
        if any(rcs):
            print(f"scenario process(es) failed: {dict(zip(SCENARIOS, rcs))}", file=sys.stderr)
            return 1
        results = [json.loads((out / f"{sc}.json").read_text()) for sc in SCENARIOS]
    else:
        res = run_one(args, args.scenario)
        res["command"] = "python benchmarks/soak.py " + " ".join(_replace_scenario(
            list(argv if argv is not None else sys.argv[1:]), args.scenario))
        (out / f"{args.scenario}.json").write_text(json.dumps(res, indent=1) + "\n")
        results = [res]
    plot(results, out / ("soak.png" if args.scenario == "all" else f"{args.scenario}.png"))
    for r in results:
        print(f"{r['scenario']}: {r['duration_s']:.0f} s, RSS {r['rss_start_mb']:.1f} -> {r['rss_end_mb']:.1f} MB, "
              f"slope (2nd half) {r['rss_second_half_slope_mb_per_min']:+.3f} MB/min, "
              f"throughput {r['throughput_per_s']}")
    return 0


def _replace_scenario(argv: list[str], scenario: str) -> list[str]:
    """argv with ``--scenario`` set to ``scenario``."""
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--scenario":
            skip = True
            continue
        if a.startswith("--scenario="):
            continue
        out.append(a)
    return ["--scenario", scenario, *out]


if __name__ == "__main__":
    raise SystemExit(main())
