from __future__ import annotations

import pytest
import torch
from torch import nn

from latentstack.quant.apply import FakeQuantLinear
from latentstack.quant.quantizers import (
    MSE_GRID,
    PercentileCalibrator,
    QuantConfig,
    block_rotations,
    fake_quant_per_token,
    fake_quant_per_token_asym,
    fake_quant_sym,
    get_preset,
    quantize_weight,
    weight_scales_maxabs,
    weight_scales_mse,
    zigzag_permutation,
)

G = torch.Generator().manual_seed(0)


@pytest.mark.parametrize("bits", [4, 8])
def test_fake_quant_idempotent_and_half_step(bits):
    x = torch.randn(64, 96, generator=G)
    s = x.abs().amax(1, keepdim=True) / (2 ** (bits - 1) - 1)
    q = fake_quant_sym(x, s, bits)
    assert torch.equal(fake_quant_sym(q, s, bits), q)
    assert ((q - x).abs() <= s / 2 + 1e-6).all()


@pytest.mark.parametrize("bits,lo,hi", [(4, -8, 7), (8, -128, 127)])
@pytest.mark.parametrize("method", ["maxabs", "mse"])
def test_weight_codes_range(bits, lo, hi, method):
    q, s = quantize_weight(torch.randn(33, 70, generator=G) * 3, bits, method)
    assert q.dtype == torch.int8 and int(q.min()) >= lo and int(q.max()) <= hi
    assert s.shape == (33,)


@pytest.mark.parametrize("bits", [4, 8])
def test_mse_scales_beat_maxabs(bits):
    w = torch.randn(40, 128, generator=G)
    w[:, 0] *= 10  # outliers make a clipped scale worthwhile
    base, mse = weight_scales_maxabs(w, bits), weight_scales_mse(w, bits)
    ratio = mse / base
    assert all(any(abs(r - g) < 1e-5 for g in MSE_GRID) for r in ratio.tolist())
    err = lambda s: (fake_quant_sym(w, s[:, None], bits) - w).pow(2).sum(1)
    assert (err(mse) <= err(base) + 1e-6).all()


def test_per_token_and_asym_bounds():
    x = torch.randn(16, 64, generator=G) + 0.5
    s = x.abs().amax(-1, keepdim=True) / 127
    assert ((fake_quant_per_token(x) - x).abs() <= s / 2 + 1e-6).all()
    delta = (x.amax(-1, keepdim=True).clamp(min=0) - x.amin(-1, keepdim=True).clamp(max=0)) / 255
    xa = fake_quant_per_token_asym(x)
    assert ((xa - x).abs() <= delta / 2 + 1e-5).all()
    assert torch.allclose(fake_quant_per_token_asym(xa), xa, atol=1e-6)


def test_percentile_calibrator_modes():
    xs = [torch.randn(200, 8, generator=G) * (i + 1) for i in range(6)]
    rm = PercentileCalibrator(8, calib_batches=3, mode="running_max")
    for x in xs:
        rm.observe(x)
    assert rm.calls == 3 and rm.frozen
    expect = torch.stack([torch.quantile(x.abs(), 0.999, dim=0) for x in xs[:3]]).amax(0)
    assert torch.allclose(rm.scale, expect / 127)
    fc = PercentileCalibrator(8, calib_batches=32, mode="first_call")
    for x in xs:
        fc.observe(x)
    assert fc.calls == 1 and torch.allclose(fc.scale, torch.quantile(xs[0].abs(), 0.999, dim=0) / 127)


def test_rotations_orthogonal_and_permutation():
    w = torch.randn(160, 130, generator=G)
    r_in, r_out = block_rotations(w, 64)
    assert [r.shape[0] for r in r_in] == [64, 64, 2] and [r.shape[0] for r in r_out] == [64, 64, 32]
    for r in r_in + r_out:
        assert torch.allclose(r.double() @ r.double().t(), torch.eye(r.shape[0], dtype=torch.float64), atol=1e-6)
    p = zigzag_permutation(w, 64)
    assert sorted(p.tolist()) == list(range(130))


@pytest.mark.parametrize("preset", ["code_duquant_w4a8", "paper_duquant_w4a8"])
@pytest.mark.parametrize("shape", [(128, 512), (130, 70)])
def test_duquant_invariance_without_quantization(preset, shape):
    lin = nn.Linear(*shape)
    cfg = get_preset(preset, w_bits=16, a_bits=16, permute=True)
    m = FakeQuantLinear(lin, cfg)
    x = torch.randn(5, 7, shape[0], generator=G)
    ref = lin(x).detach()
    assert ((m(x) - ref).norm() / ref.norm()) < 1e-5


def test_int_presets_validated():
    with pytest.raises(ValueError, match="int path"):
        QuantConfig("x", act="per_channel_static", execution="int")
    with pytest.raises(ValueError, match="int path"):
        QuantConfig("x", act="per_token_asym", execution="int")  # zero-point: fake only
    with pytest.raises(ValueError, match="int path"):
        QuantConfig("x", w_bits=3, execution="int")
    assert QuantConfig("x", rotate=True, permute=True, execution="int").rotate  # float transforms around int GEMM
    with pytest.raises(KeyError):
        get_preset("w3a3")
    assert get_preset("code_duquant_w4a8").calib == "first_call"
    assert get_preset("code_duquant_w4a8").needs_calibration()
