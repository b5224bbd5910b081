"""UniLION training pieces: modality-dropout batches over sequence frame pairs and the per-step loss.

One model serves L / LT / LC / LCT (configuration docstring): every step draws its mode from ``modes`` with
``mode_probs`` and a batch of (previous, current) frame pairs of the same sequences. In a temporal mode the
previous frames run first **without gradient**, in the same mode minus T, to fill the memory (UniLION's
``store_temporal``: the memory is detached); the loss is taken on the current frames only.

Recipe (:func:`train_unilion`; LION's CPU recipe, :mod:`latentstack.perception.lion.train`): AdamW, one-cycle LR
(max 3e-3, pct_start 0.4, div_factor 10, momentum 0.95→0.85), weight decay 0.01, grad-norm clip 10. Augmentation
is **camera-consistent**, as BEVFusion / UniLION apply a BEV transform ``A`` to the LiDAR side and fold it into the
camera geometry instead of warping images: a random flip about the x axis (y → −y) applied to points, boxes, the
BEV label grids (row flip; the grids are symmetric in y), ``cam2ego ← A·cam2ego`` and ``ego_pose ← ego_pose·A⁻¹``
— the same ``A`` for both frames of a pair, so the ego-motion warp between them is the flipped motion. Images are
untouched: lifting a pixel through the flipped extrinsics lands where the flipped LiDAR put that surface. No
rotation / scaling: the label grids (drivable area, occupancy) cannot be regenerated exactly after a rotation, and
resampling them would put wrong labels where the rotated grid leaves the labelled area.

Frames are duck-typed (attributes of :class:`latentstack.sim.unilion_scenes.UniFrame`: ``points``, ``images``,
``boxes``, ``box_class``, ``box_num_points``, ``bev_semantic``, ``occupancy``, ``ego_pose``, ``time_s``,
``seq_seed``, ``frame_index``), so this module needs no simulator.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .configuration_unilion import MODES, UniLIONConfig
from .modeling_unilion import UniLION, build_unilion_targets, unilion_loss

__all__ = ["SequenceBatches", "UniTrainConfig", "flip_frame", "frame_inputs", "frame_pairs", "predict_sequences",
           "train_unilion", "unilion_step"]


@dataclass(frozen=True)
class UniTrainConfig:
    batch_size: int = 2
    seed: int = 0
    modes: tuple[str, ...] = MODES
    mode_probs: tuple[float, ...] = (0.25, 0.25, 0.25, 0.25)
    min_train_points: int = 1  # boxes with fewer LiDAR points get no heatmap peak (as LION)
    iterations: int = 600
    lr: float = 3e-3
    weight_decay: float = 0.01
    pct_start: float = 0.4
    div_factor: float = 10.0
    grad_clip: float = 10.0
    augment: bool = True  # the camera-consistent flip of the module docstring

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
    flip: list[bool]  # per pair: the camera-consistent y flip (module docstring)


_FLIP_Y = np.diag([1.0, -1.0, 1.0, 1.0])


def flip_frame(frame: Any) -> Any:
    """A copy of ``frame`` mirrored about the ego x axis (y → −y): points, boxes (y, yaw), BEV grids (rows),
    ``ego_pose ← ego_pose·A⁻¹``. The matching camera side is ``cam2ego ← A·cam2ego`` (see :func:`unilion_step`)."""
    p, b = frame.points.copy(), frame.boxes.copy()
    p[:, 1] *= -1
    b[:, 1] *= -1
    b[:, 6] *= -1
    return dataclasses.replace(frame, points=p, boxes=b, bev_semantic=frame.bev_semantic[:, ::-1].copy(),
                               occupancy=frame.occupancy[:, ::-1].copy(), ego_pose=frame.ego_pose @ _FLIP_Y)


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
        flip = [bool(self.rng.random() < 0.5) if self.tcfg.augment else False for _ in idx]
        return Batch(mode, [self.frames[p] for p, _ in idx], [self.frames[c] for _, c in idx], flip)


def frame_inputs(model: UniLION, frames: Sequence[Any], intrinsics: np.ndarray, cam2ego: Sequence[np.ndarray],
                 camera: bool) -> dict[str, Any]:
    """The model's keyword inputs for a batch of frames (``cam2ego`` per frame; memory bookkeeping always)."""
    kw: dict[str, Any] = {"ego_pose": [f.ego_pose for f in frames], "time_s": [f.time_s for f in frames],
                          "scene_id": [f.seq_seed for f in frames]}
    if camera:
        kw.update(images=[f.images for f in frames], intrinsics=[intrinsics] * len(frames), cam2ego=list(cam2ego))
    return model.processor([f.points for f in frames], **kw)


