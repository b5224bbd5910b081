"""UniLION training pieces: modality-dropout batches over sequence frame pairs and the per-step loss.

One model serves L / LT / LC / LCT (configuration docstring): every step draws its mode from ``modes`` with
``mode_probs`` and a batch of (previous, current) frame pairs of the same sequences. In a temporal mode the
previous frames run first **without gradient**, in the same mode minus T, to fill the memory (UniLION's
``store_temporal``: the memory is detached); the loss is taken on the current frames only. No augmentation yet:
a camera-consistent one (flip / rotation applied to points, boxes, BEV labels, ego poses *and* extrinsics) is
part of the training recipe still to come.

Frames are duck-typed (attributes of :class:`latentstack.sim.unilion_scenes.UniFrame`: ``points``, ``images``,
``boxes``, ``box_class``, ``box_num_points``, ``bev_semantic``, ``occupancy``, ``ego_pose``, ``time_s``,
``seq_seed``, ``frame_index``), so this module needs no simulator.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .configuration_unilion import MODES, UniLIONConfig
from .modeling_unilion import UniLION, build_unilion_targets, unilion_loss

__all__ = ["SequenceBatches", "UniTrainConfig", "frame_pairs", "unilion_step"]


@dataclass(frozen=True)
class UniTrainConfig:
    batch_size: int = 2
    seed: int = 0
    modes: tuple[str, ...] = MODES
    mode_probs: tuple[float, ...] = (0.25, 0.25, 0.25, 0.25)
    min_train_points: int = 1  # boxes with fewer LiDAR points get no heatmap peak (as LION)

    def __post_init__(self) -> None:
        if set(self.modes) - set(MODES) or len(self.modes) != len(self.mode_probs):
            raise ValueError(f"modes must come from {MODES}, one probability each")
        if abs(sum(self.mode_probs) - 1.0) > 1e-9 or min(self.mode_probs) < 0:
            raise ValueError(f"mode_probs must be a distribution, got {self.mode_probs}")


def frame_pairs(frames: Sequence[Any]) -> list[tuple[int, int]]:
    """(previous, current) indices of consecutive frames of the same sequence."""
    where = {(f.seq_seed, f.frame_index): i for i, f in enumerate(frames)}
    return [(where[(f.seq_seed, f.frame_index - 1)], i) for i, f in enumerate(frames)
            if (f.seq_seed, f.frame_index - 1) in where]


@dataclass
class Batch:
    mode: str
    prev: list[Any]
    cur: list[Any]


class SequenceBatches:
    """Epoch-shuffled frame pairs and one mode per batch, all drawn from one numpy generator (resumable:
    ``state_dict`` holds the order and position; the caller saves the generator)."""

    def __init__(self, tcfg: UniTrainConfig, frames: Sequence[Any], rng: np.random.Generator) -> None:
        self.tcfg, self.frames, self.rng = tcfg, frames, rng
        self.pairs = frame_pairs(frames)
        if not self.pairs:
            raise ValueError("no consecutive frame pairs: sequences need at least 2 frames")
        self.order = rng.permutation(len(self.pairs))
        self.pos = 0

    def state_dict(self) -> dict[str, Any]:
        return {"order": [int(i) for i in self.order], "pos": self.pos}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.order, self.pos = np.asarray(d["order"], dtype=np.int64), int(d["pos"])

    def __call__(self) -> Batch:
        mode = self.tcfg.modes[int(self.rng.choice(len(self.tcfg.modes), p=self.tcfg.mode_probs))]
        idx = []
        for _ in range(self.tcfg.batch_size):
            if self.pos == len(self.order):
                self.order, self.pos = self.rng.permutation(len(self.pairs)), 0
            idx.append(self.pairs[int(self.order[self.pos])])
            self.pos += 1
        return Batch(mode, [self.frames[p] for p, _ in idx], [self.frames[c] for _, c in idx])


def _inputs(model: UniLION, frames: list[Any], intrinsics: np.ndarray, cam2ego: np.ndarray, camera: bool
            ) -> dict[str, Any]:
    kw: dict[str, Any] = {"ego_pose": [f.ego_pose for f in frames], "time_s": [f.time_s for f in frames],
                          "scene_id": [f.seq_seed for f in frames]}
    if camera:
        kw.update(images=[f.images for f in frames], intrinsics=[intrinsics] * len(frames),
                  cam2ego=[cam2ego] * len(frames))
    return model.processor([f.points for f in frames], **kw)


def unilion_step(model: UniLION, batch: Batch, intrinsics: np.ndarray, cam2ego: np.ndarray,
                 tcfg: UniTrainConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of one batch in its mode (memory from the previous frames, without gradient, when the mode has T)."""
    cfg: UniLIONConfig = model.config
    camera = "C" in batch.mode
    memory = None
    if "T" in batch.mode:
        with torch.no_grad():
            _, memory = model(mode=batch.mode.replace("T", ""),
                              **_inputs(model, batch.prev, intrinsics, cam2ego, camera))
    out, _ = model(mode=batch.mode, memory=memory, **_inputs(model, batch.cur, intrinsics, cam2ego, camera))
    keep = [f.box_num_points >= tcfg.min_train_points for f in batch.cur]
    tgt = build_unilion_targets(cfg, [f.boxes[k] for f, k in zip(batch.cur, keep, strict=True)],
                                [f.box_class[k] for f, k in zip(batch.cur, keep, strict=True)],
                                [f.bev_semantic for f in batch.cur], [f.occupancy for f in batch.cur])
    dev = out["hm"].device
    tgt = {k: v.to(dev, non_blocking=True) for k, v in tgt.items()}
    loss, parts = unilion_loss(cfg, out, tgt)
    parts["mode"] = float(MODES.index(batch.mode))
    parts["temporal_tokens"] = float(out["num_tokens"][2])
    return loss, parts
