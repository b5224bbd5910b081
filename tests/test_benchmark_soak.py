"""Smoke test of benchmarks/soak.py: both scenarios run a few seconds (in parallel) and write their report."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("metaworld")
pytest.importorskip("matplotlib")

REPO = Path(__file__).resolve().parents[1]


def test_soak_slope_is_least_squares_over_the_second_half() -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import soak
    finally:
        sys.path.pop(0)
    t = [0.0, 60.0, 120.0, 180.0, 240.0]
    # a warm-up jump in the first half must not count; 2 MB/min afterwards
    rss = [100.0, 300.0, 302.0, 304.0, 306.0]
    assert soak.rss_slope_mb_per_min(t, rss) == pytest.approx(2.0)
    assert soak.rss_slope_mb_per_min(t, [300.0] * 5) == pytest.approx(0.0, abs=1e-9)
    assert soak.rss_mb() > 0


def test_soak_both_scenarios_write_json_and_png(tmp_path: Path) -> None:
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "soak"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/soak.py"), "--scenario", "all", "--seconds", "4", "--sample-s", "1",
         "--out", str(out)], check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "soak.png").stat().st_size > 0
    for scenario, work_key in (("metaworld", "sim_steps"), ("perception", "lidar_frames"),
                               ("perception", "stereo_frames")):
        res = json.loads((out / f"{scenario}.json").read_text())
        assert res["scenario"] == scenario
        assert res["duration_s"] >= 3.5 and res["n_samples"] >= 3
        assert res["rss_start_mb"] > 0 and res["rss_end_mb"] > 0
        assert math.isfinite(res["rss_second_half_slope_mb_per_min"])
        assert res["totals"][work_key] > 0, f"{scenario}: no {work_key} in {res['totals']}"
        assert res["throughput_per_s"][work_key] > 0
        assert [s["t_s"] for s in res["samples"]] == sorted(s["t_s"] for s in res["samples"])
    per = json.loads((out / "perception.json").read_text())
    assert per["outputs_received"]["depth"] == per["totals"]["stereo_frames"]
    assert per["outputs_received"]["detections"] == per["totals"]["lidar_frames"]
    mw = json.loads((out / "metaworld.json").read_text())
    assert all("callback_error" not in c["counters"] for c in mw["node_counters"].values())
