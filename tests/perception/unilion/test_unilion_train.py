"""UniLION training pieces: frame pairs, modality-dropout batches (deterministic, every mode drawn), one step per
mode (memory only in T modes, from the previous frame, without gradient)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from latentstack.perception.unilion import MODES, UniLION, get_preset
from latentstack.perception.unilion.train import SequenceBatches, UniTrainConfig, frame_pairs, unilion_step
from latentstack.sim import unilion_scenes as us


def test_frame_pairs_stay_inside_sequences(small_frames) -> None:
    frames, _ = small_frames
    other = [dataclasses.replace(f, seq_seed=f.seq_seed + 1) for f in frames]
    mixed = [frames[1], other[0], frames[0], other[1]]
    assert sorted(frame_pairs(mixed)) == [(1, 3), (2, 0)]


def test_batches_draw_every_mode_deterministically(small_frames) -> None:
    frames, _ = small_frames
    tcfg = UniTrainConfig(batch_size=2)
    a = SequenceBatches(tcfg, frames, np.random.default_rng(0))
    b = SequenceBatches(tcfg, frames, np.random.default_rng(0))
    modes_a = [a().mode for _ in range(60)]
    assert modes_a == [b().mode for _ in range(60)]
    counts = {m: modes_a.count(m) for m in MODES}
    assert all(c >= 5 for c in counts.values()), counts
    batch = a()
    assert [f.frame_index for f in batch.prev] == [0, 0] and [f.frame_index for f in batch.cur] == [1, 1]
    only = SequenceBatches(UniTrainConfig(modes=("LCT",), mode_probs=(1.0,)), frames, np.random.default_rng(1))
    assert {only().mode for _ in range(5)} == {"LCT"}
    with pytest.raises(ValueError, match="distribution"):
        UniTrainConfig(mode_probs=(0.5, 0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="consecutive"):
        SequenceBatches(tcfg, frames[:1], np.random.default_rng(0))


@pytest.mark.parametrize("mode", MODES)
def test_step_in_each_mode(small_frames, mode: str) -> None:
    frames, scfg = small_frames
    intr, c2e = us.camera_calibration(scfg)
    torch.manual_seed(0)
    model = UniLION(get_preset("unilion_test")).train()
    tcfg = UniTrainConfig(batch_size=1, modes=(mode,), mode_probs=(1.0,))
    batch = SequenceBatches(tcfg, frames, np.random.default_rng(0))()
    loss, parts = unilion_step(model, batch, intr, c2e, tcfg)
    assert torch.isfinite(loss) and parts["mode"] == MODES.index(mode)
    assert (parts["temporal_tokens"] > 0) == ("T" in mode)
    assert ("depth" in parts) == ("C" in mode)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}

    def trained(name: str) -> bool:
        return grads[name] is not None and bool(torch.any(grads[name] != 0))

    assert trained("temporal_fuser.weight") == ("T" in mode)
    assert trained("camera.depthnet.1.weight") == ("C" in mode)
    assert trained("vfe.pfn.0.linear.weight")
