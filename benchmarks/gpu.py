"""Models on a GPU: per-model device-vs-CPU correctness, then the VLA chunk latency. One prepared script per call.

    PYTHONPATH=src python benchmarks/gpu.py --device cuda                 # on a GPU machine -> $OUT/gpu.json
    PYTHONPATH=src python benchmarks/gpu.py --device cpu --tiny --out /tmp/g   # smoke run anywhere (tiny models)

Correctness (``checks``): each model is built on the CPU (the shipped artifact under ``policies/``, or a seeded
tiny model with ``--tiny`` or when the artifact does not load), deep-copied and ``.to(device)``-ed, and both run
the same inputs through the model's own entry point, with TF32 off:

- ``vla``: ``predict_action_chunk`` on a numpy batch (the processor converts on the device; noise from the same
  seeded CPU generator), then ``select_action`` for one chunk;
- ``act``: ``select_action`` of the LeRobot ACT adapter (skipped when lerobot is not installed);
- ``lion``: the detection forward (head maps) on two synthetic clouds;
- ``stereo``: the SA2-tiny forward (all refinement iterations' disparities) on a padded uint8 pair;
- ``korr``: residual actor mean / critic value / seeded sample, and the chunk base's action chunk.

A check passes when every output agrees with the CPU within ``rtol = atol = --tol`` (1e-3: fp32 on another
device's kernels). ``max_abs`` / ``max_rel`` are reported either way; a model that fails to load or to run
records ``error`` (and the script exits 1).

Latency (``latency``): ``VLAPolicy.predict_action_chunk`` at batch 1 with the inputs already processed onto the
device (the GPU-resident case of spec gpu.md) and end to end from numpy; CUDA events around each call on CUDA
(``perf_counter`` on the CPU), ``--warmup`` untimed calls, median of ``--reps`` (20) timed calls.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("vla", "act", "lion", "stereo", "korr")


# --------------------------------------------------------------------------- comparison / timing helpers
def _flat(x: Any) -> list[torch.Tensor]:
    """Tensors (or numpy arrays) of a nested output, in a fixed order."""
    if isinstance(x, torch.Tensor):
        return [x.detach()]
    if isinstance(x, np.ndarray):
        return [torch.from_numpy(np.ascontiguousarray(x))]
    if isinstance(x, dict):
        return [t for k in sorted(x) for t in _flat(x[k])]
    if isinstance(x, (list, tuple)):
        return [t for v in x for t in _flat(v)]
    return []


def compare(out: Any, ref: Any, tol: float) -> dict[str, Any]:
    """max |out − ref|, max |out − ref| / (|ref| + tol) and whether all agree within rtol = atol = tol."""
    a, b = _flat(out), _flat(ref)
    if len(a) != len(b) or not a:
        return {"ok": False, "error": f"{len(a)} output tensors vs {len(b)} on the CPU"}
    max_abs = max_rel = 0.0
    ok = True
    for x, y in zip(a, b):
        x, y = x.cpu().double(), y.cpu().double()
        if x.shape != y.shape:
            return {"ok": False, "error": f"shape {tuple(x.shape)} vs {tuple(y.shape)}"}
        if x.numel() == 0:
            continue
        d = (x - y).abs()
        max_abs = max(max_abs, float(d.max()))
        max_rel = max(max_rel, float((d / (y.abs() + tol)).max()))
        ok = ok and bool(torch.allclose(x, y, rtol=tol, atol=tol))
    return {"ok": ok, "max_abs": max_abs, "max_rel": max_rel, "n_tensors": len(a)}


def timed(fn: Callable[[], Any], device: torch.device, reps: int, warmup: int) -> dict[str, Any]:
    """Median of ``reps`` timed calls after ``warmup`` untimed ones (CUDA events on CUDA)."""
    for _ in range(warmup):
        fn()
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    else:
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times),
            "reps": reps, "warmup": warmup, "timer": "cuda_events" if device.type == "cuda" else "perf_counter"}


# --------------------------------------------------------------------------- model builders
def _shipped(tiny: bool, what: str, load: Any) -> Any:
    """The shipped artifact (``load()``), or None with a note when ``--tiny`` or it cannot be loaded (the caller
    then builds a seeded model and records which one ran)."""
    if tiny:
        return None
    try:
        return load()
    except Exception as exc:  # noqa: BLE001 (artifact missing or unreadable: fall back, say so)
        print(f"[gpu] shipped {what} not loaded ({exc!r}); using a seeded model", file=sys.stderr)
        return None


def _vla(tiny: bool) -> tuple[Any, str]:
    from latentstack.policies.vla import VLAPolicy, get_vla_config

    if not tiny:
        try:
            from latentstack.policies.factory import make_policy

            return make_policy(str(ROOT / "policies" / "vla_metaworld_mt6")), "policies/vla_metaworld_mt6"
        except Exception as exc:  # noqa: BLE001 (artifact missing or unreadable: fall back, say so)
            print(f"[gpu] shipped VLA not loaded ({exc!r}); using vla_tiny", file=sys.stderr)
    vocab = ("<pad>", "<unk>", "close", "the", "drawer", "press", "button", "top")
    return VLAPolicy(get_vla_config("vla_tiny", vocab=vocab, seed=3)), "vla_tiny (seed 3)"


def _vla_batch(policy: Any, b: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    s = policy.config.image_size
    texts = ["close the drawer", "press the button top"]
    return {"image": rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8),
            "state": rng.normal(size=(b, policy.config.state_dim)).astype(np.float32),
            "instruction": [texts[i % 2] for i in range(b)]}


def check_vla(device: torch.device, tiny: bool, tol: float) -> dict[str, Any]:
    cpu, source = _vla(tiny)
    dev = copy.deepcopy(cpu).to(device)
    batch = _vla_batch(cpu, 2, 0)
    ref = cpu.predict_action_chunk(batch, generator=torch.Generator().manual_seed(1))
    out = dev.predict_action_chunk(batch, generator=torch.Generator().manual_seed(1))
    cpu.reset(seed=2)
    dev.reset(seed=2)
    obs = {k: v[0] for k, v in batch.items()}
    n = cpu.config.n_action_steps
    a_ref = [cpu.select_action(obs) for _ in range(n)]
    a_out = [dev.select_action(obs) for _ in range(n)]
    return {"source": source, "device_of_output": str(out.device), **compare([out, a_out], [ref, a_ref], tol)}


def check_act(device: torch.device, tiny: bool, tol: float) -> dict[str, Any]:
    try:
        import lerobot  # noqa: F401
    except ImportError:
        return {"skipped": "lerobot is not installed here"}
    from latentstack.policies.lerobot_act import ACTAdapter, make_act_config
    from latentstack.policies.lerobot_act.configuration_act import act_dataset_stats

    cpu = _shipped(tiny, "ACT", lambda: ACTAdapter.from_pretrained(ROOT / "policies" / "act_metaworld_mt6"))
    source = "act_tiny (seed 0)" if cpu is None else "policies/act_metaworld_mt6"
    if cpu is None:
        stats = act_dataset_stats(torch.zeros(4), torch.ones(4), torch.zeros(4), torch.ones(4))
        cpu = ACTAdapter.from_config(make_act_config("act_tiny"), stats, seed=0)
    dev = copy.deepcopy(cpu).to(device)
    rng = np.random.default_rng(0)
    c, h, w = cpu.image_shape
    obs = [{"image": rng.integers(0, 256, (h, w, c), dtype=np.uint8),
            "state": rng.normal(size=cpu.state_dim).astype(np.float32)} for _ in range(cpu.config.n_action_steps + 1)]
    cpu.reset()
    dev.reset()
    ref = [cpu.select_action(o) for o in obs]
    out = [dev.select_action(o) for o in obs]
    return {"source": source, "processor_device": str(dev.processor.device), **compare(out, ref, tol)}


def _clouds(cfg: Any, sizes: Iterable[int]) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    lo, hi = np.array(cfg.point_range[:3]), np.array(cfg.point_range[3:])
    return [np.c_[rng.uniform(lo, hi, (n, 3)), rng.uniform(0, 1, n)].astype(np.float32) for n in sizes]


def check_lion(device: torch.device, tiny: bool, tol: float) -> dict[str, Any]:
    from latentstack.perception.lion import LionDetector, get_preset, load_detector

    cpu = _shipped(tiny, "LION", lambda: load_detector(ROOT / "policies" / "lion_tiny"))
    source = "lion_tiny (seed 0)" if cpu is None else "policies/lion_tiny"
    if cpu is None:
        torch.manual_seed(0)
        cpu = LionDetector(get_preset("lion_tiny"))
    cpu = cpu.eval()
    dev = copy.deepcopy(cpu).to(device)
    clouds = _clouds(cpu.config, (400, 250) if tiny else (20000, 12000))
    with torch.no_grad():
        ref = cpu(*cpu.processor(clouds))
        out = dev(*dev.processor(clouds))
    return {"source": source, "points": [len(c) for c in clouds], **compare(out, ref, tol)}


def check_stereo(device: torch.device, tiny: bool, tol: float) -> dict[str, Any]:
    from latentstack.perception.stereo.model import SA2Tiny, load_stereo_model
    from latentstack.perception.stereo.processor_stereo import StereoProcessor

    cpu = _shipped(tiny, "stereo model", lambda: load_stereo_model(ROOT / "policies" / "stereo_sa2_tiny"))
    source = "sa2_tiny (seed 0)" if cpu is None else "policies/stereo_sa2_tiny"
    if cpu is None:
        torch.manual_seed(0)
        cpu = SA2Tiny()
    cpu = cpu.eval()
    dev = copy.deepcopy(cpu).to(device)
    rng = np.random.default_rng(0)
    h, w = (30, 60) if tiny else (120, 200)
    left, right = (rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(2))
    with torch.inference_mode():
        ref = cpu(**StereoProcessor()(left, right, 20.0), iters=4)
        out = dev(**StereoProcessor(device=dev.device)(left, right, 20.0), iters=4)
    keys = ("disp_preds", "disp_init", "mono_depth")
    return {"source": source, "image": [h, w], **compare([out[k] for k in keys], [ref[k] for k in keys], tol)}


def check_korr(device: torch.device, tiny: bool, tol: float) -> dict[str, Any]:
    from latentstack.koopman.base_policy import ChunkBaseConfig, ChunkMLPBase, MinMaxNormalizer
    from latentstack.koopman.configuration_korr import ResidualConfig
    from latentstack.koopman.modeling_korr import make_residual

    torch.manual_seed(0)
    res = make_residual(ResidualConfig(obs_dim=9, action_dim=4, kind="korr", lift_dim=32, hidden_dim=64,
                                       action_head_std=0.5)).eval()
    base = ChunkMLPBase(ChunkBaseConfig(obs_dim=9, action_dim=4, horizon=8, n_action_steps=4, hidden_dim=64),
                        MinMaxNormalizer(-torch.ones(9), torch.ones(9), clamp=3.0),
                        MinMaxNormalizer(-torch.ones(4), torch.ones(4))).eval()
    source = "seeded korr residual + chunk base"
    if not tiny:
        try:
            from latentstack.koopman.artifact import load_residual
            from latentstack.koopman.base_policy import load_chunk_base

            res, _ = load_residual(ROOT / "policies" / "korr_lift_korr")
            base, _ = load_chunk_base(ROOT / "policies" / "korr_lift_base")
            source = "policies/korr_lift_korr + policies/korr_lift_base"
        except Exception as exc:  # noqa: BLE001 (fall back to a seeded model, say so)
            print(f"[gpu] shipped KORR not loaded ({exc!r}); using seeded models", file=sys.stderr)
    g = torch.Generator().manual_seed(1)
    obs = torch.randn(16, res.config.obs_dim, generator=g)
    act = torch.rand(16, res.config.action_dim, generator=g) * 2 - 1
    base_obs = torch.randn(16, base.config.obs_dim, generator=g)

    def run(r: Any, b: Any, dev: torch.device) -> list[torch.Tensor]:
        o, a = obs.to(dev), act.to(dev)
        with torch.no_grad():
            s = r.sample(o, a, generator=torch.Generator().manual_seed(2))  # CPU-generator noise, moved
            return [r.mean(o, a), r.value(o, a), s["action"], s["logprob"], b(b.obs_norm(base_obs.to(dev)))]

    ref = run(res, base, torch.device("cpu"))
    out = run(copy.deepcopy(res).to(device), copy.deepcopy(base).to(device), device)
    return {"source": source, **compare(out, ref, tol)}


CHECKS: dict[str, Callable[[torch.device, bool, float], dict[str, Any]]] = {
    "vla": check_vla, "act": check_act, "lion": check_lion, "stereo": check_stereo, "korr": check_korr}


def vla_latency(device: torch.device, tiny: bool, reps: int, warmup: int) -> dict[str, Any]:
    policy, source = _vla(tiny)
    policy = policy.to(device)
    batch = _vla_batch(policy, 1, 0)
    gen = torch.Generator().manual_seed(0)
    resident = policy.processor(batch)  # inputs already on the device
    noise = torch.randn(1, policy.config.chunk_size, policy.config.action_dim, generator=gen).to(device)
    out = {"source": source, "batch": 1, "num_inference_steps": policy.config.num_inference_steps}
    out["chunk_device_resident"] = timed(lambda: policy.predict_action_chunk(resident, noise=noise), device, reps,
                                         warmup)
    out["chunk_from_numpy"] = timed(lambda: policy.predict_action_chunk(batch, generator=gen), device, reps, warmup)
    return out


# --------------------------------------------------------------------------- main
def environment(device: torch.device) -> dict[str, Any]:
    env = {"python": platform.python_version(), "torch": torch.__version__, "device": str(device),
           "machine": platform.machine(), "threads": torch.get_num_threads()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        pass
    return env


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    help="device to check against the CPU (default: cuda when available)")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: $OUT, else reports/gpu)")
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    ap.add_argument("--tiny", action="store_true", help="seeded tiny models and inputs (fast; no artifacts)")
    ap.add_argument("--tol", type=float, default=1e-3, help="rtol = atol of the device-vs-CPU check")
    ap.add_argument("--reps", type=int, default=20, help="timed VLA chunk calls (median reported)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed VLA chunk calls before timing")
    ap.add_argument("--no-latency", action="store_true", help="correctness checks only")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but torch.cuda.is_available() is false here; use --device cpu")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        ap.error(f"unknown models {unknown}; choose from {list(MODELS)}")
    out_dir = args.out or Path(os.environ.get("OUT") or ROOT / "reports" / "gpu")
    out_dir.mkdir(parents=True, exist_ok=True)
    if device.type == "cuda":  # fp32 against fp32: no TF32 in the correctness checks
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False

    result: dict[str, Any] = {"env": environment(device), "tiny": args.tiny, "tol": args.tol, "checks": {}}
    failed = False
    for name in models:
        t0 = time.perf_counter()
        try:
            r = CHECKS[name](device, args.tiny, args.tol)
        except Exception as exc:  # noqa: BLE001 (record every failure, run the rest)
            r = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        r["seconds"] = round(time.perf_counter() - t0, 2)
        result["checks"][name] = r
        failed = failed or ("skipped" not in r and not r.get("ok", False))
        status = "skipped" if "skipped" in r else ("ok" if r.get("ok") else "FAIL")
        print(f"[gpu] {name:7s} {status:7s} max_abs={r.get('max_abs', float('nan')):.3g} "
              f"{r.get('error', r.get('skipped', ''))}", file=sys.stderr)
    if not args.no_latency:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        try:
            result["latency"] = {"vla": vla_latency(device, args.tiny, args.reps, args.warmup)}
            lat = result["latency"]["vla"]
            print(f"[gpu] vla chunk b1: resident {lat['chunk_device_resident']['median_ms']:.2f} ms, "
                  f"from numpy {lat['chunk_from_numpy']['median_ms']:.2f} ms (median of {args.reps})",
                  file=sys.stderr)
        except Exception as exc:  # noqa: BLE001 (record the failure in the JSON)
            result["latency"] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            failed = True
    path = out_dir / "gpu.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"[gpu] wrote {path}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
