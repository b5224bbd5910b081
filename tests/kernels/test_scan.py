"""selective_scan: every fast path against the reference loop (kernels.md §1 acceptance tests)."""
from __future__ import annotations

import pytest
import torch

from latentstack.kernels import scan as scan_mod
from latentstack.kernels._cpp import CppOps
from latentstack.kernels.dispatch import resolve
from latentstack.kernels.scan import selective_scan, selective_scan_ref

FAST = ["cpp", "chunked"]


def _need(impl: str, has_cpp: bool) -> None:
    if impl == "cpp" and not has_cpp:
        pytest.skip("C++ kernel unavailable on this machine")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-300))


@pytest.mark.parametrize("impl", FAST)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("length", [1, 17, 64, 1000])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("groups", [1, 4])
def test_fast_path_matches_reference(scan_inputs, has_cpp, impl, dtype, tol, length, reverse, groups):
    _need(impl, has_cpp)
    # alternate "all options" / "no options" so every combination of L, reverse, G sees both
    full = (length + groups + int(reverse)) % 2 == 0
    x = scan_inputs(2, 8, 16, length, groups, dtype, seed=length, full=full)
    y_ref, h_ref = selective_scan_ref(**x, reverse=reverse, return_last_state=True)
    y, h = selective_scan(**x, reverse=reverse, return_last_state=True, impl=impl)
    assert y.dtype == dtype and y.shape == y_ref.shape and h.shape == h_ref.shape
    assert _rel(y, y_ref) <= tol
    assert _rel(h, h_ref) <= tol


@pytest.mark.parametrize("impl", ["reference", *FAST])
def test_reverse_is_flip_scan_flip(scan_inputs, has_cpp, impl):
    _need(impl, has_cpp)
    x = scan_inputs(2, 8, 4, 33, 4)
    y_rev, h_rev = selective_scan(**x, reverse=True, return_last_state=True, impl=impl)
    flipped = {k: (v.flip(-1) if k in ("u", "delta", "B", "C", "z") else v) for k, v in x.items()}
    y_f, h_f = selective_scan(**flipped, return_last_state=True, impl=impl)
    assert _rel(y_rev, y_f.flip(-1)) <= 1e-13
    assert _rel(h_rev, h_f) <= 1e-13


@pytest.mark.parametrize("impl", FAST)
@pytest.mark.parametrize("groups,dch,reverse", [(1, 8, False), (4, 12, True), (2, 40, False)])
def test_gradients_match_reference_fp64(scan_inputs, has_cpp, impl, groups, dch, reverse):
    """dL/d(u, Δ, A, B, C, D, z, bias, h0) ≤ 1e-10 relative; channel groups not multiples of 16."""
    _need(impl, has_cpp)
    x = scan_inputs(2, dch, 5, 45, groups, seed=3)
    leaves = {k: v.clone().requires_grad_() for k, v in x.items()}

    def grads(fn_impl: str) -> list[torch.Tensor]:
        y, h = selective_scan(**leaves, reverse=reverse, return_last_state=True, impl=fn_impl, chunk_size=16)
        loss = (y**2).sum() + (h * torch.linspace(-1, 1, h.numel(), dtype=h.dtype).view_as(h)).sum()
        return list(torch.autograd.grad(loss, list(leaves.values())))

    for name, g, g_ref in zip(leaves, grads(impl), grads("reference"), strict=True):
        assert _rel(g, g_ref) <= 1e-10, name


def test_gradcheck_cpp_tiny(has_cpp):
    _need("cpp", has_cpp)
    gen = torch.Generator().manual_seed(1)
    kw = {"dtype": torch.float64, "requires_grad": True}
    u = torch.randn(1, 2, 12, generator=gen, **kw)
    delta = torch.randn(1, 2, 12, generator=gen, **kw)
    A = (-torch.rand(2, 3, generator=gen, dtype=torch.float64)).requires_grad_()
    B = torch.randn(1, 1, 3, 12, generator=gen, **kw)
    C = torch.randn(1, 1, 3, 12, generator=gen, **kw)
    D = torch.randn(2, generator=gen, **kw)
    z = torch.randn(1, 2, 12, generator=gen, **kw)

    def f(*a):
        return selective_scan(*a, impl="cpp", chunk_size=5)

    assert torch.autograd.gradcheck(f, (u, delta, A, B, C, D, z))
    assert torch.autograd.gradcheck(lambda *a: selective_scan(*a, reverse=True, impl="cpp"), (u, delta, A, B, C))


@pytest.mark.parametrize("impl", ["reference", *FAST])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_stability_large_steps(scan_inputs, has_cpp, impl, dtype):
    """Δ×40 and A down to −16 (Δ·|A| ≈ 50 per step) stays finite (the log-cumsum form fails here)."""
    _need(impl, has_cpp)
    x = scan_inputs(2, 8, 16, 200, dtype=dtype, full=False)
    x["delta"] = torch.nn.functional.softplus(x["delta"] + 2.0) * 40.0
    x["A"] = -torch.linspace(0.01, 16.0, 16, dtype=dtype).repeat(8, 1)
    y, h = selective_scan(**x, delta_softplus=False, return_last_state=True, impl=impl)
    assert torch.isfinite(y).all() and torch.isfinite(h).all()
    y_ref = selective_scan_ref(**x, delta_softplus=False)
    assert _rel(y, y_ref) <= (1e-12 if dtype == torch.float64 else 1e-5)


