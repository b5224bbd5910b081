"""Triton integer-linear kernels against their references: on CPU through triton's interpreter, on CUDA (``gpu``).

The interpreter is chosen when ``@triton.jit`` runs, i.e. when ``latentstack.kernels.triton_int`` is first
imported (triton 3.9 reads ``TRITON_INTERPRET`` through ``triton.knobs.runtime.interpret`` at decoration), so
this module sets it before that import on a machine without CUDA. On a GPU machine the variable is left alone and
the compiled kernels run in the ``cuda`` twins.

Where the math is integer (codes, int32 accumulators) the comparison is exact; dequantised outputs are compared
with tolerances from the float epilogue (a fused multiply-add: a few ulp) or from the quantisation step.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")

from latentstack.kernels import triton_int as ti
from latentstack.kernels.dispatch import resolve
from latentstack.kernels.int_linear import (
    W4A8Linear,
    W8A8Linear,
    _resolve_impl,
    int_mm_reference,
    pack_int4,
    quantize_per_channel,
    quantize_per_token,
    unpack_int4,
)


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def tdev(request: pytest.FixtureRequest) -> str:
    if not ti.runs_on(request.param):
        why = ("triton kernels were compiled for CUDA in this process" if request.param == "cpu"
               else "no CUDA device (or the kernels were built for the interpreter)")
        pytest.skip(why)
    return request.param


def _x(m: int, k: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(m, k, generator=g) * torch.rand(m, 1, generator=g) * 4).to(dtype)


SHAPES = [(1, 8, 8), (5, 37, 19), (17, 64, 40), (33, 130, 70)]


@pytest.mark.parametrize("m,k", [(1, 8), (5, 37), (33, 130), (3, 200)])
def test_quantize_per_token_equals_reference_bitwise(tdev: str, m: int, k: int) -> None:
    x = _x(m, k, seed=m * k)
    x[0, :] = 0.0  # a zero row: scale = eps / 127, codes 0 (never NaN)
    q, s = ti.quantize_per_token_triton(x.to(tdev))
    q_ref, s_ref = quantize_per_token(x)
    assert q.dtype == torch.int8 and s.shape == (m, 1)
    assert torch.equal(q.cpu(), q_ref)  # IEEE division + round-half-even on both sides: the same codes
    assert torch.equal(s.cpu(), s_ref)


def test_quantize_rounds_half_to_even(tdev: str) -> None:
    # row max 127 -> scale exactly 1, so x / s hits the .5 ties: torch.round gives 0, 2, 2, -2, 4
    x = torch.tensor([[0.5, 1.5, 2.5, -2.5, 3.5, 127.0, -126.5, 0.49999997]])
    q, _ = ti.quantize_per_token_triton(x.to(tdev))
    assert q.cpu().tolist() == [[0, 2, 2, -2, 4, 127, -126, 0]]
    assert torch.equal(q.cpu(), quantize_per_token(x)[0])


def test_quantize_bf16_input(tdev: str) -> None:
    x = _x(6, 48, seed=3, dtype=torch.bfloat16)
    q, s = ti.quantize_per_token_triton(x.to(tdev))
    q_ref, s_ref = quantize_per_token(x)  # converts to float32 first, as the kernel does (exact)
    assert torch.equal(q.cpu(), q_ref) and torch.equal(s.cpu(), s_ref)


@pytest.mark.parametrize("m,k,n", SHAPES)
@pytest.mark.parametrize("layout", ["kn", "nk"])
def test_int8_accumulator_exact(tdev: str, m: int, k: int, n: int, layout: str) -> None:
    g = torch.Generator().manual_seed(m + k + n)
    a = torch.randint(-127, 128, (m, k), dtype=torch.int8, generator=g)
    w = torch.randint(-127, 128, (k, n), dtype=torch.int8, generator=g)
    w_dev = w.to(tdev) if layout == "kn" else w.t().contiguous().to(tdev).t()  # transposed view: strides (1, K)
    acc = ti.int8_matmul_triton(a.to(tdev), w_dev)
    assert acc.dtype == torch.int32
    assert torch.equal(acc.cpu(), int_mm_reference(a, w))


@pytest.mark.parametrize("m,k,n", SHAPES + [(4, 65, 24)])
def test_int4_unpack_in_gemm_exact(tdev: str, m: int, k: int, n: int) -> None:
    g = torch.Generator().manual_seed(7 * k + n)
    a = torch.randint(-127, 128, (m, k), dtype=torch.int8, generator=g)
    w4 = torch.randint(-8, 8, (k, n), dtype=torch.int8, generator=g)
    packed = pack_int4(w4, dim=0)  # [ceil(K/2), N]: odd K pads a zero code
    acc = ti.int4_matmul_triton(a.to(tdev), packed.to(tdev), k)
    assert torch.equal(acc.cpu(), int_mm_reference(a, w4))


def _linear(k: int, n: int, seed: int, bias: bool = True) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(k, n, bias=bias)


def _codes_kn(layer: W8A8Linear | W4A8Linear) -> torch.Tensor:
    # torch-only unpacking (the layer's own weight_kn() would build the C++ ops on CPU: ~15 s)
    if isinstance(layer, W4A8Linear):
        return unpack_int4(layer.weight_packed.cpu(), layer.in_features, dim=0)
    return layer.weight_kn().cpu()


def _torch_expression(layer: W8A8Linear | W4A8Linear, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``impl="torch"`` expression (exact int32 acc · s_x · s_w + b in fp32) and an epilogue tolerance:
    the accumulators are equal on both paths, the fp32 epilogue may round differently (an FMA on one side),
    bounded by 4 ulp of the magnitudes involved, per element."""
    xq, sx = quantize_per_token(x)
    acc = int_mm_reference(xq, _codes_kn(layer))
    sw = layer.weight_scale.cpu()
    y = acc.to(torch.float32) * sx * sw
    mag = acc.abs().double() * sx.double() * sw.double()
    if layer.bias is not None:
        y = y + layer.bias.cpu()
        mag = mag + layer.bias.cpu().double().abs()
    return y, 4 * torch.finfo(torch.float32).eps * (mag + 1e-30)


