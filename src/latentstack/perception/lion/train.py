"""Training and evaluation of LION detectors on the synthetic MuJoCo LiDAR splits.

Recipe (LION KITTI, scaled to a CPU): AdamW, one-cycle LR (max 3e-3, pct_start 0.4,
div_factor 10, cosine momentum 0.95→0.85), weight decay 0.01, grad-norm clip 10, batch 4;
augmentation: random flip about x (y → −y), global rotation ±π/4, global scaling 0.95–1.05.
The number of iterations is fixed, so the LION and identity-operator runs see the same batches.
The loop is the shared :func:`latentstack.training.train_supervised`; this module gives it the batches and loss.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentstack.sim.lidar_scenes import LidarScan, LidarSceneConfig, generate_split, load_split, save_split

from .configuration_lion import LionConfig
from .heads import build_targets, center_loss
from .modeling_lion import LionDetector, save_detector

__all__ = ["TrainConfig", "augment", "gt_dict", "load_or_generate", "predict", "train_detector"]

DEFAULT_SPLIT_SIZES = {"train": 400, "val": 50, "test": 100}


def load_or_generate(data_dir: str | Path, split: str, n: int | None = None, progress: bool = True) -> list[LidarScan]:
    """``data_dir/{split}.npz`` if it holds ≥ n scans of the default config, else generate and write it."""
    n = DEFAULT_SPLIT_SIZES[split] if n is None else n
    path = Path(data_dir) / f"{split}.npz"
    cfg = LidarSceneConfig()
    if path.is_file():
        scans, file_cfg = load_split(path)
        if file_cfg == cfg and len(scans) >= n:
            return scans[:n]
    scans = generate_split(split, n, cfg, progress=progress)
    save_split(path, scans, cfg)
    return scans


def gt_dict(scan: LidarScan) -> dict[str, np.ndarray]:
    return {"boxes": scan.boxes, "labels": scan.box_class, "num_points": scan.box_num_points}


def augment(points: np.ndarray, boxes: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Flip y, rotate about z by U(±π/4), scale by U(0.95, 1.05) — points and boxes together."""
    p, b = points.copy(), boxes.copy()
    if rng.random() < 0.5:
        p[:, 1] *= -1
        b[:, 1] *= -1
        b[:, 6] *= -1
    a = rng.uniform(-math.pi / 4, math.pi / 4)
    c, s = math.cos(a), math.sin(a)
    rot = np.array([[c, -s], [s, c]], np.float32)
    p[:, :2] = p[:, :2] @ rot.T
    b[:, :2] = b[:, :2] @ rot.T
    b[:, 6] += a
    k = rng.uniform(0.95, 1.05)
    p[:, :3] *= k
    b[:, :6] *= k
    b[:, 6] = (b[:, 6] + math.pi) % (2 * math.pi) - math.pi
    return p, b


@dataclass(frozen=True)
class TrainConfig:
    iterations: int = 600
    batch_size: int = 4
    lr: float = 3e-3
    weight_decay: float = 0.01
    pct_start: float = 0.4
    div_factor: float = 10.0
    grad_clip: float = 10.0
    seed: int = 0
    augment: bool = True
    min_train_points: int = 1  # boxes with fewer LiDAR points get no heatmap peak


