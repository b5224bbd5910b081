"""Window keys (spec §4, test 8) and equal-size grouping flat2win / win2flat (test 9)."""
from __future__ import annotations

import pytest
import torch

from latentstack.perception.lion.window import flat2win_win2flat, group_mapping, window_keys


def _ref_keys(c: list[int], shape: tuple[int, int, int], win: tuple[int, int, int], shift: bool) -> tuple[int, int]:
    b, z, y, x = c
    wx, wy, wz = win
    sx, sy, sz = (wx // 2, wy // 2, wz // 2) if shift else (0, 0, 0)
    x, y, z = x + sx, y + sy, z + sz
    nwx, nwy, nwz = (-(-shape[0] // wx) + 1, -(-shape[1] // wy) + 1, -(-shape[2] // wz) + 1)
    win_x = b * nwx * nwy * nwz + (x // wx) * nwy * nwz + (y // wy) * nwz + z // wz
    win_y = b * nwx * nwy * nwz + (y // wy) * nwx * nwz + (x // wx) * nwz + z // wz
    key_x = win_x * wx * wy * wz + (x % wx) * wy * wz + (y % wy) * wz + z % wz
    key_y = win_y * wx * wy * wz + (y % wy) * wx * wz + (x % wx) * wz + z % wz
    return key_x, key_y


def _coords(n: int, shape: tuple[int, int, int], batch: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(0, batch, (n,), generator=g), torch.randint(0, shape[2], (n,), generator=g),
                        torch.randint(0, shape[1], (n,), generator=g), torch.randint(0, shape[0], (n,), generator=g)], 1)


@pytest.mark.parametrize("shift", [False, True])
def test_window_keys_match_the_spec_formula(shift: bool) -> None:
    shape, win = (40, 30, 8), (13, 13, 4)
    c = _coords(300, shape)
    kx, ky = window_keys(c, shape, win, shift)
    assert kx.dtype == torch.int64
    for i in range(len(c)):
        rx, ry = _ref_keys(c[i].tolist(), shape, win, shift)
        assert (int(kx[i]), int(ky[i])) == (rx, ry)


def test_orders_are_x_then_y_major_and_shift_moves_windows_by_half() -> None:
    shape, win = (26, 26, 1), (13, 13, 1)
    # two voxels in the same unshifted window, on either side of the shifted boundary at x = 6.5
    c = torch.tensor([[0, 0, 0, 5], [0, 0, 0, 7]])
    kx0, _ = window_keys(c, shape, win, False)
    kx1, _ = window_keys(c, shape, win, True)
    vol = 13 * 13 * 1
    assert int(kx0[0]) // vol == int(kx0[1]) // vol
    assert int(kx1[0]) // vol != int(kx1[1]) // vol
    # X-order: inside a window x varies slowest (x-major), Y-order: y slowest
    c = torch.tensor([[0, 0, 0, 1], [0, 0, 1, 0]])
    kx, ky = window_keys(c, shape, win, False)
    assert kx[0] > kx[1] and ky[0] < ky[1]


@pytest.mark.parametrize("k", [4, 16])
def test_grouping_round_trip_and_padding(k: int) -> None:
    for n in (1, k - 1, k, k + 1, 3 * k + 5):
        counts = torch.tensor([n, n + 2])
        f2w, w2f = flat2win_win2flat(counts, k)
        assert len(f2w) % k == 0 and len(w2f) == int(counts.sum())
        groups = f2w.view(-1, k)
        sample = (groups >= n).long()  # rows < n belong to sample 0
        assert (sample.min(1).values == sample.max(1).values).all(), "a group mixes samples"
        # every real voxel appears, in order, at its win2flat slot
        torch.testing.assert_close(f2w[w2f], torch.arange(int(counts.sum())))
        # padding copies the same slots of the previous group (or cycles in a single group)
        for b, nb in enumerate(counts.tolist()):
            start = 0 if b == 0 else -(-n // k) * k
            padded = -(-nb // k) * k
            seg = f2w[start:start + padded] - (0 if b == 0 else n)
            r = nb % k
            if r and padded > k:
                torch.testing.assert_close(seg[padded - k + r:], seg[padded - 2 * k + r:padded - k])
            elif r:
                torch.testing.assert_close(seg, torch.arange(padded) % nb)


def test_gather_scatter_is_identity() -> None:
    shape = (30, 30, 4)
    c = torch.unique(_coords(500, shape), dim=0)
    f = torch.randn(len(c), 5)
    for shift in (False, True):
        maps = group_mapping(c, 2, shape, (7, 7, 4), 16, shift)
        for m in maps.values():
            g = m.gather(f)
            assert g.shape[1:] == (16, 5)
            torch.testing.assert_close(m.scatter(g, len(c)), f)
            # groups never straddle samples
            gb = c[:, 0][m.order][m.flat2win].view(-1, 16)
            assert (gb.min(1).values == gb.max(1).values).all()


def test_bad_group_size() -> None:
    with pytest.raises(ValueError):
        flat2win_win2flat(torch.tensor([3]), 0)