@pytest.mark.parametrize("m,k,n", SHAPES)
@pytest.mark.parametrize("kind", ["w8a8", "w4a8"])
def test_fused_layer_matches_torch_path(tdev: str, m: int, k: int, n: int, kind: str) -> None:
    lin = _linear(k, n, seed=m + n, bias=(m % 2 == 1))
    layer = (W8A8Linear.from_float(lin, impl="torch") if kind == "w8a8"
             else W4A8Linear.from_float(lin, impl="torch"))
    x = _x(m, k, seed=11 * m)
    ref, tol = _torch_expression(layer, x)
    out = layer.to(tdev).run(x.to(tdev), "triton").cpu()
    assert out.dtype == torch.float32 and out.shape == (m, n)
    assert ((out.double() - ref.double()).abs() <= tol).all()
    if kind == "w4a8":
        assert layer._unpacked is None  # the packed bytes were read in the kernel; no int8 copy kept


@pytest.mark.parametrize("kind", ["w8a8", "w4a8"])
def test_fused_layer_within_quantisation_bound_of_float(tdev: str, kind: str) -> None:
    """|y_q − y| ≤ Σ_k |x_k|·Δw + |w_k|·Δx + Δx·Δw with Δx = s_x/2, Δw = s_w/2 (per row / column)."""
    m, k, n = 9, 96, 48
    lin = _linear(k, n, seed=5)
    cls = W8A8Linear if kind == "w8a8" else W4A8Linear
    layer = cls.from_float(lin, impl="torch").to(tdev)
    x = _x(m, k, seed=2)
    out = layer.run(x.to(tdev), "triton").cpu().double()
    ref = lin(x).detach().double()
    _, sx = quantize_per_token(x)
    _, sw = quantize_per_channel(lin.weight, 8 if kind == "w8a8" else 4)
    dx, dw = sx.double() / 2, sw.double()[None, :] / 2
    bound = (x.abs().double().sum(1, keepdim=True) * dw + dx * lin.weight.abs().double().sum(1)[None, :]
             + k * dx * dw)
    assert ((out - ref).abs() <= bound * (1 + 1e-6) + 1e-6).all()


