"""Every kernel path against its reference, in one run, at the shapes the project uses.

The machine is shared and noisy, so every comparison is made inside one group: all paths of
a group are warmed up, then timed in interleaved rounds (order rotated each round); the
report gives per-path medians and speed-ups as ratios of medians against the group's
baseline measured in the same run (plus the median and quartiles of the per-round ratios).

    nice -n 19 .venv/bin/python benchmarks/kernels.py      # -> reports/kernels/{kernels.json,kernels.png,summary.md}

Options: ``--threads N`` (default 1: another process shares the 2 cores; kernels.md measured
2-thread OpenMP stalls under contention), ``--quick`` (fewer rounds, smoke test only),
``--out DIR``. Headline keys in kernels.json: ``scan_speedup_vs_loop_L1024`` (default fast
scan vs the Python-loop reference, B=4, D=64, N=16, L=1024, fp32, forward) and
``w8a8_speedup_vs_fp32_M16_K1024`` (best W8A8 path vs fp32 eager ``nn.Linear``, M=16,
K=N=1024).
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if "--rss-probe" not in sys.argv and "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
    # cold, self-contained compiles: a warm inductor cache once served a non-frozen graph to a
    # freezing=True compile in development, which made the freezing numbers meaningless
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="latentstack_bench_inductor_")
    _OWN_CACHE = os.environ["TORCHINDUCTOR_CACHE_DIR"]
else:
    _OWN_CACHE = None

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from latentstack.kernels import (
    W4A8Linear,
    W8A8Linear,
    apply_gate,
    compile_int_model,
    conceptor_gate,
    dispatch,
    gate_matrix,
    quantize_linears,
    resident_bytes,
    selective_scan,
    state_bytes,
)
from latentstack.kernels.conceptor import conceptor_gate_reference
from latentstack.kernels.int_linear import int_cpp_available
from latentstack.kernels.linear_attention import (
    linear_attention_chunked,
    linear_attention_parallel,
    linear_attention_recurrent,
    retnet_log_decay,
)
from latentstack.kernels.scan import cpp_available

ROOT = Path(__file__).resolve().parents[1]
COMMAND = "nice -n 19 .venv/bin/python benchmarks/kernels.py"
Fn = Callable[[], Any]


# --------------------------------------------------------------------------- timing
def time_group(fns: dict[str, Fn], baseline: str, rounds: int, target_s: float = 0.02,
               max_inner: int = 200) -> dict[str, dict[str, float]]:
    """Interleaved timing of ``fns``; returns per-path stats and speed-ups vs ``baseline``."""
    inner: dict[str, int] = {}
    for name, fn in fns.items():  # warm-up (compiles, caches) + choose repeats per measurement
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        if dt < 0.2:  # cheap: time a second, warm call to choose the repeats
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
        inner[name] = int(min(max_inner, max(1, target_s // max(dt, 1e-7))))
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            fn, n = fns[name], inner[name]
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            times[name].append((time.perf_counter() - t0) / n)
    out: dict[str, dict[str, float]] = {}
    base_med = statistics.median(times[baseline])
    for name, ts in times.items():
        med = statistics.median(ts)
        paired = sorted(b / t for b, t in zip(times[baseline], ts, strict=True))
        q = statistics.quantiles(paired, n=4) if len(paired) >= 2 else [paired[0]] * 3
        out[name] = {
            "ms": med * 1e3,
            "ms_min": min(ts) * 1e3,
            "speedup": base_med / med,
            "speedup_paired_median": statistics.median(paired),
            "speedup_paired_q25": q[0],
            "speedup_paired_q75": q[2],
            "rounds": len(ts),
            "inner": inner[name],
        }
    return out


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a − b| / max |b| (the spec's relative error)."""
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def fro_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖ (quantisation error)."""
    return float((a.double() - b.double()).norm() / b.double().norm())


# --------------------------------------------------------------------------- selective scan
def scan_inputs(bt: int, d: int, n: int, length: int, g: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    """Mamba-style: Δ = softplus(delta + bias) with bias = inverse-softplus(U[1e-3, 0.1]), A = −[1..N]."""
    gen = torch.Generator().manual_seed(seed)
    dt0 = torch.exp(torch.rand(d, generator=gen) * (torch.log(torch.tensor(0.1)) - torch.log(torch.tensor(1e-3)))
                    + torch.log(torch.tensor(1e-3)))
    return {
        "u": torch.randn(bt, d, length, generator=gen),
        "delta": 0.5 * torch.randn(bt, d, length, generator=gen),
        "A": -torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1),
        "B": torch.randn(bt, g, n, length, generator=gen),
        "C": torch.randn(bt, g, n, length, generator=gen),
        "D": torch.ones(d),
        "z": torch.randn(bt, d, length, generator=gen),
        "delta_bias": dt0 + torch.log(-torch.expm1(-dt0)),
    }


def bench_scan(results: dict[str, Any], rounds: int, quick: bool, bar: tqdm) -> None:
    paths = ["cpp", "compiled", "chunked"] if cpp_available() else ["compiled", "chunked"]
    default = dispatch.resolve("selective_scan", "auto", "cpu").name
    shapes = [
        # name, Bt, Dch, N, L, G, reverse, paths
        ("headline_B4_D64_N16_L1024", 4, 64, 16, 1024, 1, False, paths),
        ("spec_B4_D64_N16_L256", 4, 64, 16, 256, 1, False, paths),
        ("spec_B4_D64_N16_L4096", 4, 64, 16, 4096, 1, False, paths),
        ("lion_tiny_groups8_D128_N16_K512_reverse", 8, 128, 16, 512, 1, True, [p for p in paths if p != "compiled"]),
        ("stereo_sa2tiny_ss2d_B2_D4x64_N8_L1280_G4", 2, 256, 8, 1280, 4, False, [p for p in paths if p != "compiled"]),
    ]
    if quick:
        shapes = [shapes[0], shapes[3]]
    out: dict[str, Any] = {"default_impl": default, "forward": {}, "forward_backward": {}}
    with torch.no_grad():
        for name, bt, d, n, length, g, rev, impls in shapes:
            bar.set_postfix_str(f"scan {name}")
            x = scan_inputs(bt, d, n, length, g)
            y_ref = selective_scan(**x, reverse=rev, impl="reference")
            fns: dict[str, Fn] = {"reference": lambda x=x, rev=rev: selective_scan(**x, reverse=rev, impl="reference")}
            errs = {}
            for impl in impls:
                t0 = time.perf_counter()
                y = selective_scan(**x, reverse=rev, impl=impl)
                first = time.perf_counter() - t0
                errs[impl] = {"rel_err_vs_reference": rel_err(y, y_ref), "first_call_s": first}
                fns[impl] = lambda x=x, rev=rev, impl=impl: selective_scan(**x, reverse=rev, impl=impl)
            stats = time_group(fns, "reference", rounds if length <= 1024 else max(3, rounds // 2))
            for impl, e in errs.items():
                stats[impl].update(e)
            out["forward"][name] = {"shape": {"Bt": bt, "Dch": d, "N": n, "L": length, "G": g, "reverse": rev},
                                    "paths": stats}
            bar.update(1)
    # training: forward + backward of sum(y^2)
    for name, bt, d, n, length, g in [("headline_B4_D64_N16_L1024", 4, 64, 16, 1024, 1),
                                      ("lion_tiny_groups8_D128_N16_K512", 8, 128, 16, 512, 1)]:
        bar.set_postfix_str(f"scan fwd+bwd {name}")
        x = scan_inputs(bt, d, n, length, g)
        leaves = {k: v.clone().requires_grad_(k in ("u", "delta", "A", "B", "C", "D")) for k, v in x.items()}

        def step(impl: str, leaves: dict[str, torch.Tensor] = leaves) -> list[torch.Tensor]:
            y = selective_scan(**leaves, impl=impl)
            return list(torch.autograd.grad((y**2).sum(), [v for v in leaves.values() if v.requires_grad]))

        g_ref = step("reference")
        fns = {"reference": lambda: step("reference")}
        errs = {}
        fb_paths = [p for p in paths if p != "compiled" and (p != "chunked" or length * d * bt <= 4 * 64 * 1024)]
        for impl in fb_paths:
            errs[impl] = {"grad_rel_err_vs_reference_max": max(rel_err(a, b) for a, b in zip(step(impl), g_ref,
                                                                                                  strict=True))}
            fns[impl] = lambda impl=impl: step(impl)
        stats = time_group(fns, "reference", max(3, rounds // 2))
        for impl, e in errs.items():
            stats[impl].update(e)
        out["forward_backward"][name] = {"shape": {"Bt": bt, "Dch": d, "N": n, "L": length, "G": g}, "paths": stats}
        bar.update(1)
    results["selective_scan"] = out
    head = out["forward"]["headline_B4_D64_N16_L1024"]["paths"]
    results["scan_speedup_vs_loop_L1024"] = head[default]["speedup"] if default != "reference" else 1.0
    results["scan_default_impl"] = default


# --------------------------------------------------------------------------- linear attention
def bench_linear_attention(results: dict[str, Any], rounds: int, bar: tqdm) -> None:
    """LION RetNet MSR (KITTI config: C=64 ⇒ q,k width 64, v width 128, 2 heads), groups as batch."""
    out = {}
    for name, b, h, length, dk, dv in [("lion_retnet_groups8_H2_L1024_K32_V64", 8, 2, 1024, 32, 64),
                                       ("lion_retnet_groups16_H2_L256_K32_V64", 16, 2, 256, 32, 64)]:
        bar.set_postfix_str(f"linear attention {name}")
        gen = torch.Generator().manual_seed(0)
        q, k = (torch.randn(b, h, length, dk, generator=gen) for _ in range(2))
        v = torch.randn(b, h, length, dv, generator=gen)
        g = retnet_log_decay(h)
        args = (q, k, v, g)
        with torch.no_grad():
            o_ref = linear_attention_recurrent(*args)
            fns: dict[str, Fn] = {
                "reference": lambda args=args: linear_attention_recurrent(*args),
                "parallel": lambda args=args: linear_attention_parallel(*args),
            }
            errs = {"parallel": rel_err(linear_attention_parallel(*args), o_ref)}
            for T in (32, 64, 128):
                fns[f"chunked_T{T}"] = lambda T=T, args=args: linear_attention_chunked(*args, chunk_size=T)
                errs[f"chunked_T{T}"] = rel_err(linear_attention_chunked(q, k, v, g, chunk_size=T), o_ref)
            stats = time_group(fns, "reference", rounds)
        for kname, e in errs.items():
            stats[kname]["rel_err_vs_reference"] = e
        out[name] = {"shape": {"B": b, "H": h, "L": length, "K": dk, "V": dv}, "paths": stats}
        bar.update(1)
    results["linear_attention"] = out


# --------------------------------------------------------------------------- integer linear
def _int_paths(lin: nn.Linear, x: torch.Tensor) -> tuple[dict[str, Fn], dict]:
    fns: dict[str, Fn] = {"fp32_eager": lambda: lin(x)}
    info: dict[str, dict[str, Any]] = {}
    ref = lin(x)
    w_bf16 = lin.weight.to(torch.bfloat16)
    b_bf16 = lin.bias.to(torch.bfloat16)
    fns["bf16_eager"] = lambda: F.linear(x.to(torch.bfloat16), w_bf16, b_bf16)
    info["bf16_eager"] = {"err_vs_fp32": fro_err(fns["bf16_eager"]().float(), ref), "kind": "bf16"}
    cpp = int_cpp_available()
    for layout in ("kn", "nk"):
        m = W8A8Linear.from_float(lin, layout=layout)
        for impl in (["cpp"] if cpp else []) + ["torch"]:
            key = f"w8a8_eager_{impl}_{layout}"
            fns[key] = lambda m=m, impl=impl: m.run(x, impl)
            info[key] = {"err_vs_fp32": fro_err(m.run(x, impl), ref),
                         "rel_err_vs_fake_quant": rel_err(m.run(x, impl), m.forward_fake(x)), "kind": "w8a8"}
    for cache in (False, True):
        m4 = W4A8Linear.from_float(lin, cache_unpacked=cache)
        for impl in (["cpp"] if cpp else []) + ["torch"]:
            key = f"w4a8_eager_{impl}_{'cached_int8' if cache else 'packed'}"
            fns[key] = lambda m4=m4, impl=impl: m4.run(x, impl)
            info[key] = {"err_vs_fp32": fro_err(m4.run(x, impl), ref),
                         "rel_err_vs_fake_quant": rel_err(m4.run(x, impl), m4.forward_fake(x)), "kind": "w4a8"}
    wq = W8A8Linear.from_float(lin, layout="kn").weight_q
    xq = torch.randint(-127, 128, x.shape, dtype=torch.int8)
    fns["int_mm_kernel_only_kn"] = lambda: torch._int_mm(xq, wq)
    info["int_mm_kernel_only_kn"] = {"kind": "kernel only (no quantisation)"}
    return fns, info


def _timed_compiled(base: Fn, key: str, build: Callable[[], Callable[..., Any]], x: torch.Tensor,
                    ref: torch.Tensor, eager: torch.Tensor, rounds: int, extra: dict[str, Any]) -> dict[str, Any]:
    """Compile, then time immediately against the fp32 baseline in its own interleaved group.

    Dynamo caches are reset first: dynamo reuses a graph across instances of the same module
    class and does not guard on inductor's config, so without the reset a ``freezing=True``
    compile silently reused the earlier non-frozen graph (measured). Timing follows right away,
    so the reset cannot make an earlier variant recompile inside a measurement.
    """
    torch._dynamo.reset()
    t0 = time.perf_counter()
    c = build()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    y = c(x)
    call_s = time.perf_counter() - t0
    out: dict[str, Any] = {"err_vs_fp32": fro_err(y, ref), "rel_err_vs_eager": rel_err(y, eager),
                           "compile_s": compile_s, **extra}
    if call_s > 0.05:  # pathological path: a few direct calls instead of a group
        ts = []
        for _ in range(3):
            t0 = time.perf_counter()
            c(x)
            ts.append(time.perf_counter() - t0)
        b = []
        for _ in range(5):
            t0 = time.perf_counter()
            base()
            b.append(time.perf_counter() - t0)
        out.update(ms=statistics.median(ts) * 1e3, speedup=statistics.median(b) / statistics.median(ts),
                   timing="direct (3 calls)")
        return out
    stats = time_group({"fp32_eager": base, key: lambda: c(x)}, "fp32_eager", rounds)
    out.update(stats[key])
    out["fp32_ms_in_group"] = stats["fp32_eager"]["ms"]
    return out


def _compiled_int_paths(lin: nn.Linear, x: torch.Tensor, rounds: int, bar: tqdm) -> dict[str, dict[str, Any]]:
    ref = lin(x)
    eager = W8A8Linear.from_float(lin, layout="kn").run(x, "torch")
    res = {}
    variants = [("w8a8_compiled_torch", {"int_impl": "torch"}),
                ("w8a8_compiled_cppop", {"int_impl": "cpp"}),
                ("w8a8_compiled_freezing", {"int_impl": "torch", "freezing": True}),
                ("w8a8_compiled_freezing_maxautotune", {"int_impl": "torch", "freezing": True,
                                                        "max_autotune": True})]
    for key, kw in variants:
        bar.set_postfix_str(f"compiling {key}")
        m = W8A8Linear.from_float(lin, layout="kn")
        res[key] = _timed_compiled(lambda: lin(x), key, lambda m=m, kw=kw: compile_int_model(m, (x,), **kw), x, ref,
                                   eager, rounds, {"kind": "w8a8", **kw})
    res["fp32_compiled"] = _timed_compiled(lambda: lin(x), "fp32_compiled",
                                           lambda: _first(torch.compile(_copy(lin)), x), x, ref, ref, rounds,
                                           {"kind": "fp32"})
    return res


def _first(fn: Callable[..., Any], x: torch.Tensor) -> Callable[..., Any]:
    fn(x)
    return fn


def _external_ref(lin: nn.Linear, x: torch.Tensor, fns: dict[str, Fn], info: dict[str, dict[str, Any]]) -> None:
    ref = lin(x)
    qd = None
    try:  # the deprecated onednn/fbgemm dynamic path, as an external reference (per-tensor activations)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            qd = torch.ao.quantization.quantize_dynamic(nn.Sequential(lin), {nn.Linear}, dtype=torch.qint8)
        fns["quantize_dynamic_ref"] = lambda: qd(x)
        info["quantize_dynamic_ref"] = {"err_vs_fp32": fro_err(qd(x), ref),
                                        "kind": "external: per-tensor dynamic act (torch.ao, deprecated)"}
    except Exception as exc:  # noqa: BLE001
        info["quantize_dynamic_ref"] = {"error": str(exc)[:200]}


def bench_int_linear(results: dict[str, Any], rounds: int, quick: bool, bar: tqdm) -> None:
    out: dict[str, Any] = {}
    shapes = [("M16_K1024_N1024", 16, 1024, 1024, True), ("M1_K1024_N1024", 1, 1024, 1024, False),
              ("M64_K1024_N1024", 64, 1024, 1024, False), ("M256_K1024_N1024", 256, 1024, 1024, False),
              ("M16_K2048_N2048", 16, 2048, 2048, False),
              ("vla_expert_fc1_M16_K128_N512", 16, 128, 512, False),
              ("vla_expert_fc2_M64_K512_N128", 64, 512, 128, False)]
    if quick:
        shapes = shapes[:2]
    with torch.no_grad():
        for name, m, k, n, compiled in shapes:
            bar.set_postfix_str(f"int linear {name}")
            torch.manual_seed(0)
            lin = nn.Linear(k, n)
            x = torch.randn(m, k)
            fns, info = _int_paths(lin, x)
            _external_ref(lin, x, fns, info)
            stats = time_group(fns, "fp32_eager", rounds)
            for key, extra in info.items():
                stats.setdefault(key, {}).update(extra)
            if compiled:
                stats.update(_compiled_int_paths(lin, x, rounds, bar))
            out[name] = {"shape": {"M": m, "K": k, "N": n}, "paths": stats}
            bar.update(1)
    results["int_linear"] = out
    head = out["M16_K1024_N1024"]["paths"]
    w8 = {k: v["speedup"] for k, v in head.items() if k.startswith("w8a8") and "speedup" in v}
    best = max(w8, key=w8.get)
    results["w8a8_speedup_vs_fp32_M16_K1024"] = w8[best]
    results["w8a8_best_path_M16_K1024"] = best


class MLP(nn.Module):
    """``layers`` Linear(d, d) + GELU blocks (kernels.md's 8-layer K=1024 stack)."""

    def __init__(self, d: int, layers: int) -> None:
        super().__init__()
        self.net = nn.Sequential(*[m for _ in range(layers) for m in (nn.Linear(d, d), nn.GELU())])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ExpertMLPs(nn.Module):
    """The small VLA's action-expert MLPs: 4 × (128 → 512 → 128, GELU, residual)."""

    def __init__(self, d: int = 128, hidden: int = 512, layers: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.ModuleList(nn.Linear(d, hidden) for _ in range(layers))
        self.fc2 = nn.ModuleList(nn.Linear(hidden, d) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for a, b in zip(self.fc1, self.fc2, strict=True):
            x = x + b(F.gelu(a(x)))
        return x


def bench_int_models(results: dict[str, Any], rounds: int, bar: tqdm) -> None:
    """Whole stacks compiled as one graph vs eager fp32."""
    out = {}
    for name, builder, x in [("mlp8_K1024_M16", lambda: MLP(1024, 8), torch.randn(16, 1024)),
                             ("vla_expert_mlps_d128_M16", lambda: ExpertMLPs(), torch.randn(1, 16, 128))]:
        bar.set_postfix_str(f"int model {name}")
        torch.manual_seed(0)
        fp = builder().eval()
        with torch.no_grad():
            ref = fp(x)
            fns: dict[str, Fn] = {"fp32_eager": lambda fp=fp, x=x: fp(x)}
            info: dict[str, dict[str, Any]] = {}
            w8 = quantize_linears(_copy(fp), "w8a8")
            fns["w8a8_eager_cpp" if int_cpp_available() else "w8a8_eager_torch"] = lambda w8=w8, x=x: w8(x)
            w4 = quantize_linears(_copy(fp), "w4a8")
            fns["w4a8_eager_packed"] = lambda w4=w4, x=x: w4(x)
            info["w8a8_eager_cpp" if int_cpp_available() else "w8a8_eager_torch"] = {"err_vs_fp32": fro_err(w8(x), ref)}
            info["w4a8_eager_packed"] = {"err_vs_fp32": fro_err(w4(x), ref)}
            stats = time_group(fns, "fp32_eager", rounds)
            base = fns["fp32_eager"]
            stats["fp32_compiled"] = _timed_compiled(base, "fp32_compiled", lambda fp=fp, x=x: _first(
                torch.compile(_copy(fp)), x), x, ref, ref, rounds, {})
            for key, impl in (("w8a8_compiled_torch", "torch"), ("w8a8_compiled_cppop", "cpp")):
                bar.set_postfix_str(f"int model {name} {key}")
                stats[key] = _timed_compiled(base, key, lambda fp=fp, x=x, impl=impl: compile_int_model(
                    quantize_linears(_copy(fp), "w8a8"), (x,), int_impl=impl), x, ref, w8(x), rounds, {})
        for k, v in info.items():
            stats[k].update(v)
        out[name] = {"paths": stats}
        bar.update(1)
    results["int_models"] = out


def _copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model)


RSS_FORMATS = ["fp32_eager", "fp32_compiled", "w8a8_eager", "w4a8_eager_packed", "w4a8_eager_cached",
               "w8a8_compiled", "w8a8_compiled_freezing"]


def _skeleton(fmt: str) -> nn.Module:
    """The 8×1024² MLP with the format's layer class, on the meta device (no weight memory)."""
    with torch.device("meta"):
        model = MLP(1024, 8)
        for i, layer in enumerate(model.net):
            if isinstance(layer, nn.Linear) and fmt.startswith("w8a8"):
                model.net[i] = W8A8Linear(1024, 1024)
            elif isinstance(layer, nn.Linear) and fmt.startswith("w4a8"):
                model.net[i] = W4A8Linear(1024, 1024, cache_unpacked=fmt.endswith("cached"))
    return model.eval()


def rss_probe(fmt: str, state_file: str) -> dict[str, Any]:
    """Run in a fresh process: RSS growth from loading the state (safetensors, assign=True) and a first call."""
    from safetensors.torch import load_file

    torch.set_num_threads(1)
    libc = ctypes.CDLL("libc.so.6")
    x = torch.randn(16, 1024)

    def rss() -> int:
        gc.collect()
        libc.malloc_trim(0)
        return resident_bytes()

    int_cpp_available()
    with torch.no_grad():
        _skeleton(fmt)(torch.randn(2, 1024, device="meta"))  # import/initialise everything first
    base = rss()
    model = _skeleton(fmt)
    state = {k: v.clone() for k, v in load_file(state_file).items()}  # anonymous memory, not file pages
    model.load_state_dict(state, assign=True)
    del state
    built = rss()
    with torch.no_grad():
        if fmt == "fp32_compiled":
            fn = torch.compile(model)
        elif fmt == "w8a8_compiled":
            fn = compile_int_model(model, (x,))
        elif fmt == "w8a8_compiled_freezing":
            fn = compile_int_model(model, (x,), freezing=True)
        else:
            fn = model
        fn(x)
    called = rss()
    return {"format": fmt, "state_bytes": state_bytes(model).as_dict(),
            "safetensors_file_bytes": os.path.getsize(state_file),
            "rss_model_loaded_mib": (built - base) / 2**20, "rss_after_first_call_mib": (called - base) / 2**20}


def bench_memory(results: dict[str, Any], bar: tqdm, formats: list[str]) -> None:
    """State files written here; each format loaded and called in a fresh process."""
    from safetensors.torch import save_file

    out = {}
    torch.manual_seed(0)
    fp = MLP(1024, 8).eval()
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for kind in ("fp32", "w8a8", "w4a8"):
            model = fp if kind == "fp32" else quantize_linears(_copy(fp), kind, impl="torch")
            files[kind] = os.path.join(tmp, f"{kind}.safetensors")
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, files[kind])
        for fmt in formats:
            bar.set_postfix_str(f"memory {fmt}")
            proc = subprocess.run([sys.executable, __file__, "--rss-probe", fmt, "--state", files[fmt[:4]]],
                                  capture_output=True, text=True, timeout=300, check=False,
                                  env={**os.environ, "PYTHONWARNINGS": "ignore"})
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            out[fmt] = json.loads(lines[-1]) if lines else {"error": proc.stderr[-500:]}
            bar.update(1)
    results["memory_mlp8_K1024"] = out


# --------------------------------------------------------------------------- conceptor gate
def bench_conceptor(results: dict[str, Any], rounds: int, bar: tqdm) -> None:
    out = {}
    torch.manual_seed(0)
    # a policy-step stand-in at the small VLA's sizes: 4 pre-LN transformer layers, d=128, 16 tokens
    step = nn.TransformerEncoder(nn.TransformerEncoderLayer(128, 4, 512, dropout=0.0, batch_first=True,
                                                            norm_first=True), 4, enable_nested_tensor=False).eval()
    for d, m in [(128, 16), (512, 16), (512, 256)]:
        bar.set_postfix_str(f"conceptor d={d}")
        X = torch.randn(400, d)
        R = X.T @ X / 400
        C = R @ torch.linalg.inv(R + torch.eye(d) / 4.0)
        C = (C + C.T) / 2
        h = torch.randn(1, m, d)
        M = gate_matrix(C, 0.5)
        with torch.no_grad():
            fns: dict[str, Fn] = {
                "reference": lambda h=h, C=C: conceptor_gate_reference(h, C, 0.5),
                "addmm": lambda h=h, C=C: conceptor_gate(h, C, 0.5),
                "matrix_each_call": lambda h=h, C=C: apply_gate(h, gate_matrix(C, 0.5)),
                "matrix_precomputed": lambda h=h, M=M: apply_gate(h, M),  # = ConceptorGate
                "beta0_noop": lambda h=h, C=C: conceptor_gate(h, C, 0.0),
            }
            errs = {k: rel_err(f(), conceptor_gate_reference(h, C, 0.5)) for k, f in fns.items() if k != "beta0_noop"}
            if d == 128:
                xs = torch.randn(1, 16, 128)
                fns["vla_expert_step_standin"] = lambda xs=xs: step(xs)
            stats = time_group(fns, "reference", rounds)
        for k, e in errs.items():
            stats[k]["rel_err_vs_reference"] = e
        if d == 128:
            for k in ("addmm", "matrix_precomputed"):
                stats[k]["fraction_of_expert_step"] = stats[k]["ms"] / stats["vla_expert_step_standin"]["ms"]
        out[f"d{d}_M{m}"] = {"paths": stats}
        bar.update(1)
    results["conceptor_gate"] = out


# --------------------------------------------------------------------------- report
def machine_info(threads: int) -> dict[str, Any]:
    flags = ""
    model = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = line
                    break
    except OSError:
        pass
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8") if f" {f}" in flags]
    return {"cpu": model, "isa": isa, "cores": os.cpu_count(), "torch_threads": threads, "torch": torch.__version__,
            "python": platform.python_version(), "load_avg_at_start": os.getloadavg(),
            "cpp_scan": cpp_available(), "cpp_int": int_cpp_available(), "gpu": torch.cuda.is_available()}


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(15, 10))
    ax = axes[0, 0]
    fw = results["selective_scan"]["forward"]
    impls = ["cpp", "compiled", "chunked"]
    for i, impl in enumerate(impls):
        xs, ys = [], []
        for j, (name, r) in enumerate(fw.items()):
            if impl in r["paths"]:
                xs.append(j + 0.25 * i)
                ys.append(r["paths"][impl]["speedup"])
        ax.bar(xs, ys, width=0.25, label=impl)
    ax.set_xticks(range(len(fw)), [n.replace("_", "\n", 2) for n in fw], fontsize=6)
    ax.axhline(1, color="k", lw=0.8)
    ax.axhline(5, color="r", ls="--", lw=0.8, label="target 5x")
    ax.set_yscale("log")
    ax.set_ylabel("speed-up vs Python-loop reference")
    ax.set_title("selective_scan forward (fp32)")
    ax.legend(fontsize=7)

    ax = axes[0, 1]
    head = results["int_linear"]["M16_K1024_N1024"]["paths"]
    names = [k for k in head if "speedup" in head[k]]
    vals = [head[k]["speedup"] for k in names]
    ax.barh(range(len(names)), vals, color=["C2" if k.startswith("w8a8") else "C0" for k in names])
    ax.set_yticks(range(len(names)), names, fontsize=6)
    ax.axvline(1, color="k", lw=0.8)
    ax.axvline(3, color="r", ls="--", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("speed-up vs fp32 eager nn.Linear")
    ax.set_title("integer linear, M=16, K=N=1024")

    ax = axes[1, 0]
    il = results["int_linear"]
    for key in ("w8a8_eager_cpp_kn", "w8a8_eager_torch_kn", "w4a8_eager_cpp_packed", "bf16_eager",
                "quantize_dynamic_ref"):
        xs, ys = [], []
        for j, (name, r) in enumerate(il.items()):
            if key in r["paths"] and "speedup" in r["paths"][key]:
                xs.append(j)
                ys.append(r["paths"][key]["speedup"])
        ax.plot(xs, ys, "o-", label=key)
    ax.set_xticks(range(len(il)), [n.replace("_", "\n") for n in il], fontsize=6)
    ax.axhline(1, color="k", lw=0.8)
    ax.set_ylabel("speed-up vs fp32 eager")
    ax.set_title("integer linear across shapes")
    ax.legend(fontsize=7)

    ax = axes[1, 1]
    la = results["linear_attention"]
    keys = [k for k in next(iter(la.values()))["paths"] if k != "reference"]
    for i, k in enumerate(keys):
        ax.bar([j + 0.18 * i for j in range(len(la))], [r["paths"][k]["speedup"] for r in la.values()], width=0.18,
               label=k)
    ax.set_xticks(range(len(la)), [n.replace("_", "\n", 2) for n in la], fontsize=7)
    ax.set_yscale("log")
    ax.axhline(1, color="k", lw=0.8)
    ax.set_ylabel("speed-up vs recurrent reference")
    ax.set_title("chunked linear attention (RetNet decay)")
    ax.legend(fontsize=7)
    fig.suptitle(f"latentstack kernels — {results['machine']['cpu']}, {results['machine']['torch_threads']} thread(s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(v: Any, nd: int = 2) -> str:
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def summary(results: dict[str, Any], path: Path) -> None:
    m = results["machine"]
    s_ok = results["scan_speedup_vs_loop_L1024"] >= 5
    w_ok = results["w8a8_speedup_vs_fp32_M16_K1024"] >= 3
    lines = [
        "# Kernel benchmarks",
        "",
        f"Command: `{COMMAND}` (run from the repository root; wall time {results['wall_s']:.0f} s).",
        "",
        (f"Machine: {m['cpu']}, {m['cores']} cores, ISA {', '.join(m['isa'])}; torch {m['torch']}; "
        f"{m['torch_threads']} torch thread(s); load average at start {m['load_avg_at_start'][0]:.2f}. "
        "The machine is shared: every number below is a median of interleaved repeats, and speed-ups are "
        "ratios against the baseline measured in the same group of the same run."),
        "",
        "## Targets",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        (f"| fast scan ≥ 5× the Python-loop reference (B=4, D=64, N=16, L=1024, fp32, fwd) | "
        f"{results['scan_speedup_vs_loop_L1024']:.1f}× (`{results['scan_default_impl']}`) | {'yes' if s_ok else 'NO'} |"),
        (f"| best W8A8 ≥ 3× fp32 eager nn.Linear (M=16, K=N=1024) | "
        f"{results['w8a8_speedup_vs_fp32_M16_K1024']:.2f}× (`{results['w8a8_best_path_M16_K1024']}`) | "
        f"{'yes' if w_ok else 'NO'} |"),
        "",
        "## selective_scan (forward, fp32; speed-up vs the Python-loop reference)",
        "",
        "| shape | reference ms | " + "cpp | compiled | chunked" + " | max rel err |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results["selective_scan"]["forward"].items():
        p = r["paths"]
        cells = [f"{p[k]['speedup']:.1f}× ({p[k]['ms']:.2f} ms)" if k in p else "–" for k in ("cpp", "compiled", "chunked")]
        err = max(p[k]["rel_err_vs_reference"] for k in p if "rel_err_vs_reference" in p[k])
        lines.append(f"| {name} | {p['reference']['ms']:.1f} | " + " | ".join(cells) + f" | {err:.1e} |")
    lines += ["", "Forward + backward (`sum(y²)`, grads wrt u, Δ, A, B, C, D):", "",
              "| shape | reference ms | cpp | chunked | max grad rel err |", "|---|---|---|---|---|"]
    for name, r in results["selective_scan"]["forward_backward"].items():
        p = r["paths"]
        cells = [f"{p[k]['speedup']:.1f}× ({p[k]['ms']:.1f} ms)" if k in p else "–" for k in ("cpp", "chunked")]
        err = max(p[k]["grad_rel_err_vs_reference_max"] for k in p if "grad_rel_err_vs_reference_max" in p[k])
        lines.append(f"| {name} | {p['reference']['ms']:.1f} | " + " | ".join(cells) + f" | {err:.1e} |")
    lines += ["", "(The chunked form's backward is only timed at the headline shape: ~5 s per call at the LION shape.)"]
    comp = results["selective_scan"]["forward"]["headline_B4_D64_N16_L1024"]["paths"].get("compiled", {})
    lines += ["", f"Cold compile of the `compiled` path (first call at L=1024): {_fmt(comp.get('first_call_s'), 1)} s.",
              ("The default (`impl=\"auto\"`) on CPU is the C++ kernel; if it cannot be built the dispatcher falls "
              "back to the reference (the chunked torch form is slower than the loop on this CPU)."), ""]
    lines += ["## Integer linear (speed-up vs fp32 eager nn.Linear)", "",
              ("| shape | fp32 ms | best W8A8 | W8A8 eager cpp (kn) | W8A8 eager torch (kn) | W4A8 cpp packed | "
              "bf16 eager | quantize_dynamic (ref) | W8A8 err vs fp32 |"), "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results["int_linear"].items():
        p = r["paths"]
        w8 = {k: v["speedup"] for k, v in p.items() if k.startswith("w8a8") and "speedup" in v}
        best = max(w8, key=w8.get)

        def c(k: str, p: dict = p) -> str:
            return f"{p[k]['speedup']:.2f}×" if k in p and "speedup" in p[k] else "–"

        lines.append(f"| {name} | {p['fp32_eager']['ms']:.3f} | {w8[best]:.2f}× ({best}) | {c('w8a8_eager_cpp_kn')} | "
                     f"{c('w8a8_eager_torch_kn')} | {c('w4a8_eager_cpp_packed')} | {c('bf16_eager')} | "
                     f"{c('quantize_dynamic_ref')} | {p.get('w8a8_eager_cpp_kn', p['w8a8_eager_torch_kn'])['err_vs_fp32']:.1e} |")
    head = results["int_linear"]["M16_K1024_N1024"]["paths"]
    lines += ["", "All paths at M=16, K=N=1024:", "", "| path | ms | speed-up | paired q25–q75 | notes |",
              "|---|---|---|---|---|"]
    for k, v in head.items():
        if "speedup" not in v:
            continue
        note = []
        for key in ("err_vs_fp32", "rel_err_vs_fake_quant", "rel_err_vs_eager", "compile_s", "fp32_ms_in_group"):
            if key in v:
                note.append(f"{key}={format(v[key], '.1e') if key.endswith(('fp32', 'quant', 'eager')) else _fmt(v[key], 3)}")
        q = f"{v['speedup_paired_q25']:.2f}–{v['speedup_paired_q75']:.2f}" if "speedup_paired_q25" in v else "direct"
        lines.append(f"| {k} | {v['ms']:.3f} | {v['speedup']:.3g}× | {q} | {', '.join(note)} |")
    il = results["int_linear"]

    def sp(shape: str, key: str) -> str:
        v = il.get(shape, {}).get("paths", {}).get(key, {})
        return f"{v['speedup']:.3g}×" if "speedup" in v else "n/a"

    amx = "amx_int8" in m["isa"]
    lines += [
        "",
        ("Compiled variants are timed right after compiling, each in its own interleaved group with the fp32 "
        "baseline (`fp32_ms_in_group`)."),
        "",
        "Findings on this CPU" + ("" if amx else " (no AMX, unlike the machine behind kernels.md's §3 table)") + ":",
        "",
        (f"- `freezing=True` routes the W8A8 pattern to oneDNN `qlinear_pointwise` with int8 activations: "
        f"{sp('M16_K1024_N1024', 'w8a8_compiled_freezing')} of fp32; adding max-autotune selects inductor's "
        f"reference C++ micro-GEMM: {sp('M16_K1024_N1024', 'w8a8_compiled_freezing_maxautotune')}. "
        "Freezing is therefore opt-in only in `compile_int_model`."),
        (f"- Weight layout for `_int_mm`: contiguous `[K, N]` (kn) vs transposed view of `[N, K]` (nk), fused C++ op: "
        f"M=16 {sp('M16_K1024_N1024', 'w8a8_eager_cpp_kn')} vs {sp('M16_K1024_N1024', 'w8a8_eager_cpp_nk')}, "
        f"M=16 K=N=2048 {sp('M16_K2048_N2048', 'w8a8_eager_cpp_kn')} vs {sp('M16_K2048_N2048', 'w8a8_eager_cpp_nk')}, "
        f"M=1 {sp('M1_K1024_N1024', 'w8a8_eager_cpp_kn')} vs {sp('M1_K1024_N1024', 'w8a8_eager_cpp_nk')}; "
        "`kn` is the default."),
        (f"- VLA-sized layers (d=128): fc1 128→512 at M=16 {sp('vla_expert_fc1_M16_K128_N512', 'w8a8_eager_cpp_kn')}, "
        f"fc2 512→128 at M=64 {sp('vla_expert_fc2_M64_K512_N128', 'w8a8_eager_cpp_kn')} — per-call overhead "
        "dominates such small GEMMs; the int formats' clear win there is memory."),
        ("- W4A8 has no int4×int8 CPU kernel: the packed codes are unpacked to int8 per call (`packed`) or "
        "once (`cached_int8`, W8A8 memory on top of the packed bytes)."),
    ]
    lines += ["", ("Whole models (compiled variants as one graph; speed-up against the fp32-eager time measured in "
              "the same group — the group's fp32 time is shown, the machine's load varied during the run):"), "",
              "| model | path | ms | fp32 eager ms in its group | speed-up |", "|---|---|---|---|---|"]
    for name, r in results["int_models"].items():
        base_ms = r["paths"]["fp32_eager"]["ms"]
        for k, v in r["paths"].items():
            lines.append(f"| {name} | {k} | {v['ms']:.3f} | {v.get('fp32_ms_in_group', base_ms):.3f} | "
                         f"{v['speedup']:.2f}× |")
    lines += ["", ("Memory of an 8×1024² MLP (state = int codes + scales + bias, exact; resident = RSS growth in a "
              "fresh process after `malloc_trim`, loading the safetensors state with `assign=True`, then after "
              "the first call — which for compiled formats includes inductor's code and runtime):"), "",
              "| format | state bytes | safetensors file | RSS loaded (MiB) | RSS after 1st call (MiB) |",
              "|---|---|---|---|---|"]
    for fmt, r in results["memory_mlp8_K1024"].items():
        if "error" in r:
            lines.append(f"| {fmt} | error | | | |")
            continue
        lines.append(f"| {fmt} | {r['state_bytes']['total']:,} | {r['safetensors_file_bytes']:,} | "
                     f"{r['rss_model_loaded_mib']:.1f} | {r['rss_after_first_call_mib']:.1f} |")
    lines += ["", "## Chunked linear attention (RetNet decays; speed-up vs the recurrent loop)", "",
              "| shape | reference ms | path | speed-up | rel err |", "|---|---|---|---|---|"]
    for name, r in results["linear_attention"].items():
        for k, v in r["paths"].items():
            if k != "reference":
                lines.append(f"| {name} | {r['paths']['reference']['ms']:.2f} | {k} | {v['speedup']:.1f}× | "
                             f"{v.get('rel_err_vs_reference', 0):.1e} |")
    lines += ["", "## Conceptor gate (speed-up vs `h + β(h Cᵀ − h)`)", "", "| size | path | ms | speed-up |",
              "|---|---|---|---|"]
    for name, r in results["conceptor_gate"].items():
        for k, v in r["paths"].items():
            lines.append(f"| {name} | {k} | {v['ms']:.4f} | {v['speedup']:.2f}× |")
    cg = results["conceptor_gate"]["d128_M16"]["paths"]
    frac = cg["matrix_precomputed"].get("fraction_of_expert_step")
    if frac is not None:
        lines += ["", (f"At d=128, 16 tokens the gate costs {100 * frac:.1f}% (precomputed M, `ConceptorGate`) / "
                  f"{100 * cg['addmm']['fraction_of_expert_step']:.1f}% (`conceptor_gate`, addmm) of one stand-in expert step "
                  "(4 pre-LN transformer layers, d=128, 16 tokens; the real policy call also runs vision, "
                  "backbone and 10 denoising steps, so the fraction of a policy call is smaller).")]
    lines += ["", "Raw numbers: `kernels.json`; plot: `kernels.png`.", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "kernels")
    ap.add_argument("--rss-probe", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--state", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_probe:
        print(json.dumps(rss_probe(args.rss_probe, args.state)))
        return
    torch.set_num_threads(args.threads)
    torch._dynamo.config.recompile_limit = 64  # many module instances are compiled in one process
    rounds = 3 if args.quick else args.rounds
    t_start = time.perf_counter()
    results: dict[str, Any] = {"command": COMMAND, "machine": machine_info(args.threads), "rounds": rounds}
    formats = RSS_FORMATS[:2] if args.quick else RSS_FORMATS
    n_steps = (2 if args.quick else 5) + 2 + 2 + (2 if args.quick else 7) + 2 + len(formats) + 3
    sections: list[tuple[str, Callable[[tqdm], None]]] = [
        ("selective_scan", lambda bar: bench_scan(results, rounds, args.quick, bar)),
        ("linear_attention", lambda bar: bench_linear_attention(results, rounds, bar)),
        ("int_linear", lambda bar: bench_int_linear(results, rounds, args.quick, bar)),
        ("int_models", lambda bar: bench_int_models(results, max(3, rounds // 2), bar)),
        ("memory", lambda bar: bench_memory(results, bar, formats)),
        ("conceptor_gate", lambda bar: bench_conceptor(results, rounds, bar)),
    ]
    results["section_wall_s"] = {}
    with tqdm(total=n_steps, desc="kernels", unit="case", dynamic_ncols=True) as bar:
        for name, run in sections:
            t0 = time.perf_counter()
            run(bar)
            results["section_wall_s"][name] = time.perf_counter() - t0
            bar.write(f"{name}: {results['section_wall_s'][name]:.1f} s")
    results["wall_s"] = time.perf_counter() - t_start
    if _OWN_CACHE:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "kernels.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    plot(results, args.out / "kernels.png")
    summary(results, args.out / "summary.md")
    print(f"scan_speedup_vs_loop_L1024 = {results['scan_speedup_vs_loop_L1024']:.2f} "
          f"({results['scan_default_impl']}); w8a8_speedup_vs_fp32_M16_K1024 = "
          f"{results['w8a8_speedup_vs_fp32_M16_K1024']:.2f} ({results['w8a8_best_path_M16_K1024']}); "
          f"wall {results['wall_s']:.0f} s -> {args.out}")


if __name__ == "__main__":
    main()
