"""benchmarks/gpu.py stays runnable: a tiny CPU run writes its JSON, and its comparison can fail."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("gpu_bench", ROOT / "benchmarks" / "gpu.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tiny_cpu_run_writes_checks_and_latency(tmp_path: Path) -> None:
    bench = _bench()
    rc = bench.main(["--device", "cpu", "--tiny", "--models", "vla,korr", "--reps", "2", "--warmup", "0",
                     "--threads", "1", "--out", str(tmp_path)])
    assert rc == 0
    res = json.loads((tmp_path / "gpu.json").read_text())
    assert set(res["checks"]) == {"vla", "korr"}
    for r in res["checks"].values():
        assert r["ok"] and r["max_abs"] == 0.0  # CPU against CPU: the same ops
    lat = res["latency"]["vla"]
    assert lat["chunk_device_resident"]["reps"] == 2 and lat["chunk_from_numpy"]["median_ms"] > 0


def test_compare_flags_a_difference() -> None:
    bench = _bench()
    a = {"x": torch.ones(3), "y": [torch.zeros(2)]}
    assert bench.compare(a, {"x": torch.ones(3), "y": [torch.zeros(2)]}, 1e-3)["ok"]
    bad = bench.compare(a, {"x": torch.ones(3), "y": [torch.full((2,), 0.01)]}, 1e-3)
    assert not bad["ok"] and abs(bad["max_abs"] - 0.01) < 1e-6
    assert not bench.compare([torch.ones(2)], [torch.ones(3)], 1e-3)["ok"]