@pytest.mark.parametrize("kind", ["w8a8", "w4a8"])
def test_fused_and_two_kernel_forms_are_identical(tdev: str, kind: str) -> None:
    """One kernel (scales recomputed per N-block) or quantise-then-GEMM: same codes, scales, accumulators and
    epilogue, so bit-identical outputs; the automatic choice for this shape (M 70, 5 N-blocks) is two kernels."""
    m, k, n = 70, 40, 5 * 64
    lin = _linear(k, n, seed=3)
    layer = (W8A8Linear if kind == "w8a8" else W4A8Linear).from_float(lin, impl="torch").to(tdev)
    x = _x(m, k, seed=8).to(tdev)
    assert not ti._fused(m, n, None) and ti._fused(m, 64, None) and ti._fused(16, n, None)
    if kind == "w8a8":
        args = (x, layer.weight_kn(), layer.weight_scale, layer.bias)
        one, two = ti.w8a8_linear_triton(*args, fuse=True), ti.w8a8_linear_triton(*args, fuse=False)
    else:
        args = (x, layer.weight_packed, k, layer.weight_scale, layer.bias)
        one, two = ti.w4a8_linear_triton(*args, fuse=True), ti.w4a8_linear_triton(*args, fuse=False)
    ref, tol = _torch_expression(layer.cpu(), x.cpu())
    if tdev == "cpu":
        assert torch.equal(one, two)  # the interpreter's numpy epilogue: the same operations, no FMA contraction
    else:  # two compiled kernels: each epilogue may contract differently into an FMA
        assert ((one.cpu().double() - two.cpu().double()).abs() <= 2 * tol).all()
    assert ((two.cpu().double() - ref.double()).abs() <= tol).all()


def test_bf16_activations_in_and_out(tdev: str) -> None:
    lin = _linear(64, 40, seed=1)
    layer = W8A8Linear.from_float(lin, impl="torch")
    x = _x(7, 64, seed=4, dtype=torch.bfloat16)
    ref = _torch_expression(layer, x.float())[0].to(torch.bfloat16)  # what impl="torch" gives: fp32, then bf16
    out = layer.to(tdev).run(x.to(tdev), "triton").cpu()
    assert out.dtype == torch.bfloat16
    # same fp32 value up to the epilogue ulp, then one bf16 rounding: at most one bf16 ulp apart
    assert torch.allclose(out.float(), ref.float(), rtol=2 ** -7, atol=1e-6)


def test_w4a8_cache_unpacked_uses_int8_copy(tdev: str) -> None:
    lin = _linear(32, 24, seed=9)
    layer = W4A8Linear.from_float(lin, impl="torch", cache_unpacked=True).to(tdev)
    x = _x(3, 32, seed=1).to(tdev)
    a = layer.run(x, "triton")
    assert layer._unpacked is not None
    b = W4A8Linear.from_float(lin, impl="torch").to(tdev).run(x, "triton")
    if tdev == "cpu":
        assert torch.equal(a.cpu(), b.cpu())  # same codes and int32 sums, same epilogue operations
    else:  # two compiled kernel variants: at most the epilogue's FMA rounding apart
        torch.testing.assert_close(a.cpu(), b.cpu(), rtol=4 * torch.finfo(torch.float32).eps, atol=1e-7)


def test_auto_dispatch_unchanged_on_cpu() -> None:
    layer = W8A8Linear.from_float(_linear(16, 16, seed=0), impl="auto")
    assert _resolve_impl("auto", torch.zeros(2, 16)) in ("cpp", "torch")  # never triton on CPU tensors
    assert layer.impl == "auto"
    with pytest.raises(ValueError):
        W8A8Linear(8, 8, impl="cuda-magic")


