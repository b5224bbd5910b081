"""Train LeRobot's ACT (small preset) on the project's LeRobotDataset, on CPU, and save it LeRobot's way.

Data: the same demonstrations as the VLA (``data/demos_metaworld_mt6``), read once with LeRobot's
``LeRobotDataset`` loader (:func:`latentstack.policies.train.load_frames`); action chunks of ``chunk_size``
with ``action_is_pad`` past each episode's end (what LeRobot's ``delta_timestamps`` produce for ACT).
Images go in as float [0, 1] and are normalised by the LeRobot preprocessor (ImageNet statistics).
Optimiser as LeRobot's ACT preset: AdamW (lr, weight decay from the config), constant LR, grad-norm clip 10.

Outputs in ``out_dir``: ``config.json`` + ``model.safetensors`` (``ACTPolicy.save_pretrained``), the
pre/post-processor JSON + safetensors, ``train_log.json`` and ``loss_curve.png``.

CLI: ``python -m latentstack.policies.lerobot_act.train --dataset ROOT --out DIR --steps N --time-budget-s S``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from latentstack.policies.lerobot_act.configuration_act import make_act_config, stats_from_frames


@dataclass(frozen=True)
class ACTTrainConfig:
    dataset_root: str
    out_dir: str = "policies/act_metaworld_mt6"
    repo_id: str | None = None
    preset: str = "act_small"
    steps: int = 100_000
    time_budget_s: float | None = 14 * 60.0  # stop at whichever comes first: steps or wall budget
    batch_size: int = 16
    grad_clip: float = 10.0
    seed: int = 0
    num_threads: int = 1
    log_every: int = 10
    max_episodes: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be >= 1")


def plot_loss(history: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([h["step"] for h in history], [h["l1_loss"] for h in history], lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("ACT L1 loss (normalised actions)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def train_act(cfg: ACTTrainConfig) -> Path:
    """Train and save; returns ``out_dir``."""
    from lerobot.policies.act.modeling_act import ACTPolicy
    from lerobot.policies.act.processor_act import make_act_pre_post_processors

    from latentstack.policies.train import load_frames

    torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    frames = load_frames(cfg.dataset_root, cfg.repo_id, max_episodes=cfg.max_episodes)
    act_cfg = make_act_config(cfg.preset, image_size=int(frames.images.shape[-1]),
                              state_dim=int(frames.states.shape[1]), action_dim=int(frames.actions.shape[1]))
    policy = ACTPolicy(act_cfg)
    stats = stats_from_frames(frames.stats())
    pre, post = make_act_pre_post_processors(act_cfg, dataset_stats=stats)
    opt = torch.optim.AdamW(policy.get_optim_params(), lr=act_cfg.optimizer_lr,
                            weight_decay=act_cfg.optimizer_weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    no_tokens = torch.zeros(len(frames.tasks), 1, dtype=torch.long)  # ACT has no language input
    history: list[dict[str, Any]] = []
    bar = None
    if cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, desc="train act", unit="step", dynamic_ncols=True)
    policy.train()
    t0 = time.perf_counter()
    step = 0
    while step < cfg.steps:
        if cfg.time_budget_s is not None and time.perf_counter() - t0 > cfg.time_budget_s:
            break
        idx = torch.randint(len(frames), (cfg.batch_size,), generator=gen)
        raw = frames.batch(idx, act_cfg.chunk_size, no_tokens)
        batch = pre({"observation.image": raw["observation.image"].float() / 255.0,
                     "observation.state": raw["observation.state"], "action": raw["action"],
                     "action_is_pad": raw["action_is_pad"]})
        loss, info = policy.forward(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        if step % cfg.log_every == 0 or step == 1:
            history.append({"step": step, "l1_loss": float(info["l1_loss"]), "grad_norm": float(gnorm),
                            "wall_s": time.perf_counter() - t0})
        if bar is not None:
            bar.update(1)
            bar.set_postfix(l1=f"{info['l1_loss']:.4f}")
    if bar is not None:
        bar.close()
    wall = time.perf_counter() - t0
    policy.eval()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    policy.save_pretrained(out)
    pre.save_pretrained(out)
    post.save_pretrained(out)
    log = {"train_config": dataclasses.asdict(cfg), "steps_done": step, "wall_s": wall,
           "frames": len(frames), "episodes": frames.num_episodes, "tasks": frames.tasks,
           "parameters": sum(p.numel() for p in policy.parameters()),
           "final_l1_loss_mean_last10": (sum(h["l1_loss"] for h in history[-10:]) / max(1, len(history[-10:]))),
           "history": history}
    (out / "train_log.json").write_text(json.dumps(log, indent=1))
    plot_loss(history, out / "loss_curve.png")
    return out


def main(argv: list[str] | None = None) -> int:
    """Same arguments as ``lstack act train``."""
    import sys

    from latentstack.policies.lerobot_act.cli import add_act_parser

    ap = argparse.ArgumentParser(prog="python -m latentstack.policies.lerobot_act.train")
    add_act_parser(ap.add_subparsers(dest="command", required=True))
    a = ap.parse_args(["act", "train", *(sys.argv[1:] if argv is None else argv)])
    return a.func(a)


if __name__ == "__main__":
    raise SystemExit(main())
