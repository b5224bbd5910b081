"""Integer linears: quantisers, int4 packing, int GEMM exactness, module paths, memory (kernels.md §3)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from latentstack.kernels import int_linear as il
from latentstack.kernels.int_linear import (
    W4A8Linear,
    W8A8Linear,
    compile_int_model,
    fake_quant,
    int_cpp_available,
    int_mm,
    int_mm_reference,
    pack_int4,
    quantize_linears,
    quantize_per_channel,
    quantize_per_token,
    resident_bytes,
    state_bytes,
    unpack_int4,
)

IMPLS = ["torch", "cpp"]


@pytest.fixture(scope="module")
def has_int_cpp() -> bool:
    return int_cpp_available()


def _need(impl: str, has_int_cpp: bool) -> None:
    if impl == "cpp" and not has_int_cpp:
        pytest.skip("C++ int ops unavailable on this machine")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


@pytest.mark.parametrize("bits", [4, 8])
def test_fake_quant_idempotent_and_error_bound(bits):
    x = torch.randn(64, 33) * 3
    s = x.abs().amax(dim=1, keepdim=True) / il.qmax(bits)
    q1 = fake_quant(x, s, bits)
    assert torch.equal(fake_quant(q1, s, bits), q1)
    assert ((q1 - x).abs() <= s / 2 * (1 + 1e-6)).all()  # in range (max-abs scale) ⇒ no clipping


def test_code_ranges():
    w = torch.randn(40, 70) * 5
    q8, s8 = quantize_per_channel(w, 8)
    q4, s4 = quantize_per_channel(w, 4)
    assert q8.dtype == q4.dtype == torch.int8 and s8.shape == s4.shape == (40,)
    assert int(q8.min()) >= -128 and int(q8.max()) <= 127
    assert int(q4.min()) >= -8 and int(q4.max()) <= 7
    x = torch.randn(5, 3, 70)
    qx, sx = quantize_per_token(x)
    assert qx.shape == x.shape and sx.shape == (5, 3, 1) and int(qx.abs().max()) == 127
    assert torch.equal(quantize_per_token(torch.zeros(2, 4))[0], torch.zeros(2, 4, dtype=torch.int8))


@pytest.mark.parametrize("length", [1, 2, 7, 64])
@pytest.mark.parametrize("dim", [0, 1])
def test_int4_pack_roundtrip_exact(length, dim):
    gen = torch.Generator().manual_seed(length)
    shape = (length, 9) if dim == 0 else (9, length)
    q = torch.randint(-8, 8, shape, generator=gen, dtype=torch.int8)
    p = pack_int4(q, dim=dim)
    assert p.dtype == torch.uint8 and p.shape[dim] == (length + 1) // 2
    assert torch.equal(unpack_int4(p, length, dim=dim), q)
    with pytest.raises(ValueError):
        pack_int4(torch.tensor([8], dtype=torch.int8))


def test_cpp_unpack_matches_torch(has_int_cpp):
    _need("cpp", has_int_cpp)
    for K in (1, 6, 33):
        q = torch.randint(-8, 8, (K, 24), dtype=torch.int8)
        p = pack_int4(q, dim=0)
        assert torch.equal(torch.ops.latentstack_int.unpack_int4_rows(p, K), q)


@pytest.mark.parametrize("m,k,n", [(1, 1024, 64), (3, 30, 7), (5, 17, 9), (16, 256, 256), (33, 64, 40)])
@pytest.mark.parametrize("pad", [None, True])
def test_int_mm_exact_against_int32_reference(m, k, n, pad):
    gen = torch.Generator().manual_seed(m * k + n)
    a = torch.randint(-128, 128, (m, k), generator=gen, dtype=torch.int8)
    w = torch.randint(-128, 128, (n, k), generator=gen, dtype=torch.int8)
    ref = int_mm_reference(a, w.t())
    for b in (w.t(), w.t().contiguous()):  # transposed view and contiguous operand
        out = int_mm(a, b, pad=pad)
        assert out.dtype == torch.int32 and torch.equal(out, ref)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("cls,kw", [(W8A8Linear, {"layout": "kn"}), (W8A8Linear, {"layout": "nk"}),
                                    (W4A8Linear, {}), (W4A8Linear, {"cache_unpacked": True})])
@pytest.mark.parametrize("m", [1, 16, 37])
def test_int_gemm_equals_fp64_of_dequantized(has_int_cpp, impl, cls, kw, m):
    """Integer path == float64 matmul of the dequantised operands to 1e-6 relative."""
    _need(impl, has_int_cpp)
    torch.manual_seed(m)
    lin = nn.Linear(96, 40)
    layer = cls.from_float(lin, impl=impl, **kw)
    x = torch.randn(2, m, 96)
    y = layer(x)
    assert y.shape == (2, m, 40) and y.dtype == torch.float32
    assert _rel(y, layer.forward_fake(x)) <= 1e-6
    bits = 8 if cls is W8A8Linear else 4
    assert _rel(y, lin(x).detach()) <= (0.03 if bits == 8 else 0.2)  # quantisation error, sanity only


def test_paths_agree_and_dtype_follows_input(has_int_cpp):
    _need("cpp", has_int_cpp)
    lin = nn.Linear(64, 48, bias=False)
    layer = W8A8Linear.from_float(lin)
    x = torch.randn(10, 64)
    assert _rel(layer.run(x, "cpp"), layer.run(x, "torch")) <= 1e-6
    assert layer(x.to(torch.bfloat16)).dtype == torch.bfloat16


def test_folded_input_scale_is_exact_in_float():
    torch.manual_seed(0)
    lin = nn.Linear(32, 16)
    s = torch.rand(32) + 0.5
    folded = W8A8Linear.from_float(lin, input_scale=s, impl="torch")
    x = torch.randn(8, 32)
    # the folded layer expects smoothed activations x / s
    assert _rel(folded(x / s), lin(x).detach()) <= 0.03
    assert torch.allclose(il.fold_input_scale(lin.weight, s) @ (x / s).T, lin.weight @ x.T, atol=1e-5)


def _flip_bound(h: torch.Tensor, layer: W8A8Linear, margin: float = 1e-3) -> torch.Tensor:
    """Largest change of ``layer(h')`` for any ``h'`` within float noise of ``h`` (an honest tolerance).

    ``h'`` has the same per-token codes as ``h`` except where ``h / s_x`` lies within ``margin`` steps
    of a rounding tie; such a code can move by one, which moves ``y[t, o]`` by ``s_x[t]·s_w[o]·|W̃[o, k]|``.
    (Float noise of ~1e-6 relative shifts ``h / s_x`` by at most 127e-6 steps, well inside ``margin``.)"""
    s = h.abs().amax(-1, keepdim=True).clamp(min=il.EPS) / 127.0
    r = h / s
    near_tie = ((r - r.floor()) - 0.5).abs() < margin
    w_abs = layer.weight_codes().abs().to(torch.float32) * layer.weight_scale[:, None]
    return s * (near_tie.to(torch.float32) @ w_abs.t())


def test_compiled_equals_eager():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 32))
    quantize_linears(model, "w8a8", impl="torch")
    # inputs on the int8 grid of their own per-token scale (s_x = 1/64 exactly): layer 0's codes are exact
    # integers on every path, so only layer 1 can see a CPU/compiler-dependent rounding flip
    x = torch.randint(-127, 128, (16, 64), generator=torch.Generator().manual_seed(0)).float()
    x[:, 0] = 127.0
    x = x / 64
    with torch.no_grad():
        eager = model(x)
        h = model[1](model[0](x))  # layer 1's input on the eager path
        compiled = compile_int_model(model, (x,))
        out = compiled(x)
    # inductor fuses GELU and the epilogues (float rounding may differ by ulps): bound = flips + float noise
    bound = _flip_bound(h, model[2]) + 1e-5 * (1 + eager.abs())
    assert ((out - eager).abs() <= bound).all(), float(((out - eager).abs() - bound).max())


def test_quantize_linears_predicate():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 4), nn.Linear(4, 2)))
    quantize_linears(model, "w4a8", predicate=lambda name, m: name != "2.1", impl="torch")
    kinds = [type(m).__name__ for m in model.modules() if not isinstance(m, (nn.Sequential, nn.ReLU))]
    assert kinds == ["W4A8Linear", "W4A8Linear", "Linear"]


def test_memory_accounting_is_exact():
    lin = nn.Linear(100, 64)
    fp = state_bytes(lin)
    assert fp.float_weight == 100 * 64 * 4 and fp.bias == 64 * 4 and fp.total == 100 * 64 * 4 + 64 * 4
    w8 = state_bytes(W8A8Linear.from_float(lin, impl="torch"))
    assert (w8.int_weight, w8.scales, w8.bias) == (100 * 64, 64 * 4, 64 * 4)
    w4 = W4A8Linear.from_float(lin, impl="torch", cache_unpacked=True)
    w4(torch.randn(2, 100))  # fills the transient cache, which is not state
    r4 = state_bytes(w4)
    assert (r4.int_weight, r4.scales, r4.bias, r4.total) == (50 * 64, 64 * 4, 64 * 4, 50 * 64 + 2 * 64 * 4)
    assert resident_bytes() > 0


def test_state_dict_roundtrip():
    lin = nn.Linear(20, 12)
    a = W4A8Linear.from_float(lin, impl="torch", cache_unpacked=True)
    x = torch.randn(3, 20)
    ya = a(x)
    b = W4A8Linear(20, 12, impl="torch", cache_unpacked=True)
    b(x)  # cache of the zero init must be dropped on load
    b.load_state_dict(a.state_dict())
    assert torch.equal(b(x), ya)
