"""benchmarks/unilion.py stays runnable: a tiny CPU run (``unilion_test``) writes its JSON / PNG / summary with
token counts that follow the sweeps, and its helpers (density resampling, the linear fit) do what they say."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("mujoco")

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("unilion_bench", ROOT / "benchmarks" / "unilion.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_linear_fit_recovers_a_line_and_flags_a_parabola() -> None:
    bench = _bench()
    x = np.array([1000.0, 2000, 4000, 8000, 16000])
    f = bench.linear_fit(x, 50.0 + 0.03 * x)
    assert f["a"] == pytest.approx(50.0) and f["b_per_1k"] == pytest.approx(30.0)
    assert f["r2"] == pytest.approx(1.0) and abs(f["quad_share"]) < 1e-6 and f["linear"] is True
    assert bench.marginal_per_1k(x[::-1], (50.0 + 0.03 * x)[::-1]) == pytest.approx([30.0] * 4)  # any order
    q = bench.linear_fit(x, 50.0 + 1e-5 * x ** 2)  # quadratic in tokens: not linear
    assert q["quad_share"] > 0.9 and q["linear"] is False
    assert bench.linear_fit([1.0, 2.0], [3.0, 4.0])["linear"] is None  # two points: nothing to judge
    cov = np.array([50000.0, 10000, 90000, 20000, 70000])  # e.g. points, not proportional to the tokens
    g = bench.linear_fit(x, 50.0 + 0.03 * x + 0.005 * cov, cov)
    assert g["b_per_1k"] == pytest.approx(30.0) and g["c"] == pytest.approx(0.005) and g["linear"] is True
    assert bench.linear_fit(x, 50.0 + 0.03 * x + 0.005 * cov)["r2"] < 0.99  # without the covariate: a worse line


def test_density_cloud_subsamples_and_adds_jittered_copies() -> None:
    bench = _bench()
    rng = np.random.default_rng(1)
    pts = np.c_[rng.uniform(0, 10, (200, 3)), rng.uniform(0, 1, 200)].astype(np.float32)
    half = bench.density_cloud(pts, 0.5, (0.4, 0.4, 0.25))
    assert len(half) == 100 and all(any(np.array_equal(p, q) for q in pts) for p in half[:5])
    triple = bench.density_cloud(pts, 3, (0.4, 0.4, 0.25))
    assert len(triple) == 600 and np.array_equal(triple[:200], pts)
    assert np.array_equal(triple[200:400, 3], pts[:, 3]) and np.array_equal(triple[400:, 3], pts[:, 3])
    assert not np.allclose(triple[200:400, :3], pts[:, :3])
    # copy 2 is jittered more than copy 1 (sigma (1 + i/2) voxel sizes)
    d1 = np.abs(triple[200:400, :3] - pts[:, :3]).mean()
    d2 = np.abs(triple[400:, :3] - pts[:, :3]).mean()
    assert d2 > d1
    assert np.array_equal(bench.density_cloud(pts, 3, (0.4, 0.4, 0.25)), triple)  # seeded
    with pytest.raises(ValueError):
        bench.density_cloud(pts, 2.5, (0.4, 0.4, 0.25))


def test_tiny_cpu_run_writes_report(tmp_path: Path) -> None:
    bench = _bench()
    rc = bench.main(["--device", "cpu", "--preset", "unilion_test", "--threads", "1", "--repeats", "2",
                     "--warmup", "0", "--density", "0.5", "1", "2", "--image-sizes", "16x24", "32x48",
                     "--cameras", "1", "2", "--out", str(tmp_path)])
    assert rc == 0
    res = json.loads((tmp_path / "bench_unilion.json").read_text())
    assert res["scene"]["lidar_identical_across_camera_setups"] is True
    run = res["runs"]["threads1"]
    # density sweep (mode L): more points -> more LiDAR voxels; no camera / temporal tokens
    vox = run["voxels"]
    assert [r["density"] for r in vox] == [0.5, 1, 2]
    assert vox[0]["points"] < vox[1]["points"] < vox[2]["points"]
    assert vox[0]["num_tokens"]["lidar"] < vox[1]["num_tokens"]["lidar"] < vox[2]["num_tokens"]["lidar"]
    assert all(r["num_tokens"]["camera"] == r["num_tokens"]["temporal"] == 0 for r in vox)
    for r in vox:  # the VFE is part of the forward: timed alone, it is positive and (in medians) the rest is too
        assert 0 < r["vfe_wall_ms_p50"] and r["after_vfe_wall_ms_p50"] == pytest.approx(
            r["wall_ms_p50"] - r["vfe_wall_ms_p50"])
    # image sweep (mode LC): the LiDAR tokens are the same, camera tokens grow with pixels
    img = {r["setup"]: r for r in run["images"]}
    assert set(img) == {"16x24 x2cam", "32x48 x2cam", "32x48 x1cam"}
    assert len({r["num_tokens"]["lidar"] for r in img.values()}) == 1
    cam = {k: r["num_tokens"]["camera"] for k, r in img.items()}
    assert 0 < cam["16x24 x2cam"] < cam["32x48 x2cam"] and 0 < cam["32x48 x1cam"] < cam["32x48 x2cam"]
    # modes: each kind of token appears exactly in the modes that name it; ratios to L
    modes = run["modes"]
    for m, r in modes.items():
        assert (r["num_tokens"]["camera"] > 0) == ("C" in m) and (r["num_tokens"]["temporal"] > 0) == ("T" in m)
        assert r["num_tokens"]["lidar"] == modes["L"]["num_tokens"]["lidar"] == vox[1]["num_tokens"]["lidar"]
        assert 0 < r["wall_ms_p50"] <= r["wall_ms_p90"] and len(r["wall_ms"]) == 2
        assert r["thread_cpu_ms_p50"] > 0  # one thread: its CPU time is recorded
        assert run["ratio_to_L"][m] == pytest.approx(r["wall_ms_p50"] / modes["L"]["wall_ms_p50"])
    assert run["ratio_to_L"]["L"] == 1.0
    fit = run["fits"]["voxels_vs_lidar_tokens"]["wall_p50"]
    assert fit["n"] == 3 and np.isfinite(fit["b"]) and isinstance(fit["linear"], bool)
    assert len(fit["marginal_ms_per_1k"]) == 2
    assert set(res["headline"]) == {"threads1"}
    assert (tmp_path / "bench_unilion.png").stat().st_size > 0
    summary = (tmp_path / "summary.md").read_text()
    assert "benchmarks/unilion.py --device cpu --preset unilion_test" in summary and "| LCT |" in summary


def test_cuda_request_without_cuda_is_an_error(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present: the GPU path is exercised by running the benchmark there")
    with pytest.raises(SystemExit):
        _bench().main(["--device", "cuda", "--out", str(tmp_path)])
