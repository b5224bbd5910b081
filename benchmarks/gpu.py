"""Models and kernels on a GPU: correctness against references, then timings against floors. One prepared script.

    PYTHONPATH=src python benchmarks/gpu.py --device cuda                 # on a GPU machine -> $OUT/gpu.json
    PYTHONPATH=src python benchmarks/gpu.py --device cpu --tiny --out /tmp/g   # smoke run anywhere (tiny models)
    PYTHONPATH=src python benchmarks/gpu.py --device cpu                  # the committed CPU report (reports/gpu/)

Sections (``--sections``, all by default): ``checks`` and ``latency`` (below), then

- ``kernels``: every implementation the dispatcher registers (``latentstack.kernels.dispatch.implementations``)
  for ``selective_scan``, ``linear_attention``, ``int_linear`` and ``conceptor_gate`` that runs on the device
  (so a newly registered ``triton`` path is picked up without editing this script), on fresh random inputs:
  relative error against the float64 reference, median time, time of the torch path it replaces, and the
  floor ``max(bytes / measured copy bandwidth, FLOPs / measured GEMM rate)`` (bandwidth: a large device copy;
  rate: a large bf16 GEMM on CUDA, fp32 on the CPU; for the integer linears a large ``torch._int_mm``);
- ``lion``: one LION BiMamba layer (K 4096) against windowed attention (K 4096 and K 256) on the same grouping
  at 5k–160k voxels (CPU: 5k; ``--tiny``: a few hundred voxels, K 256);
- ``vla``: the VLA chunk at batch 1 and 64 for fp32 / bf16 / W8A8 / W4A8 (backbone and expert linears
  quantised), eager and CUDA graph (graph: CUDA only), plus the quantised parts' bytes against fp32 and bf16,
  and the COAST gate's cost under the graph (steered / unsteered chunk);
- ``e2e``: the stereo model and the LION detector forward, and a UniLION LCT forward (``bench_unilion``).

Headline keys: ``device``, ``scan_floor_ratio_B8D256L2048`` (the auto scan on CUDA / its floor),
``lion_vs_window_attn_160k`` (LION layer / window attention K256 at 160k voxels), ``vla_chunk_ms_batch1_graph``
(fp32), ``w8a8_vs_bf16_vla_batch64`` (bf16 time / W8A8 time, graph); GPU-only keys are null on the CPU with the
reason in ``null_reasons``. Writes ``gpu.json``, ``gpu.png`` and ``summary.md``.

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
SECTIONS = ("checks", "latency", "kernels", "lion", "vla", "e2e")


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


# --------------------------------------------------------------------------- floors
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_floors(device: torch.device, tiny: bool) -> dict[str, Any]:
    """Copy bandwidth (bytes read + written per second) and GEMM rate on this device, measured here."""
    n = (1 << 28) if device.type == "cuda" else (1 << 22 if tiny else 1 << 24)  # 1 GiB / 16 / 64 MiB of fp32
    src = torch.randn(n // 4 if device.type == "cpu" else n, device=device)
    dst = torch.empty_like(src)
    t = timed(lambda: dst.copy_(src), device, reps=5 if tiny else 10, warmup=2)["median_ms"]
    bw = 2 * src.numel() * 4 / (t * 1e-3)
    if device.type == "cuda":
        m, dt = 8192, torch.bfloat16
    else:
        m, dt = (256 if tiny else 1024), torch.float32
    a, b = (torch.randn(m, m, device=device, dtype=dt) for _ in range(2))
    tg = timed(lambda: a @ b, device, reps=5 if tiny else 10, warmup=2)["median_ms"]
    rate = 2 * m**3 / (tg * 1e-3)
    ai, bi = (torch.randint(-127, 128, (m, m), device=device, dtype=torch.int8) for _ in range(2))
    ti = timed(lambda: torch._int_mm(ai, bi), device, reps=5 if tiny else 10, warmup=2)["median_ms"]
    return {"copy_bandwidth_Bps": bw, "gemm_flops_per_s": rate, "gemm_dtype": str(dt).replace("torch.", ""),
            "gemm_n": m, "copy_bytes": 2 * src.numel() * 4, "int8_ops_per_s": 2 * m**3 / (ti * 1e-3)}


def floor_ms(nbytes: float, flops: float, floors: dict[str, Any], int8: bool = False) -> float:
    rate = floors["int8_ops_per_s"] if int8 else floors["gemm_flops_per_s"]
    return 1e3 * max(nbytes / floors["copy_bandwidth_Bps"], flops / rate)


# --------------------------------------------------------------------------- kernels through the dispatcher
SKIP_IMPLS = {"compiled"}  # torch.compile'd CPU scan: a 15-20 s cold compile per shape, benchmarked in kernels.py
TORCH_PATH = {"selective_scan": "chunked", "linear_attention": "chunked", "int_linear": "torch",
              "conceptor_gate": "addmm"}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def _first_tensor(y: Any) -> torch.Tensor:
    return y if isinstance(y, torch.Tensor) else y[0]


def _scan_case(bt: int, d: int, n: int, length: int, device: torch.device) -> tuple[dict[str, Any], float, float]:
    gen = torch.Generator().manual_seed(bt * d + length)
    x = {"u": torch.randn(bt, d, length, generator=gen), "delta": 0.5 * torch.randn(bt, d, length, generator=gen),
         "A": -torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1),
         "B": torch.randn(bt, 1, n, length, generator=gen), "C": torch.randn(bt, 1, n, length, generator=gen),
         "D": torch.ones(d), "z": torch.randn(bt, d, length, generator=gen),
         "delta_bias": torch.full((d,), -3.0)}
    x = {k: v.to(device) for k, v in x.items()}
    nbytes = 4 * (4 * bt * d * length + 2 * bt * n * length + 2 * d * n)  # u, Δ, z in, y out; B, C; A, D
    return x, nbytes, 9.0 * bt * length * d * n


def _la_case(b: int, h: int, length: int, dk: int, dv: int, device: torch.device) -> tuple[dict[str, Any], float, float]:
    from latentstack.kernels import retnet_log_decay

    gen = torch.Generator().manual_seed(length + dk)
    x = {"q": torch.randn(b, h, length, dk, generator=gen) / dk**0.5, "k": torch.randn(b, h, length, dk, generator=gen),
         "v": torch.randn(b, h, length, dv, generator=gen), "g": retnet_log_decay(h)}
    x = {k: v.to(device) for k, v in x.items()}
    t = 64
    return x, 4 * b * h * length * (2 * dk + 2 * dv), 2.0 * b * h * length * (t * (dk + dv) + 2 * dk * dv)


def _int_case(m: int, k: int, n: int, kind: str, device: torch.device) -> tuple[dict[str, Any], float, float]:
    from latentstack.kernels import W4A8Linear, W8A8Linear

    torch.manual_seed(m + k + n)
    lin = torch.nn.Linear(k, n)
    layer = (W8A8Linear if kind == "w8a8" else W4A8Linear).from_float(lin, impl="torch").to(device)
    x = torch.randn(m, k, device=device)
    wbytes = k * n if kind == "w8a8" else (k + 1) // 2 * n
    return {"x": x, "layer": layer, "linear": lin.to(device)}, 4 * m * k + wbytes + 4 * m * n + 8 * n, 2.0 * m * n * k


def _gate_case(m: int, d: int, device: torch.device) -> tuple[dict[str, Any], float, float]:
    gen = torch.Generator().manual_seed(m)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen))
    C = (q * torch.rand(d, generator=gen)) @ q.T
    return {"h": torch.randn(m, d, generator=gen).to(device), "C": C.to(device), "beta": 0.5}, 4 * (2 * m * d + d * d), \
        2.0 * m * d * d


def _call(kernel: str, fn: Callable[..., Any], x: dict[str, Any]) -> torch.Tensor:
    if kernel == "int_linear":
        return fn(x["x"], x["layer"])
    if kernel == "conceptor_gate":
        return fn(x["h"], x["C"], x["beta"])
    return _first_tensor(fn(**x))


def _as64(kernel: str, x: dict[str, Any]) -> dict[str, Any]:
    if kernel == "int_linear":
        return x  # its reference is the float64 fake-quant oracle already
    return {k: (v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in x.items()}


def kernel_cases(device: torch.device, tiny: bool) -> dict[str, list[tuple[str, Callable[[], Any]]]]:
    """(case name, builder) per kernel; the builders return (inputs, bytes, FLOPs)."""
    cuda = device.type == "cuda"
    if cuda:
        scans = [(8, 256, 16, 2048), (4, 64, 16, 1024)]
        las = [(1, 8, 4096, 64, 64), (8, 2, 1024, 32, 64)]
        ints = [(16, 1024, 1024), (64, 1024, 1024), (1024, 1024, 1024), (16, 128, 512), (1024, 128, 512),
                (1024, 512, 128)]
        gates = [(16, 128), (1024, 128)]
    elif tiny:
        scans, las, ints, gates = [(2, 16, 8, 64)], [(1, 2, 128, 16, 16)], [(4, 32, 48)], [(16, 32)]
    else:
        scans = [(2, 64, 16, 256)]
        las = [(1, 2, 256, 32, 64)]
        ints = [(16, 128, 512), (64, 1024, 1024)]
        gates = [(16, 128), (1024, 128)]
    out: dict[str, list[tuple[str, Callable[[], Any]]]] = {
        "selective_scan": [(f"B{b}D{d}N{n}L{L}", lambda a=(b, d, n, L): _scan_case(*a, device)) for b, d, n, L in scans],
        "linear_attention": [(f"B{b}H{h}L{L}K{k}V{v}", lambda a=(b, h, L, k, v): _la_case(*a, device))
                             for b, h, L, k, v in las],
        "int_linear": [(f"{kind}_M{m}K{k}N{n}", lambda a=(m, k, n, kind): _int_case(*a, device))
                       for m, k, n in ints for kind in ("w8a8", "w4a8")],
        "conceptor_gate": [(f"M{m}d{d}", lambda a=(m, d): _gate_case(*a, device)) for m, d in gates],
    }
    return out


def bench_kernels(device: torch.device, tiny: bool, reps: int, warmup: int, floors: dict[str, Any],
                  only: set[str] | None = None) -> dict[str, Any]:
    from latentstack.kernels import dispatch

    skip = SKIP_IMPLS | ({"cpp"} if tiny and device.type == "cpu" else set())  # tiny: no 15 s C++ builds
    res: dict[str, Any] = {}
    for kernel, cases in kernel_cases(device, tiny).items():
        if only is not None and kernel not in only:
            continue
        impls = dispatch.implementations(kernel)
        names = [n for n, i in impls.items() if n != "reference" and n not in skip and i.available(device.type)]
        # what auto picks among the paths timed here (resolve() would also try the skipped ones, e.g. build C++)
        auto = next((n for n in dispatch.preference(kernel, device.type) if n in names), "reference")
        kres: dict[str, Any] = {"auto": auto, "registered": sorted(impls), "timed": names,
                                "unavailable": {n: (impls[n].why_unavailable() or "not on this device")
                                                for n in impls if n not in names and n != "reference"
                                                and n not in skip}, "cases": {}}
        for case, build in cases:
            x, nbytes, flops = build()
            with torch.no_grad():
                ref = _call(kernel, impls["reference"].fn, _as64(kernel, x))
                fl = floor_ms(nbytes, flops, floors, int8=kernel == "int_linear")
                row: dict[str, Any] = {"bytes": nbytes, "flops": flops, "floor_ms": fl, "paths": {}}
                for name in names:
                    fn = impls[name].fn
                    try:
                        err = _rel(_call(kernel, fn, x), ref)
                        t = timed(lambda fn=fn, k=kernel, x=x: _call(k, fn, x), device, reps, warmup)["median_ms"]
                        row["paths"][name] = {"rel_err": err, "median_ms": t, "floor_ratio": t / fl}
                    except Exception as exc:  # noqa: BLE001 (record, run the rest)
                        row["paths"][name] = {"error": f"{type(exc).__name__}: {exc}"}
                if kernel == "int_linear":  # the float layers it replaces
                    lin = x["linear"]
                    bf = torch.nn.Linear(lin.in_features, lin.out_features).to(device, torch.bfloat16)
                    xb = x["x"].to(torch.bfloat16)
                    xf = x["x"]
                    row["fp32_linear_ms"] = timed(lambda f=lin, a=xf: f(a), device, reps, warmup)["median_ms"]
                    row["bf16_linear_ms"] = timed(lambda f=bf, a=xb: f(a), device, reps, warmup)["median_ms"]
                tp = TORCH_PATH[kernel]
                if tp in row["paths"] and auto in row["paths"] and "median_ms" in row["paths"][auto]:
                    row["auto_speedup_vs_torch_path"] = row["paths"][tp]["median_ms"] / row["paths"][auto]["median_ms"]
            kres["cases"][case] = row
            print(f"[gpu] {kernel:16s} {case:24s} floor {fl:.4f} ms  " + "  ".join(
                f"{n} {r.get('median_ms', float('nan')):.3f} ms (err {r.get('rel_err', float('nan')):.1e})"
                for n, r in row["paths"].items()), file=sys.stderr)
        res[kernel] = kres
    return res


# --------------------------------------------------------------------------- LION layer vs window attention
def bench_lion_layer(device: torch.device, tiny: bool, reps: int, warmup: int) -> dict[str, Any]:
    import importlib.util

    from latentstack.perception.lion.backbone import LIONLayer
    from latentstack.perception.lion.configuration_lion import get_preset

    spec = importlib.util.spec_from_file_location("lion_bench", ROOT / "benchmarks" / "lion.py")
    lb = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(lb)  # type: ignore[union-attr]
    c, shape, win = 64, (32, 400, 352), (13, 13, 32)
    k_lion = 256 if tiny else 4096
    counts = [400] if tiny else ([5000, 20000, 40000, 80000, 160000] if device.type == "cuda" else [5000])
    torch.manual_seed(0)
    ops = {"lion_mamba": LIONLayer(get_preset("lion_kitti_mamba", d_state=16), win, k_lion, shift=False),
           "lion_retnet": LIONLayer(get_preset("lion_kitti_mamba", operator="retnet"), win, k_lion, shift=False),
           f"win_attn_K{k_lion}": lb.WindowAttentionLayer(c, win, k_lion),
           "win_attn_K256": lb.WindowAttentionLayer(c, win, 256)}  # one entry when k_lion is 256 (--tiny)
    ops = {k: v.eval().to(device) for k, v in ops.items()}
    out: dict[str, Any] = {"voxels": counts, "group_size_lion": k_lion, "channels": c, "ms": {k: [] for k in ops}}
    with torch.no_grad():
        for n in counts:
            v0 = lb.random_voxels(n, shape, c, seed=n)
            vox = type(v0)(v0.features.to(device), v0.coords.to(device), v0.spatial_shape, v0.batch_size)
            for name, op in ops.items():
                out["ms"][name].append(timed(lambda op=op, v=vox: op(v), device, max(2, reps // 4), min(1, warmup))
                                       ["median_ms"])
            print(f"[gpu] lion layer {n} voxels: " + "  ".join(f"{k} {v[-1]:.1f} ms" for k, v in out["ms"].items()),
                  file=sys.stderr)
    out["lion_over_win_attn_K256"] = [a / b for a, b in zip(out["ms"]["lion_mamba"], out["ms"]["win_attn_K256"])]
    return out


# --------------------------------------------------------------------------- VLA variants
def _quantized_vla(policy: Any, kind: str, impl: str) -> Any:
    from latentstack.kernels import quantize_linears

    q = copy.deepcopy(policy)
    roles = q.linear_roles()
    quantize_linears(q, kind, predicate=lambda name, m: roles.get(name, "").startswith(("backbone.", "expert.")),
                     impl=impl)
    return q


def _part_bytes(policy: Any) -> dict[str, int]:
    """Bytes of the backbone/expert linear weights: int codes (+ scales) of a quantised model, or float weights."""
    from latentstack.kernels.int_linear import _IntLinearBase

    total = 0
    for name, m in policy.named_modules():
        if not name.startswith(("backbone.layers.", "expert.layers.")):
            continue
        if isinstance(m, _IntLinearBase):
            w = m.weight_q if hasattr(m, "weight_q") else m.weight_packed
            total += w.numel() * w.element_size() + m.weight_scale.numel() * 4
        elif isinstance(m, torch.nn.Linear):
            total += m.weight.numel() * m.weight.element_size()
    return {"bytes": total}


def bench_vla(device: torch.device, tiny: bool, reps: int, warmup: int) -> dict[str, Any]:
    from latentstack.steering.intervention import steer

    base, source = _vla(tiny)
    base = base.to(device).eval()
    impl = "torch" if (tiny and device.type == "cpu") else "auto"  # tiny CPU: no C++ build
    variants = {"fp32": base, "bf16": copy.deepcopy(base).set_inference_dtype(torch.bfloat16),
                "w8a8": _quantized_vla(base, "w8a8", impl), "w4a8": _quantized_vla(base, "w4a8", impl)}
    modes = ["eager", "graph"] if device.type == "cuda" else ["eager"]
    batches = [1, 8] if tiny else [1, 64]
    out: dict[str, Any] = {"source": source, "batches": batches, "modes": modes, "ms": {},
                           "num_inference_steps": base.config.num_inference_steps,
                           "quantized_part_bytes": {k: _part_bytes(v)["bytes"] for k, v in variants.items()}}
    fp = out["quantized_part_bytes"]["fp32"]
    out["quantized_part_saving_vs_fp32"] = {k: 1 - v / fp for k, v in out["quantized_part_bytes"].items()}
    cfg = base.config
    for b in batches:
        batch = _vla_batch(base, b, 0)
        noise = torch.randn(b, cfg.chunk_size, cfg.action_dim, generator=torch.Generator().manual_seed(0)).to(device)
        for vname, pol in variants.items():
            inputs = pol.processor(batch)
            for mode in modes:
                pol.cuda_graph = mode == "graph"
                t = timed(lambda p=pol, i=inputs, z=noise: p.predict_action_chunk(i, noise=z), device, reps, warmup)
                out["ms"][f"{vname}_{mode}_b{b}"] = t["median_ms"]
            pol.cuda_graph = None
            print(f"[gpu] vla {vname} b{b}: " + "  ".join(f"{m} {out['ms'][f'{vname}_{m}_b{b}']:.2f} ms"
                                                          for m in modes), file=sys.stderr)
    # the COAST gate on the last expert layer: steered / unsteered chunk time, batch 1 (graph on CUDA)
    d = cfg.d_model
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen))
    C = ((q * torch.rand(d, generator=gen)) @ q.T).to(device)
    inputs = base.processor(_vla_batch(base, 1, 0))
    noise1 = torch.randn(1, cfg.chunk_size, cfg.action_dim, generator=gen).to(device)
    mode = modes[-1]
    base.cuda_graph = mode == "graph"
    iv = steer(base, f"expert.layer{cfg.expert_layers - 1}", C, 0.5)  # one object: one captured graph

    def steered() -> Any:
        with iv:
            return base.predict_action_chunk(inputs, noise=noise1)

    # interleaved (steered, unsteered) pairs: a shared machine's drift hits both sides of each ratio alike
    pairs = [(timed(steered, device, 1, warmup if i == 0 else 0)["median_ms"],
              timed(lambda: base.predict_action_chunk(inputs, noise=noise1), device, 1,
                    warmup if i == 0 else 0)["median_ms"]) for i in range(max(reps, 5))]
    base.cuda_graph = None
    out["gate"] = {"mode": mode, "steered_ms": statistics.median(p[0] for p in pairs),
                   "unsteered_ms": statistics.median(p[1] for p in pairs),
                   "overhead_ratio": statistics.median(p[0] / p[1] for p in pairs), "pairs": len(pairs),
                   "site": f"expert.layer{cfg.expert_layers - 1}"}
    return out


# --------------------------------------------------------------------------- end to end
def bench_e2e(device: torch.device, tiny: bool, reps: int, warmup: int) -> dict[str, Any]:
    from latentstack.perception.lion import LionDetector, get_preset, load_detector
    from latentstack.perception.stereo.model import SA2Tiny, load_stereo_model
    from latentstack.perception.stereo.processor_stereo import StereoProcessor

    out: dict[str, Any] = {}
    st = _shipped(tiny, "stereo model", lambda: load_stereo_model(ROOT / "policies" / "stereo_sa2_tiny"))
    if st is None:
        torch.manual_seed(0)
        st = SA2Tiny()
    st = st.eval().to(device)
    rng = np.random.default_rng(0)
    h, w = (30, 60) if tiny else (120, 200)
    left, right = (rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(2))
    inp = StereoProcessor(device=device)(left, right, 20.0)
    with torch.inference_mode():
        out["stereo"] = {"image": [h, w], "iters": 4,
                         **timed(lambda: st(**inp, iters=4), device, max(2, reps // 2), warmup)}
    det = _shipped(tiny, "LION", lambda: load_detector(ROOT / "policies" / "lion_tiny"))
    if det is None:
        torch.manual_seed(0)
        det = LionDetector(get_preset("lion_tiny"))
    det = det.eval().to(device)
    clouds = _clouds(det.config, (400,) if tiny else (20000,))
    with torch.no_grad():
        args = det.processor(clouds)
        out["lion_detector"] = {"points": [len(c) for c in clouds],
                                **timed(lambda: det(*args), device, max(2, reps // 2), warmup)}
    out["unilion"] = bench_unilion(device, tiny, max(2, reps // 2), warmup)  # last: the entries above keep their RNG
    return out


def bench_unilion(device: torch.device, tiny: bool, reps: int, warmup: int) -> dict[str, Any]:
    """Seeded untrained UniLION (``unilion_tiny``; ``--tiny``: ``unilion_test``), one LCT forward (memory from an
    LC forward of the frame before, ego moved 1 m) on a random cloud and random images with the scene generator's
    calibration. Token scaling is ``benchmarks/unilion.py``'s job; this is the one GPU-session number."""
    from latentstack.perception.unilion import UniLION, get_preset
    from latentstack.sim.unilion_scenes import UniSceneConfig, camera_calibration

    torch.manual_seed(0)
    model = UniLION(get_preset("unilion_test" if tiny else "unilion_tiny")).eval().to(device)
    cfg = model.config
    intr, c2e = camera_calibration(UniSceneConfig(image_size=cfg.image_size))  # its 2 cameras = the preset's
    rng = np.random.default_rng(0)
    cloud = _clouds(cfg, (400 if tiny else 20000,))[0]
    poses = [np.eye(4), np.eye(4)]
    poses[1][0, 3] = 1.0
    frames = [model.processor([cloud], images=[rng.integers(0, 256, (cfg.num_cameras, *cfg.image_size, 3), np.uint8)],
                              intrinsics=[intr], cam2ego=[c2e], ego_pose=[poses[i]], time_s=[0.2 * i], scene_id=[0])
              for i in range(2)]
    with torch.no_grad():
        _, memory = model(mode="LC", **frames[0])
        out, _ = model(mode="LCT", memory=memory, **frames[1])
        return {"preset": cfg.name, "mode": "LCT", "points": len(cloud),
                "num_tokens": [int(v) for v in out["num_tokens"].tolist()],
                **timed(lambda: model(mode="LCT", memory=memory, **frames[1]), device, reps, warmup)}


