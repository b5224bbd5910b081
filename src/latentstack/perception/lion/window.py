"""Window keys and FlatFormer-style equal-size grouping (LION ``FlattenedWindowMapping`` 'v2', spec §4).

All integer arithmetic is int64. ``coords`` rows are ``(b, z, y, x)``; ``sparse_shape`` is
``(X, Y, Z)`` and ``window`` is ``(wx, wy, wz)`` as in LION's configs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["GroupMapping", "flat2win_win2flat", "group_mapping", "window_keys"]


def window_keys(coords: torch.Tensor, sparse_shape: tuple[int, int, int], window: tuple[int, int, int],
                shift: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(key_x, key_y)``: X-order (window-major x, then y; inside: x, y, z) and Y-order keys."""
    wx, wy, wz = window
    sx, sy, sz = (wx // 2, wy // 2, wz // 2) if shift else (0, 0, 0)
    b = coords[:, 0]
    x = coords[:, 3] + sx
    y = coords[:, 2] + sy
    z = coords[:, 1] + sz
    nwx = -(-sparse_shape[0] // wx) + 1  # +1 absorbs the shift
    nwy = -(-sparse_shape[1] // wy) + 1
    nwz = -(-sparse_shape[2] // wz) + 1
    wxi, wyi, wzi = x // wx, y // wy, z // wz
    cx, cy, cz = x % wx, y % wy, z % wz
    vol = wx * wy * wz
    win_x = b * nwx * nwy * nwz + wxi * nwy * nwz + wyi * nwz + wzi
    key_x = win_x * vol + cx * wy * wz + cy * wz + cz
    win_y = b * nwx * nwy * nwz + wyi * nwx * nwz + wxi * nwz + wzi
    key_y = win_y * vol + cy * wx * wz + cx * wz + cz
    return key_x, key_y


def flat2win_win2flat(batch_counts: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Index maps for equal-size groups over a batch-sorted sequence, on ``batch_counts``' device.

    ``batch_counts[b]`` = voxels of sample b (they are contiguous, sample-major). Each sample is
    padded to ``ceil(n_b/K)·K``; with ``r = n_b mod K ≠ 0`` the padding slots ``r..K−1`` of the last
    group copy the same slots of the previous group, and a single-group sample repeats its own
    voxels cyclically. ``flat2win`` (length Σ padded) gathers groups from the sequence;
    ``win2flat`` (length Σ n_b) picks the real positions back.

    Vectorised (no per-sample Python loop, no ``.tolist()``); the only host sync is the data-dependent
    output length inside ``repeat_interleave``, as for ``torch.unique`` in voxelization.
    """
    k = int(group_size)
    if k < 1:
        raise ValueError(f"group size must be >= 1, got {k}")
    counts = batch_counts.to(torch.int64)
    dev = counts.device
    padded = (counts + (k - 1)) // k * k  # 0 for an empty sample
    start = torch.cumsum(counts, 0) - counts  # first row of each sample in the sequence
    pstart = torch.cumsum(padded, 0) - padded  # first slot of each sample in the padded layout
    samples = torch.arange(len(counts), device=dev)
    # flat2win: slot j of sample s reads row j, except the padding of the last group
    sid = torch.repeat_interleave(samples, padded)
    j = torch.arange(len(sid), device=dev) - pstart[sid]
    n, p = counts[sid], padded[sid]
    r = n % k
    idx = torch.where((r != 0) & (p > k) & (j >= p - k + r), j - k, j)  # copy the previous group's slot
    idx = torch.where((r != 0) & (p == k), j % n.clamp_min(1), idx)  # one short group: repeat cyclically
    f2w = idx + start[sid]
    # win2flat: row i of sample s sits at slot pstart[s] + (i − start[s])
    sid_rows = torch.repeat_interleave(samples, counts)
    w2f = torch.arange(len(sid_rows), device=dev) - start[sid_rows] + pstart[sid_rows]
    return f2w, w2f


@dataclass
class GroupMapping:
    order: torch.Tensor  # voxel rows in key order
    flat2win: torch.Tensor
    win2flat: torch.Tensor
    group_size: int

    def gather(self, feats: torch.Tensor) -> torch.Tensor:
        """(N, C) → (nG, K, C) groups."""
        return feats[self.order][self.flat2win].view(-1, self.group_size, feats.shape[1])

    def scatter(self, groups: torch.Tensor, num_voxels: int) -> torch.Tensor:
        """(nG, K, C) → (N, C) back in the original row order (padding duplicates dropped)."""
        flat = groups.reshape(-1, groups.shape[-1])[self.win2flat]
        out = flat.new_empty(num_voxels, flat.shape[1])
        out[self.order] = flat
        return out


def group_mapping(coords: torch.Tensor, batch_size: int, sparse_shape: tuple[int, int, int],
                  window: tuple[int, int, int], group_size: int, shift: bool) -> dict[str, GroupMapping]:
    """Mappings for the X- and Y-ordered groupings of one LION layer."""
    key_x, key_y = window_keys(coords, sparse_shape, window, shift)
    counts = torch.bincount(coords[:, 0], minlength=batch_size)
    f2w, w2f = flat2win_win2flat(counts, group_size)
    # keys start with the batch index, so argsort keeps samples contiguous and in batch order
    return {
        "x": GroupMapping(torch.argsort(key_x, stable=True), f2w, w2f, group_size),
        "y": GroupMapping(torch.argsort(key_y, stable=True), f2w, w2f, group_size),
    }
