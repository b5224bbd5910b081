"""Correlation pyramid taps (spec §13.1) and convex upsampling (§13.2)."""
from __future__ import annotations

import torch

from latentstack.perception.stereo.corr import AltCorrBlock1D, CorrBlock1D
from latentstack.perception.stereo.upsample import convex_upsample


def _fmaps(seed=0, b=2, d=8, h=3, w=24):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, h, w, generator=g, dtype=torch.float64), torch.randn(b, d, h, w, generator=g, dtype=torch.float64)


def test_corr_has_36_channels_and_centre_tap_is_the_scaled_dot_product():
    f1, f2 = _fmaps()
    corr = CorrBlock1D(f1, f2, num_levels=4, radius=4)
    b, d, h, w = f1.shape
    disp = 3
    coords = torch.arange(w, dtype=torch.float64).view(1, 1, 1, w).expand(b, 1, h, w) - disp
    out = corr(coords)
    assert out.shape == (b, 36, h, w)
    for x in range(disp, w):
        expect = (f1[:, :, :, x] * f2[:, :, :, x - disp]).sum(1) / d ** 0.5
        torch.testing.assert_close(out[:, 4, :, x], expect)  # level 0, δ = 0
        torch.testing.assert_close(out[:, 5, :, x], (f1[:, :, :, x] * f2[:, :, :, x - disp + 1]).sum(1) / d ** 0.5)


def test_out_of_range_taps_are_exactly_zero():
    f1, f2 = _fmaps()
    b, _, h, w = f1.shape
    corr = CorrBlock1D(f1, f2)
    out = corr(torch.full((b, 1, h, w), -100.0, dtype=torch.float64))
    assert torch.count_nonzero(out) == 0
    out = corr(torch.full((b, 1, h, w), 1000.0, dtype=torch.float64))
    assert torch.count_nonzero(out) == 0


def test_alt_corr_equals_materialised_corr():
    f1, f2 = _fmaps(seed=3)
    b, _, h, w = f1.shape
    g = torch.Generator().manual_seed(1)
    coords = torch.arange(w, dtype=torch.float64).view(1, 1, 1, w) - 20 * torch.rand(b, 1, h, w, generator=g, dtype=torch.float64)
    reg = CorrBlock1D(f1, f2)(coords)
    alt = AltCorrBlock1D(f1, f2)(coords)
    torch.testing.assert_close(alt, reg, atol=1e-5, rtol=1e-5)


def test_convex_upsampling_of_a_constant_field_scales_it_in_the_interior():
    f = 4
    flow = torch.full((1, 2, 5, 6), 1.5)
    mask = torch.randn(1, 9 * f * f, 5, 6, generator=torch.Generator().manual_seed(0))
    up = convex_upsample(flow, mask, f)
    assert up.shape == (1, 2, 20, 24)
    torch.testing.assert_close(up[:, :, f:-f, f:-f], torch.full_like(up[:, :, f:-f, f:-f], f * 1.5))


def test_convex_upsampling_with_all_weight_on_the_centre_is_nearest_neighbour():
    f = 4
    flow = torch.randn(2, 2, 3, 5, generator=torch.Generator().manual_seed(2))
    mask = torch.full((2, 9, f, f, 3, 5), -1e4)
    mask[:, 4] = 1e4  # centre neighbour
    up = convex_upsample(flow, mask.view(2, 9 * f * f, 3, 5), f)
    nn = torch.repeat_interleave(torch.repeat_interleave(f * flow, f, dim=2), f, dim=3)
    torch.testing.assert_close(up, nn)