def run_perf_sections(result: dict[str, Any], sections: list[str], device: torch.device, args: Any) -> bool:
    """kernels / lion / vla / e2e into ``result``; True if any section failed."""
    failed = False
    if device.type == "cuda":  # performance mode: what a deployment would run (TF32 stays off for comparability)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    todo = [s for s in ("kernels", "lion", "vla", "e2e") if s in sections]
    if todo:
        result["floors"] = measure_floors(device, args.tiny)
    for name in todo:
        t0 = time.perf_counter()
        try:
            if name == "kernels":
                r = bench_kernels(device, args.tiny, args.reps, args.warmup, result["floors"])
            elif name == "lion":
                r = bench_lion_layer(device, args.tiny, args.reps, args.warmup)
            elif name == "vla":
                r = bench_vla(device, args.tiny, args.reps, args.warmup)
            else:
                r = bench_e2e(device, args.tiny, args.reps, args.warmup)
        except Exception as exc:  # noqa: BLE001 (record every failure, run the rest)
            r = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            failed = True
            print(f"[gpu] section {name} FAILED: {r['error']}", file=sys.stderr)
        r["seconds"] = round(time.perf_counter() - t0, 2)
        result[name] = r
    return failed


def headline(result: dict[str, Any], device: torch.device) -> None:
    """The issue's headline keys (null + a reason where this run cannot measure them)."""
    from latentstack.core.device import cpu_model_name

    env = result["env"]
    result["device"] = env.get("gpu", "cuda") if device.type == "cuda" else f"cpu ({cpu_model_name()})"
    why: dict[str, str] = {}
    cuda = device.type == "cuda"
    scan = result.get("kernels", {}).get("selective_scan", {})
    row = scan.get("cases", {}).get("B8D256N16L2048", {})
    auto = scan.get("auto")
    result["scan_floor_ratio_B8D256L2048"] = row.get("paths", {}).get(auto, {}).get("floor_ratio") if cuda else None
    if result["scan_floor_ratio_B8D256L2048"] is None:
        why["scan_floor_ratio_B8D256L2048"] = ("measured on CUDA at B8 D256 N16 L2048 only (CPU runs use small shapes)"
                                               if not cuda else "kernels section missing or failed")
    lion = result.get("lion", {})
    ratio = None
    if cuda and 160000 in lion.get("voxels", []):
        ratio = lion["lion_over_win_attn_K256"][lion["voxels"].index(160000)]
    result["lion_vs_window_attn_160k"] = ratio
    if ratio is None:
        why["lion_vs_window_attn_160k"] = "160k voxels are measured on CUDA only (CPU: 5k)" if not cuda else \
            "lion section missing or failed"
    vla = result.get("vla", {}).get("ms", {})
    result["vla_chunk_ms_batch1_graph"] = vla.get("fp32_graph_b1") if cuda else None
    if result["vla_chunk_ms_batch1_graph"] is None:
        why["vla_chunk_ms_batch1_graph"] = "CUDA graphs need a CUDA device (CPU: eager only)" if not cuda else \
            "vla section missing or failed"
    w8, bf = vla.get("w8a8_graph_b64"), vla.get("bf16_graph_b64")
    result["w8a8_vs_bf16_vla_batch64"] = (bf / w8) if (cuda and w8 and bf) else None
    if result["w8a8_vs_bf16_vla_batch64"] is None:
        why["w8a8_vs_bf16_vla_batch64"] = ("a GPU comparison (graph, batch 64); CPU eager numbers are in vla.ms"
                                           if not cuda else "vla section missing or failed")
    result["null_reasons"] = why


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    labels, ratios = [], []
    for kernel, kres in result.get("kernels", {}).items():
        if not isinstance(kres, dict) or "cases" not in kres:
            continue
        for case, row in kres["cases"].items():
            for name, r in row["paths"].items():
                if "floor_ratio" in r:
                    labels.append(f"{kernel[:10]} {case[:16]} {name}")
                    ratios.append(r["floor_ratio"])
    ax = axes[0]
    if ratios:
        ax.barh(range(len(ratios)), ratios, color="tab:blue")
        ax.set_yticks(range(len(ratios)), labels, fontsize=5)
        ax.set_xscale("log")
        ax.axvline(1.0, color="k", lw=0.8)
    ax.set_xlabel("measured / floor (log)")
    ax.set_title(f"kernels on {result.get('device', '?')}", fontsize=9)
    ax = axes[1]
    ms = result.get("vla", {}).get("ms", {})
    if ms:
        ax.bar(range(len(ms)), list(ms.values()), color="tab:orange")
        ax.set_xticks(range(len(ms)), list(ms), rotation=70, fontsize=6)
        ax.set_yscale("log")
    ax.set_ylabel("VLA chunk ms (median)")
    ax.set_title("VLA chunk: fp32 / bf16 / W8A8 / W4A8, eager vs graph", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _f(v: Any, nd: int = 3) -> str:
    return "—" if v is None else (f"{v:.{nd}g}" if isinstance(v, float) else str(v))


def summary_md(result: dict[str, Any]) -> str:
    env = result["env"]
    lines = [f"# GPU benchmark (`benchmarks/gpu.py`) on {result.get('device')}", "",
             (f"Command: `{result.get('command', '')}`; torch {env.get('torch')}, triton {env.get('triton', '—')}, "
              f"Python {env.get('python')}."), ""]
    if env.get("device", "cpu").startswith("cpu"):
        lines += [("**This is a CPU run**: no GPU machine was lent to this session, so the GPU headline numbers (and "
                   "every CUDA-graph / Triton timing) await the next GPU machine; the script runs there unchanged "
                   "(`PYTHONPATH=src python benchmarks/gpu.py --device cuda`). CPU numbers below are small shapes, "
                   "reference vs fast CPU paths, on a shared 2-core box."), ""]
    lines += ["## Headline", "", "| key | value | note |", "|---|---|---|"]
    for k in ("device", "scan_floor_ratio_B8D256L2048", "lion_vs_window_attn_160k", "vla_chunk_ms_batch1_graph",
              "w8a8_vs_bf16_vla_batch64"):
        lines.append(f"| `{k}` | {_f(result.get(k))} | {result.get('null_reasons', {}).get(k, '')} |")
    fl = result.get("floors")
    if fl:
        lines += ["", (f"Floors measured here: copy bandwidth {fl['copy_bandwidth_Bps'] / 1e9:.1f} GB/s, "
                       f"{fl['gemm_dtype']} GEMM {fl['gemm_flops_per_s'] / 1e12:.2f} TFLOP/s, int8 `_int_mm` "
                       f"{fl['int8_ops_per_s'] / 1e12:.2f} TOP/s (n = {fl['gemm_n']}).")]
    ker = result.get("kernels", {})
    if ker:
        lines += ["", "## Kernels (dispatcher registry; relative error vs the float64 reference)", "",
                  "| kernel | case | path | rel. error | median ms | floor ms | / floor |", "|---|---|---|---|---|---|---|"]
        for kernel, kres in ker.items():
            if not isinstance(kres, dict) or "cases" not in kres:
                continue
            for case, row in kres["cases"].items():
                for name, r in row["paths"].items():
                    mark = " (auto)" if name == kres["auto"] else ""
                    lines.append(f"| {kernel} | {case} | {name}{mark} | {_f(r.get('rel_err'), 2)} | "
                                 f"{_f(r.get('median_ms'))} | {_f(row['floor_ms'])} | {_f(r.get('floor_ratio'))} |"
                                 + (f" {r['error']}" if "error" in r else ""))
            if kres.get("unavailable"):
                lines.append(f"| {kernel} | | not timed: " + "; ".join(f"{k}: {v}" for k, v in
                                                                       kres["unavailable"].items()) + " | | | | |")
    lion = result.get("lion", {})
    if "ms" in lion:
        lines += ["", f"## LION layer vs windowed attention (C = {lion['channels']}, LION K = {lion['group_size_lion']})",
                  "", "| voxels | " + " | ".join(lion["ms"]) + " | LION / win K256 |",
                  "|---|" + "---|" * (len(lion["ms"]) + 1)]
        for i, n in enumerate(lion["voxels"]):
            lines.append(f"| {n} | " + " | ".join(_f(v[i]) for v in lion["ms"].values())
                         + f" | {_f(lion['lion_over_win_attn_K256'][i])} |")
    vla = result.get("vla", {})
    if "ms" in vla:
        lines += ["", f"## VLA chunk ({vla['source']}, K = {vla['num_inference_steps']} steps), median ms", "",
                  "| variant | " + " | ".join(f"{m} b{b}" for b in vla["batches"] for m in vla["modes"]) + " |",
                  "|---|" + "---|" * (len(vla["batches"]) * len(vla["modes"]))]
        for v in ("fp32", "bf16", "w8a8", "w4a8"):
            lines.append(f"| {v} | " + " | ".join(_f(vla["ms"].get(f"{v}_{m}_b{b}")) for b in vla["batches"]
                                                   for m in vla["modes"]) + " |")
        sav = vla.get("quantized_part_saving_vs_fp32", {})
        lines += ["", "Backbone + expert linear weights, saving vs fp32: " + ", ".join(
            f"{k} {100 * v:.1f} %" for k, v in sav.items() if k != "fp32") + "."]
        g = vla.get("gate")
        if g:
            lines += [(f"COAST gate at `{g['site']}` ({g['mode']}, batch 1, {g['pairs']} interleaved pairs): steered "
                       f"{_f(g['steered_ms'])} ms vs unsteered {_f(g['unsteered_ms'])} ms, median per-pair ratio "
                       f"{_f(g['overhead_ratio'])}.")]
    e2e = result.get("e2e", {})
    if "stereo" in e2e:
        lines += ["", "## End to end", "",
                  f"- stereo SA2-tiny {e2e['stereo']['image']} px, 4 iterations: {_f(e2e['stereo']['median_ms'])} ms",
                  f"- LION detector, {e2e['lion_detector']['points']} points: {_f(e2e['lion_detector']['median_ms'])} ms"]
    if "unilion" in e2e:
        u = e2e["unilion"]
        lines.append(f"- UniLION ({u['preset']}, untrained) {u['mode']}, {u['points']} points, tokens (LiDAR, camera, "
                     f"temporal, backbone out) {u['num_tokens']}: {_f(u['median_ms'])} ms")
    return "\n".join(lines) + "\n"


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
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
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
    sections = [x.strip() for x in args.sections.split(",") if x.strip()]
    if args.no_latency:
        sections = [x for x in sections if x != "latency"]
    bad = sorted(set(sections) - set(SECTIONS))
    if bad:
        ap.error(f"unknown sections {bad}; choose from {list(SECTIONS)}")
    out_dir = args.out or Path(os.environ.get("OUT") or ROOT / "reports" / "gpu")
    out_dir.mkdir(parents=True, exist_ok=True)
    if device.type == "cuda":  # fp32 against fp32: no TF32 in the correctness checks
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False

    result: dict[str, Any] = {"env": environment(device), "tiny": args.tiny, "tol": args.tol, "checks": {},
                              "command": "python benchmarks/gpu.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    failed = False
    for name in models if "checks" in sections else []:
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
    if "latency" in sections:
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
    failed = run_perf_sections(result, sections, device, args) or failed
    headline(result, device)
    path = out_dir / "gpu.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    try:
        plot(result, out_dir / "gpu.png")
    except Exception as exc:  # noqa: BLE001 (matplotlib missing on a bare GPU machine: the JSON is what counts)
        print(f"[gpu] no plot: {exc!r}", file=sys.stderr)
    (out_dir / "summary.md").write_text(summary_md(result))
    print(f"[gpu] wrote {path}, gpu.png, summary.md", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
