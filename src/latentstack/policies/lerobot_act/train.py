"""Train LeRobot's ACT (small preset) on the project's LeRobotDataset (on ``device``, CPU by default), and save
it LeRobot's way.

Data: the same demonstrations as the VLA (``data/demos_metaworld_mt6``), read once with LeRobot's
``LeRobotDataset`` loader (:func:`latentstack.policies.train.load_frames`); action chunks of ``chunk_size``
with ``action_is_pad`` past each episode's end (what LeRobot's ``delta_timestamps`` produce for ACT).
Images go in as float [0, 1] and are normalised by the LeRobot preprocessor (ImageNet statistics).
Optimiser as LeRobot's ACT preset: AdamW (lr, weight decay from the config), constant LR, grad-norm clip 10.

Outputs in ``out_dir``: a ``"lerobot_act"`` artifact (``config.json``; LeRobot's ``config.json`` +
``model.safetensors`` + pre/post-processor files in ``lerobot/``), ``train_log.json`` and ``loss_curve.png``.
The loop is the shared :func:`latentstack.training.train_supervised` (this module gives it the batches and
the loss).

CLI: ``lstack act train --data ROOT --out DIR --steps N --time-budget-s S`` (flags in :mod:`latentstack.cli.act`).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

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
    log_every: int = 10  # one history entry (means over the window) every this many steps
    max_episodes: int | None = None
    progress: bool = True
    checkpoint_every: int = 0  # > 0: resumable checkpoints in out_dir/checkpoints (the last 2 kept)
    resume: bool = False  # continue from out_dir/checkpoints when there is one
    device: str = "cpu"  # where ACT trains; batches reach it through LeRobot's preprocessor (its device step)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be >= 1")


def train_act(cfg: ACTTrainConfig) -> Path:
    """Train and save; returns ``out_dir``. The loop is :func:`latentstack.training.train_supervised`."""
    from lerobot.policies.act.modeling_act import ACTPolicy
    from lerobot.policies.act.processor_act import make_act_pre_post_processors

    from latentstack.policies.lerobot_act.artifact import save_act_artifact
    from latentstack.policies.lerobot_act.processor_act import set_pipeline_device
    from latentstack.policies.train import load_frames
    from latentstack.training import plot_history, train_supervised

    torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    frames = load_frames(cfg.dataset_root, cfg.repo_id, max_episodes=cfg.max_episodes)
    act_cfg = make_act_config(cfg.preset, image_size=int(frames.images.shape[-1]),
                              state_dim=int(frames.states.shape[1]), action_dim=int(frames.actions.shape[1]))
    policy = ACTPolicy(act_cfg)
    stats = stats_from_frames(frames.stats())
    pre, post = make_act_pre_post_processors(act_cfg, dataset_stats=stats)
    # before the optimizer is built, so its state lives beside the parameters; the preprocessor's device step
    # (and its normalizer stats) follow, so every batch tensor reaches the device there; the postprocessor's
    # last device step stays the host (LeRobot's "actions back to the CPU")
    policy.to(cfg.device)
    set_pipeline_device(pre, cfg.device)
    set_pipeline_device(post, cfg.device, keep_last_device_step=True)
    opt = torch.optim.AdamW(policy.get_optim_params(), lr=act_cfg.optimizer_lr,
                            weight_decay=act_cfg.optimizer_weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    no_tokens = torch.zeros(len(frames.tasks), 1, dtype=torch.long)  # ACT has no language input

    def step_fn(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        idx = torch.randint(len(frames), (cfg.batch_size,), generator=gen)
        raw = frames.batch(idx, act_cfg.chunk_size, no_tokens)
        batch = pre({"observation.image": raw["observation.image"].float() / 255.0,
                     "observation.state": raw["observation.state"], "action": raw["action"],
                     "action_is_pad": raw["action_is_pad"]})
        loss, info = policy.forward(batch)
        return loss, {k: float(v) for k, v in info.items() if isinstance(v, (int, float, torch.Tensor))}

    out = Path(cfg.out_dir)
    log_extra = {"train_config": dataclasses.asdict(cfg), "frames": len(frames), "episodes": frames.num_episodes,
                 "tasks": frames.tasks, "parameters": sum(p.numel() for p in policy.parameters())}
    # the wall budget ends training here (not a pause): the weights at the stop are the result
    result = train_supervised(
        policy, step_fn, opt, steps=cfg.steps, grad_clip=cfg.grad_clip, state={"sampler": gen}, out_dir=out,
        resume=cfg.resume, log_every=cfg.log_every, checkpoint_every=cfg.checkpoint_every, progress=cfg.progress,
        plot_keys=("l1_loss",), log_extra=log_extra, desc="train act", time_budget_s=cfg.time_budget_s,
    )
    history = result.history
    policy.eval()
    # the artifact is written from the host: weights and normalizer stats as a CPU run saves them
    policy.to("cpu")
    set_pipeline_device(pre, "cpu")
    set_pipeline_device(post, "cpu", keep_last_device_step=True)
    log = {"train_config": dataclasses.asdict(cfg), "steps_done": result.step,
           "wall_s": float(history[-1]["elapsed_s"]) if history else result.wall_s,
           "frames": len(frames), "episodes": frames.num_episodes, "tasks": frames.tasks,
           "parameters": log_extra["parameters"],
           "final_l1_loss_mean_last10": (sum(h["l1_loss"] for h in history[-10:]) / max(1, len(history[-10:]))),
           "history": history}
    # a "lerobot_act" artifact: LeRobot's files in out/lerobot, the training log hashed with them
    save_act_artifact(policy, pre, post, out, files={"train_log.json": json.dumps(log, indent=1)})
    plot_history(history, out / "loss_curve.png", ("l1_loss",))
    return out