@pytest.mark.parametrize("impl", ["reference", *FAST])
def test_groups_are_independent(scan_inputs, has_cpp, impl):
    """With G = 4, channel block k reads only B[:, k], C[:, k]."""
    _need(impl, has_cpp)
    x = scan_inputs(2, 12, 4, 40, 4)
    y0 = selective_scan(**x, impl=impl)
    for k in range(4):
        x2 = dict(x)
        B = x["B"].clone()
        others = [j for j in range(4) if j != k]
        B[:, others] += 10.0
        x2["B"] = B
        y1 = selective_scan(**x2, impl=impl)
        blk = slice(3 * k, 3 * (k + 1))
        assert torch.equal(y1[:, blk], y0[:, blk])
        assert not torch.allclose(y1, y0)


def test_three_dim_b_c_and_low_precision_inputs(scan_inputs, has_cpp):
    _need("cpp", has_cpp)
    x = scan_inputs(2, 8, 4, 30, 1, dtype=torch.float32, full=False)
    y4 = selective_scan(**x, impl="cpp")
    x3 = dict(x, B=x["B"][:, 0], C=x["C"][:, 0])
    assert torch.equal(selective_scan(**x3, impl="cpp"), y4)
    xb = {k: v.to(torch.bfloat16) for k, v in x.items() if v is not None}
    yb = selective_scan(**xb, impl="cpp")
    assert yb.dtype == torch.bfloat16
    y_ref = selective_scan_ref(**{k: v.float() for k, v in xb.items()})
    assert _rel(yb.float(), y_ref) <= 1e-2  # bf16 output rounding only


def test_auto_dispatch_and_fallback(scan_inputs, has_cpp, monkeypatch):
    x = scan_inputs(1, 4, 3, 9)
    assert resolve("selective_scan", "auto", "cpu").name == ("cpp" if has_cpp else "reference")
    monkeypatch.setattr(scan_mod, "cpp_available", lambda: False)
    assert resolve("selective_scan", "auto", "cpu").name == "reference"
    assert torch.equal(selective_scan(**x), selective_scan_ref(**x))
    with pytest.raises(RuntimeError, match="unavailable"):
        selective_scan(**x, impl="cpp")
    with pytest.raises(ValueError):
        selective_scan(**x, impl="nope")
    # on a CUDA tensor: the Triton kernel when triton and a GPU are there, else mamba-ssm, else chunked torch
    assert resolve("selective_scan", "auto", "cuda").name in ("triton", "mamba_ssm", "chunked")


def test_failed_build_falls_back_quietly(tmp_path, monkeypatch):
    """A source that does not compile makes ``load`` return False with a warning, never raise."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    bad = CppOps("latentstack_broken", "#error deliberately broken\n", "broken.cpp", "LATENTSTACK_BROKEN",
                 "broken test op", probe="nothing")
    with pytest.warns(RuntimeWarning, match="unavailable"):
        assert bad.load() is False
    assert bad.status()[0] is False and bad.status()[1]
    assert bad.load() is False  # remembered, no second build
    monkeypatch.setenv("LATENTSTACK_OFF", "0")
    off = CppOps("latentstack_off", "", "off.cpp", "LATENTSTACK_OFF", "off", probe="x")
    assert off.load() is False and "disabled" in (off.status()[1] or "")


def test_shape_errors(scan_inputs):
    x = scan_inputs(1, 6, 3, 5, 1)
    with pytest.raises(ValueError):
        selective_scan_ref(**dict(x, B=torch.zeros(1, 4, 3, 5, dtype=torch.float64),
                                  C=torch.zeros(1, 4, 3, 5, dtype=torch.float64)))
    with pytest.raises(ValueError):
        selective_scan_ref(**dict(x, A=torch.zeros(5, 3, dtype=torch.float64)))


@pytest.mark.slow
def test_compiled_chunk_loop_matches_reference(scan_inputs):
    """torch.compile'd per-chunk loop (cold compile ~15-40 s)."""
    x = scan_inputs(1, 4, 4, 21, 1, dtype=torch.float32)
    y_ref, h_ref = selective_scan_ref(**x, return_last_state=True)
    y, h = selective_scan(**x, return_last_state=True, impl="compiled", chunk_size=8)
    assert _rel(y, y_ref) <= 1e-5 and _rel(h, h_ref) <= 1e-5


def test_cpp_threads_do_not_change_results(scan_inputs, has_cpp):
    """Work is split over (batch, group, channel block) tasks: 1 vs 2 threads is bit-identical."""
    _need("cpp", has_cpp)
    x = scan_inputs(3, 40, 8, 70, 2, dtype=torch.float32)
    leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
    old = torch.get_num_threads()
    outs = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            y = selective_scan(**leaves, impl="cpp")
            outs.append([y, *torch.autograd.grad(y.square().sum(), list(leaves.values()))])
    finally:
        torch.set_num_threads(old)
    for a, b in zip(*outs, strict=True):
        assert torch.equal(a, b)
