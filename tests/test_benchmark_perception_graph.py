"""Smoke test of benchmarks/perception_graph.py: latency matching on synthetic records, and a 3-frame run of the
perception graph in one process and over DDS (multi-process) writing latency.json / latency.png / summary.md."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("matplotlib")

REPO = Path(__file__).resolve().parents[1]


def _bench():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import perception_graph
    finally:
        sys.path.pop(0)
    return perception_graph


def test_header_stamp_from_cdr_and_latency_matching():
    from latentstack import msgs

    pg = _bench()
    img = msgs.image_to_msg(np.zeros((2, 3), np.uint8), stamp=5_123_456_789)
    assert pg.header_stamp_ns(msgs.encode(img)) == 5_123_456_789
    cloud = msgs.pointcloud2_from_numpy(np.zeros(3, [("x", "<f4")]), stamp=-2_000_000_001)
    assert pg.header_stamp_ns(msgs.encode(cloud)) == -2_000_000_001
    ms = 1_000_000
    seen = {
        # frame 100 published twice (a lockstep republish): the copy before the answer counts; frame 300's
        # input was not seen by the probe: skipped
        "/in": [(100, 0), (100, 50 * ms), (200, 300 * ms), (200, 900 * ms)],
        "/in2": [(100, 60 * ms), (200, 310 * ms)],
        "/out": [(100, 160 * ms), (100, 170 * ms), (200, 510 * ms), (300, 700 * ms)],
    }
    rows = pg.frame_latencies(seen, ("/in", "/in2"), "/out")
    assert [(s, round(lat, 6)) for s, lat, _ in rows] == [(100, 100.0), (200, 200.0)]
    res = pg.summarize(rows, warmup=0)
    assert res["p50_ms"] == pytest.approx(150.0) and res["max_ms"] == pytest.approx(200.0)
    assert res["fps"] == pytest.approx(1 / 0.35)
    assert pg.summarize(rows, warmup=1)["fps"] is None  # one frame: no rate


def test_benchmark_runs_both_transports_and_writes_its_report(tmp_path):
    modes = "inproc,dds" if importlib.util.find_spec("cyclonedds") else "inproc"
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "pg"
    out.mkdir()
    (out / "summary.md").write_text("# Perception graph\n\n## Frame\n\nkept\n")
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/perception_graph.py"), "--frames", "3", "--warmup", "1",
         "--modes", modes, "--out", str(out)], check=False, cwd=REPO, env=env, capture_output=True, text=True,
        timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "latency.json").read_text())
    assert list(res["modes"]) == modes.split(",")
    for mode, m in res["modes"].items():
        assert m["finished"], mode
        for node in ("lidar_detection", "stereo_depth"):
            s = m["nodes"][node]
            assert s["frames_answered"] == 3 and s["frames_measured"] == 2, (mode, node, s)
            assert 0 < s["p50_ms"] <= s["p99_ms"] <= s["max_ms"] < 60_000
            assert s["fps"] > 0
    assert "64-beam" in res["inputs"]["lidar_detection"]
    assert (out / "latency.png").stat().st_size > 0
    summary = (out / "summary.md").read_text()
    assert "## Frame" in summary and "kept" in summary  # other sections are kept
    assert "python benchmarks/perception_graph.py --frames 3" in summary and "| stereo_depth |" in summary