class _SceneBatches:
    """Batches of training scans: an epoch-shuffled order, augmentation, one numpy generator for both.

    Its position (order, pos) is resumable state of the training loop; the generator is saved by the loop."""

    def __init__(self, cfg: LionConfig, tcfg: TrainConfig, scans: list[LidarScan], rng: np.random.Generator) -> None:
        self.cfg, self.tcfg, self.scans, self.rng = cfg, tcfg, scans, rng
        self.order = rng.permutation(len(scans))
        self.pos = 0

    def state_dict(self) -> dict[str, Any]:
        return {"order": [int(i) for i in self.order], "pos": self.pos}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.order, self.pos = np.asarray(d["order"], dtype=np.int64), int(d["pos"])

    def __call__(self) -> tuple[list[np.ndarray], dict[str, Any]]:
        """The batch's (augmented) clouds and their heatmap / box targets (host tensors)."""
        idx = []
        for _ in range(self.tcfg.batch_size):
            if self.pos == len(self.order):
                self.order, self.pos = self.rng.permutation(len(self.scans)), 0
            idx.append(int(self.order[self.pos]))
            self.pos += 1
        clouds, boxes, classes = [], [], []
        for i in idx:
            s = self.scans[i]
            keep = s.box_num_points >= self.tcfg.min_train_points
            p, b = (augment(s.points, s.boxes[keep], self.rng) if self.tcfg.augment else (s.points, s.boxes[keep]))
            clouds.append(p)
            boxes.append(b)
            classes.append(s.box_class[keep])
        return clouds, build_targets(self.cfg, boxes, classes)


def train_detector(cfg: LionConfig, tcfg: TrainConfig, train_scans: list[LidarScan], out_dir: str | Path | None,
                   progress: bool = True, *, checkpoint_every: int = 0, resume: bool = False, device: str = "cpu"
                   ) -> tuple[LionDetector, dict[str, Any]]:
    """Train from scratch (or resume, with ``checkpoint_every`` > 0 and ``resume``) on ``device``; writes
    checkpoint, ``train_log.json`` and ``train_loss.png`` under ``out_dir``. The loop is
    :func:`latentstack.training.train_supervised`. The returned detector stays on ``device``."""
    from latentstack.training import train_supervised

    torch.manual_seed(tcfg.seed)
    rng = np.random.default_rng(tcfg.seed)
    model = LionDetector(cfg)
    model.train()
    model.to(device)  # before the optimizer is built, so its state lives beside the parameters
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay, betas=(0.95, 0.99))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=tcfg.lr, total_steps=tcfg.iterations,
                                                pct_start=tcfg.pct_start, div_factor=tcfg.div_factor,
                                                base_momentum=0.85, max_momentum=0.95)
    batches = _SceneBatches(cfg, tcfg, train_scans, rng)

    def step_fn(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        clouds, tgt = batches()  # augmentation and targets on the host (numpy), as on the CPU
        points, n = model.processor(clouds)  # the point tensor, assembled on the host, moved once
        tgt = {k: v.to(points.device, non_blocking=True) for k, v in tgt.items()}
        return center_loss(cfg, model(points, n), tgt)

    result = train_supervised(
        model, step_fn, opt, steps=tcfg.iterations, scheduler=sched, grad_clip=tcfg.grad_clip,
        state={"rng": rng, "batches": batches}, out_dir=out_dir, resume=resume, checkpoint_every=checkpoint_every,
        progress=progress, plot_keys=("loss", "hm", "loc", "lr"), plot_name="train_loss.png",
        desc=f"train {cfg.name}", check_finite=True,
    )
    log = result.history
    summary = {"preset": cfg.name, "train": tcfg.__dict__, "device": str(device), "num_train_scans": len(train_scans),
               "wall_s": float(log[-1]["elapsed_s"]) if log else 0.0,
               "final_loss_avg50": float(np.mean([r["loss"] for r in log[-50:]]))}
    if out_dir is not None:
        out_dir = Path(out_dir)
        save_detector(model, out_dir, extra={"train": summary},
                      files={"train_log.json": json.dumps({"summary": summary, "log": log}) + "\n"})
    model.eval()
    return model, summary


@torch.no_grad()
def predict(model: LionDetector, scans: list[LidarScan], batch_size: int = 4, progress: bool = True
            ) -> list[dict[str, np.ndarray]]:
    from tqdm import tqdm

    model.eval()
    out: list[dict[str, np.ndarray]] = []
    for i in tqdm(range(0, len(scans), batch_size), desc=f"detect {model.config.name}", disable=not progress):
        out.extend(model.detect([s.points for s in scans[i:i + batch_size]]))
    return out