def unilion_step(model: UniLION, batch: Batch, intrinsics: np.ndarray, cam2ego: np.ndarray,
                 tcfg: UniTrainConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of one batch in its mode (memory from the previous frames, without gradient, when the mode has T)."""
    cfg: UniLIONConfig = model.config
    camera = "C" in batch.mode
    flips = batch.flip
    prev = [flip_frame(f) if fl else f for f, fl in zip(batch.prev, flips, strict=True)]
    cur = [flip_frame(f) if fl else f for f, fl in zip(batch.cur, flips, strict=True)]
    c2e = [_FLIP_Y @ cam2ego if fl else cam2ego for fl in flips]
    memory = None
    if "T" in batch.mode:
        with torch.no_grad():
            _, memory = model(mode=batch.mode.replace("T", ""), **frame_inputs(model, prev, intrinsics, c2e, camera))
    out, _ = model(mode=batch.mode, memory=memory, **frame_inputs(model, cur, intrinsics, c2e, camera))
    keep = [f.box_num_points >= tcfg.min_train_points for f in cur]
    tgt = build_unilion_targets(cfg, [f.boxes[k] for f, k in zip(cur, keep, strict=True)],
                                [f.box_class[k] for f, k in zip(cur, keep, strict=True)],
                                [f.bev_semantic for f in cur], [f.occupancy for f in cur])
    dev = out["hm"].device
    tgt = {k: v.to(dev, non_blocking=True) for k, v in tgt.items()}
    loss, parts = unilion_loss(cfg, out, tgt)
    parts["mode"] = float(MODES.index(batch.mode))
    parts["temporal_tokens"] = float(out["num_tokens"][2])
    return loss, parts


def train_unilion(cfg: UniLIONConfig, tcfg: UniTrainConfig, frames: Sequence[Any], intrinsics: np.ndarray,
                  cam2ego: np.ndarray, out_dir: str | Path | None, progress: bool = True, *,
                  checkpoint_every: int = 0, resume: bool = False, device: str = "cpu",
                  extra: dict[str, Any] | None = None) -> tuple[UniLION, dict[str, Any]]:
    """Train one UniLION from scratch on ``frames`` (sequences; pairs inside them) with modality dropout over
    ``tcfg.modes``; writes the artifact (``save_unilion``), ``train_log.json`` and ``train_loss.png`` under
    ``out_dir``. The loop is :func:`latentstack.training.train_supervised` (resumable)."""
    from latentstack.training import train_supervised

    from .modeling_unilion import save_unilion

    torch.manual_seed(tcfg.seed)
    rng = np.random.default_rng(tcfg.seed)
    model = UniLION(cfg)
    model.train()
    model.to(device)  # before the optimizer, so its state lives beside the parameters
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay, betas=(0.95, 0.99))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=tcfg.lr, total_steps=tcfg.iterations,
                                                pct_start=tcfg.pct_start, div_factor=tcfg.div_factor,
                                                base_momentum=0.85, max_momentum=0.95)
    batches = SequenceBatches(tcfg, frames, rng)

    def step_fn(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        return unilion_step(model, batches(), intrinsics, cam2ego, tcfg)

    result = train_supervised(
        model, step_fn, opt, steps=tcfg.iterations, scheduler=sched, grad_clip=tcfg.grad_clip,
        state={"rng": rng, "batches": batches}, out_dir=out_dir, resume=resume, checkpoint_every=checkpoint_every,
        progress=progress, plot_keys=("loss", "det", "seg", "occ", "lr"), plot_name="train_loss.png",
        desc=f"train {cfg.name} ({'/'.join(tcfg.modes)})", check_finite=True,
    )
    log = result.history
    train_cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(tcfg).items()}
    summary = {"preset": cfg.name, "train": train_cfg, "device": str(device), "num_train_frames": len(frames),
               "num_train_sequences": len({f.seq_seed for f in frames}),
               "wall_s": float(log[-1]["elapsed_s"]) if log else 0.0,
               "final_loss_avg50": float(np.mean([r["loss"] for r in log[-50:]])) if log else float("nan"),
               **(extra or {})}
    if out_dir is not None:
        save_unilion(model, out_dir, extra={"train": summary},
                     files={"train_log.json": json.dumps({"summary": summary, "log": log}) + "\n"})
    model.eval()
    return model, summary


def _sequences(frames: Sequence[Any]) -> list[list[int]]:
    """Indices of ``frames`` grouped by sequence, each in frame order (sequences in order of first appearance)."""
    seqs: dict[int, list[int]] = {}
    for i, f in enumerate(frames):
        seqs.setdefault(int(f.seq_seed), []).append(i)
    return [sorted(v, key=lambda i: frames[i].frame_index) for v in seqs.values()]


@torch.no_grad()
def predict_sequences(model: UniLION, frames: Sequence[Any], mode: str, intrinsics: np.ndarray,
                      cam2ego: np.ndarray, batch_size: int = 4, progress: bool = True) -> list[dict[str, np.ndarray]]:
    """Per frame (in ``frames``' order) detections + ``seg`` / ``occ`` probabilities in ``mode``.

    Sequences run frame by frame in time order, ``batch_size`` sequences side by side; in a temporal mode the
    memory of frame t − 1 (from the same mode, as at deployment) feeds frame t, and the first frame has none."""
    from tqdm import tqdm

    model.eval()
    camera, temporal = "C" in mode, "T" in mode
    out: list[dict[str, np.ndarray] | None] = [None] * len(frames)
    seqs = _sequences(frames)
    by_len: dict[int, list[list[int]]] = {}
    for s in seqs:
        by_len.setdefault(len(s), []).append(s)
    chunks = [g[i:i + batch_size] for g in by_len.values() for i in range(0, len(g), batch_size)]
    bar = tqdm(total=len(frames), desc=f"{model.config.name} {mode}", disable=not progress)
    for chunk in chunks:
        memory = None
        for t in range(len(chunk[0])):
            idx = [s[t] for s in chunk]
            batch = [frames[i] for i in idx]
            res, new_memory = model(mode=mode, memory=memory,
                                    **frame_inputs(model, batch, intrinsics, [cam2ego] * len(batch), camera))
            memory = new_memory if temporal else None
            for i, d in zip(idx, model.processor.postprocess(res), strict=True):
                out[i] = d
            bar.update(len(idx))
    bar.close()
    missing = [i for i, d in enumerate(out) if d is None]
    if missing:  # a frame whose sequence had frames of other lengths in a chunk cannot be skipped silently
        raise RuntimeError(f"no prediction for frames {missing[:5]}")
    return out  # type: ignore[return-value]
