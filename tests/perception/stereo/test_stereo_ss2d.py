"""Cross-scan/merge identities (§13.3), receptive fields after one update (§13.4), shared scan use."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from latentstack.perception.stereo.update import SS2D, ConvGRU, cross_merge, cross_scan


@pytest.mark.parametrize("mode,k", [("cross2d", 4), ("bidi", 2), ("unidi", 1)])
def test_merge_of_scan_is_k_times_x(mode, k):
    x = torch.randn(2, 3, 5, 7)
    xs = cross_scan(x, mode)
    assert xs.shape == (2, k, 3, 35)
    torch.testing.assert_close(cross_merge(xs, 5, 7, mode), k * x)


def test_transposing_h_and_w_swaps_direction_pairs():
    x = torch.randn(1, 2, 4, 6)
    a = cross_scan(x)
    b = cross_scan(x.transpose(2, 3).contiguous())
    for i, j in ((0, 1), (1, 0), (2, 3), (3, 2)):
        torch.testing.assert_close(a[:, i], b[:, j])


def _reach(module: nn.Module, c: int = 8, h: int = 32, w: int = 40) -> torch.Tensor:
    torch.manual_seed(0)
    x = torch.randn(1, c, h, w, requires_grad=True)
    y = module(x)
    y[0, :, h // 2, w // 2].sum().backward()
    return (x.grad.abs().sum(1)[0] > 0)


def test_one_cross2d_ss2d_call_reaches_every_pixel():
    reach = _reach(SS2D(8, d_state=4, scan_mode="cross2d"))
    assert reach.float().mean().item() == 1.0
    conv = _reach(nn.Conv2d(8, 8, 3, padding=1))
    assert conv.sum().item() == 9  # 9 / 1280 = 0.7 %
    gru_cell = ConvGRU(8, 8)
    gru = _reach(lambda x: gru_cell(x, x))
    assert gru.sum().item() <= 25  # one 3×3 GRU step: at most 5×5


def test_unidi_reaches_only_earlier_pixels_in_raster_order():
    h, w = 32, 40
    reach = _reach(SS2D(8, d_state=4, scan_mode="unidi"), h=h, w=w)
    flat = reach.flatten()
    centre = (h // 2) * w + w // 2
    halo = w + 1  # the 3×3 depthwise conv before the scan reaches one row/column ahead
    assert flat[: centre - w - 1].all()  # everything before (beyond the conv halo) is reached
    assert not flat[centre + halo + 1:].any()  # nothing after the causal horizon
    bidi = _reach(SS2D(8, d_state=4, scan_mode="bidi"), h=h, w=w)
    assert bidi.all()  # forward + reverse raster scans cover the whole map


def test_ss2d_uses_the_shared_selective_scan(monkeypatch):
    import latentstack.perception.stereo.update as upd

    calls = []
    real = upd.selective_scan

    def spy(u, delta, A, B, C, *a, **kw):
        calls.append((tuple(u.shape), tuple(B.shape)))
        return real(u, delta, A, B, C, *a, **kw)

    monkeypatch.setattr(upd, "selective_scan", spy)
    SS2D(8, d_state=4)(torch.randn(2, 8, 4, 5))
    assert calls == [((2, 32, 20), (2, 4, 4, 20))]  # one call, G = 4 directions, Dch = 4·d_inner


def test_ss2d_rejects_unknown_scan_mode():
    with pytest.raises(ValueError, match="scan mode"):
        SS2D(8, scan_mode="zigzag")
