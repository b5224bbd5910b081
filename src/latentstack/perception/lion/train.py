"""Training and evaluation of LION detectors on the synthetic MuJoCo LiDAR splits.

Recipe (LION KITTI, scaled to a CPU): AdamW, one-cycle LR (max 3e-3, pct_start 0.4,
div_factor 10, cosine momentum 0.95→0.85), weight decay 0.01, grad-norm clip 10, batch 4;
augmentation: random flip about x (y → −y), global rotation ±π/4, global scaling 0.95–1.05.
The number of iterations is fixed, so the LION and identity-operator runs see the same batches.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentstack.sim.lidar_scenes import LidarScan, LidarSceneConfig, generate_split, load_split, save_split

from .configuration_lion import LionConfig
from .heads import build_targets, center_loss
from .modeling_lion import LionDetector, batch_points, save_detector

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


def train_detector(cfg: LionConfig, tcfg: TrainConfig, train_scans: list[LidarScan], out_dir: str | Path | None,
                   progress: bool = True) -> tuple[LionDetector, dict[str, Any]]:
    """Train from scratch; writes checkpoint, ``train_log.json`` and ``train_loss.png`` under ``out_dir``."""
    from tqdm import tqdm

    torch.manual_seed(tcfg.seed)
    rng = np.random.default_rng(tcfg.seed)
    model = LionDetector(cfg)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay, betas=(0.95, 0.99))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=tcfg.lr, total_steps=tcfg.iterations,
                                                pct_start=tcfg.pct_start, div_factor=tcfg.div_factor,
                                                base_momentum=0.85, max_momentum=0.95)
    log: list[dict[str, float]] = []
    order = rng.permutation(len(train_scans))
    pos = 0
    t0 = time.time()
    bar = tqdm(range(tcfg.iterations), desc=f"train {cfg.name}", disable=not progress)
    for it in bar:
        idx = []
        for _ in range(tcfg.batch_size):
            if pos == len(order):
                order, pos = rng.permutation(len(train_scans)), 0
            idx.append(int(order[pos]))
            pos += 1
        clouds, boxes, classes = [], [], []
        for i in idx:
            s = train_scans[i]
            keep = s.box_num_points >= tcfg.min_train_points
            p, b = (augment(s.points, s.boxes[keep], rng) if tcfg.augment else (s.points, s.boxes[keep]))
            clouds.append(p)
            boxes.append(b)
            classes.append(s.box_class[keep])
        tgt = build_targets(cfg, boxes, classes)
        out = model(batch_points(clouds), len(clouds))
        loss, parts = center_loss(cfg, out, tgt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        opt.step()
        sched.step()
        if not math.isfinite(float(loss.detach())):
            raise FloatingPointError(f"non-finite loss at iteration {it}")
        log.append({"it": it, "loss": float(loss.detach()), **parts, "grad_norm": float(gnorm),
                    "lr": sched.get_last_lr()[0], "time_s": time.time() - t0})
        bar.set_postfix(loss=f"{float(loss):.3f}")
    summary = {"preset": cfg.name, "train": tcfg.__dict__, "num_train_scans": len(train_scans),
               "wall_s": time.time() - t0, "final_loss_avg50": float(np.mean([r["loss"] for r in log[-50:]]))}
    if out_dir is not None:
        out_dir = Path(out_dir)
        save_detector(model, out_dir, extra={"train": summary})
        (out_dir / "train_log.json").write_text(json.dumps({"summary": summary, "log": log}) + "\n")
        plot_losses({cfg.name: log}, out_dir / "train_loss.png")
    model.eval()
    return model, summary


def plot_losses(logs: dict[str, list[dict[str, float]]], path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, log in logs.items():
        loss = np.array([r["loss"] for r in log])
        k = min(20, len(loss))
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid") if k else loss
        ax.plot(np.arange(len(smooth)) + k - 1, smooth, label=name)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss (20-it mean)")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@torch.no_grad()
def predict(model: LionDetector, scans: list[LidarScan], batch_size: int = 4, progress: bool = True
            ) -> list[dict[str, np.ndarray]]:
    from tqdm import tqdm

    model.eval()
    out: list[dict[str, np.ndarray]] = []
    for i in tqdm(range(0, len(scans), batch_size), desc=f"detect {model.config.name}", disable=not progress):
        out.extend(model.detect([s.points for s in scans[i:i + batch_size]]))
    return out