@pytest.mark.gpu
def test_auto_picks_triton_on_cuda() -> None:
    if not ti.runs_on("cuda"):
        pytest.skip("no CUDA device (or triton built for the interpreter)")
    assert resolve("int_linear", "auto", "cuda").name == "triton"
    assert _resolve_impl("auto", torch.zeros(2, 16, device="cuda")) == "triton"
    # torch._int_mm twin on CUDA: same int32 accumulators
    g = torch.Generator().manual_seed(0)
    a = torch.randint(-127, 128, (32, 64), dtype=torch.int8, generator=g).cuda()
    w = torch.randint(-127, 128, (64, 48), dtype=torch.int8, generator=g).cuda()
    assert torch.equal(ti.int8_matmul_triton(a, w), torch._int_mm(a, w))


# Compiled-mode lowering without a GPU: the interpreter runs any Python, the compiler does not (it type-checks every
# return of a helper, for one: that caught a bug here). Triton compiles to PTX/cubin with its bundled ptxas and no
# device, so the kernel variants the launchers use are compiled for sm_90 in a clean subprocess (the kernels in
# this process were built for the interpreter).
AOT = r"""
import sys
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, compile as tcompile
from latentstack.kernels import triton_int as ti
assert not ti.INTERPRETED
GEMM = {"A": "*fp32", "W": "*i8", "SX": "*fp32", "SW": "*fp32", "BIAS": "*fp32", "Y": "*fp32", "M": "i32", "N": "i32",
        "K": "i32", "stride_am": "i32", "stride_ak": "i32", "stride_wk": "i32", "stride_wn": "i32", "stride_ym": "i32",
        "stride_yn": "i32", "eps": "fp32", "QUANT_A": "constexpr", "W4": "constexpr", "EPILOGUE": "constexpr",
        "HAS_BIAS": "constexpr", "BLOCK_M": "constexpr", "BLOCK_N": "constexpr", "BLOCK_K": "constexpr"}
QUANT = {"X": "*bf16", "Q": "*i8", "S": "*fp32", "M": "i32", "K": "i32", "stride_xm": "i32", "stride_xk": "i32",
         "stride_qm": "i32", "stride_qk": "i32", "eps": "fp32", "BLOCK_M": "constexpr", "BLOCK_K": "constexpr"}
def build(fn, sig, consts, arch):
    src = ASTSource(fn, sig, constexprs={(list(sig).index(k),): v for k, v in consts.items()})
    return tcompile(src, target=GPUTarget("cuda", arch, 32)).asm["ptx"]
n = 0
for arch in (90,):  # sm_80 (Ampere / Orin) compiles too (checked by hand); one target keeps the test short
    for qa, w4, ep, bias, bm, a_ty in [(1, 0, 1, 1, 16, "*fp32"), (1, 1, 1, 0, 64, "*bf16"), (0, 1, 0, 0, 16, "*i8"),
                                       (0, 1, 1, 1, 64, "*i8")]:
        sig = dict(GEMM, A=a_ty, W="*u8" if w4 else "*i8", Y=("*bf16" if a_ty == "*bf16" else "*fp32") if ep else "*i32")
        ptx = build(ti._int_gemm_kernel, sig, dict(QUANT_A=bool(qa), W4=bool(w4), EPILOGUE=bool(ep),
                                                  HAS_BIAS=bool(bias), BLOCK_M=bm, BLOCK_N=64, BLOCK_K=64), arch)
        assert "mma" in ptx, "int8 tl.dot did not become an MMA"
        assert ("div.rn.f32" in ptx) == bool(qa), "activation scales need IEEE division"
        n += 1
    ptx = build(ti._quantize_rows_kernel, QUANT, dict(BLOCK_M=16, BLOCK_K=64), arch)
    # round-half-even by (v + 1.5*2^23) - 1.5*2^23: both adds must survive compilation, division must be IEEE
    assert "div.rn.f32" in ptx and "0f4B400000" in ptx and "0fCB400000" in ptx
    n += 1
print("compiled", n)
"""


def test_kernels_compile_for_sm90_without_a_gpu(tmp_path: object) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU machine runs the compiled kernels in the cuda twins")
    pytest.importorskip("triton.backends.compiler")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(TRITON_CACHE_DIR=str(tmp_path), TRITON_DEFAULT_FP_FUSION="1")
    r = subprocess.run([sys.executable, "-c", AOT], env=env, capture_output=True, text=True, timeout=600,
                       check=False)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "compiled 5" in r.stdout
