"""Train the small VLA on a LeRobotDataset (behaviour cloning with flow matching), on CPU.

The dataset is read once with ``LeRobotDataset(repo_id, root=root)`` and cached as in-memory tensors
(images uint8). Action chunks are gathered per sampled frame from the episode's following actions,
with ``action_is_pad`` past the episode end. AdamW, linear warmup + cosine decay, grad clipping.

The loop is :func:`latentstack.training.train_supervised` (this module gives it the batches and the
loss). Resumable: every ``checkpoint_every`` steps ``out_dir/checkpoints/step_XXXXXXX/`` receives the
policy (:func:`save_policy`) plus ``training_state.safetensors`` (optimizer moments, RNG states) and
``training_state.json`` (step, scheduler, optimizer hyper-parameters, loss history); ``latest.json``
points at the newest. ``train(cfg)`` resumes from it when ``cfg.resume``. Outputs in ``out_dir``:
``policy/`` (final checkpoint, returned), ``train_log.json``, ``loss_curve.png``.

CLI: ``python -m latentstack.policies.train --dataset ROOT --out DIR --steps N``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentstack.policies.checkpoint import save_policy
from latentstack.policies.vla.configuration_vla import get_vla_config
from latentstack.policies.vla.modeling_vla import VLAPolicy
from latentstack.policies.vla.tokenizer import WordTokenizer
from latentstack.training import ThreadTuner, train_supervised

__all__ = ["FrameCache", "ThreadTuner", "TrainConfig", "build_optimizer", "build_policy", "load_frames", "train"]


@dataclass(frozen=True)
class TrainConfig:
    dataset_root: str
    repo_id: str | None = None  # default: "local/<dataset_root dir name>"
    out_dir: str = "runs/vla_small"
    policy: str = "vla_small"  # VLA preset the overrides apply to
    policy_overrides: Mapping[str, Any] = field(default_factory=dict)
    steps: int = 3000
    batch_size: int = 64
    lr: float = 5e-4
    warmup_steps: int = 300
    min_lr_ratio: float = 0.05  # cosine decays to lr * min_lr_ratio
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    seed: int = 0
    chunk_size: int | None = None  # None: the policy config's chunk_size
    log_every: int = 50
    plot_every: int = 500
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    resume: bool = True
    num_threads: int = 0  # 0 = adaptive: re-measure 1 vs all cores every ~200 steps
    device: str = "cpu"  # where the policy trains; batches go there through the VLA's processor
    max_episodes: int | None = None  # use only the first N episodes (smoke runs)
    progress: bool = True
    # stop early (checkpoint + return) to fit a session that is cut at a fixed time; a later call resumes
    session_steps: int | None = None  # at most this many optimizer steps in this call
    time_budget_s: float | None = None  # stop after this much wall-clock time in the training loop

    def __post_init__(self) -> None:
        object.__setattr__(self, "policy_overrides", dict(self.policy_overrides))
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if self.steps < 0 or self.batch_size < 1:
            raise ValueError("steps must be >= 0 and batch_size >= 1")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, **overrides: Any) -> TrainConfig:
        """``train:`` section -> fields, ``policy:`` section -> ``policy_overrides``; then ``overrides``."""
        from latentstack.policies.factory import load_yaml

        doc = load_yaml(path)
        kw = dict(doc.get("train", {}))
        if "policy" in doc:
            kw["policy_overrides"] = {**doc["policy"], **kw.get("policy_overrides", {})}
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kw)


# --------------------------------------------------------------------------- dataset cache


@dataclass
class FrameCache:
    """All frames of a LeRobotDataset as tensors (row order = dataset order, episodes contiguous)."""

    images: torch.Tensor  # uint8 (N, 3, H, W)
    states: torch.Tensor  # float32 (N, S)
    actions: torch.Tensor  # float32 (N, A)
    episode_end: torch.Tensor  # int64 (N,): one past the last row of the frame's episode
    task_index: torch.Tensor  # int64 (N,) into ``tasks``
    tasks: list[str]
    fps: float
    num_episodes: int

    def __len__(self) -> int:
        return self.images.shape[0]

    def stats(self) -> dict[str, torch.Tensor]:
        s, a = self.states.double(), self.actions.double()
        return {
            "state_mean": s.mean(0).float(),
            "state_std": s.std(0).float(),
            "action_mean": a.mean(0).float(),
            "action_std": a.std(0).float(),
            "action_min": a.min(0).values.float(),
            "action_max": a.max(0).values.float(),
        }

    def batch(self, idx: torch.Tensor, chunk_size: int, task_tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training batch for frame rows ``idx``: image, state, language tokens, action chunk + pad mask."""
        raw = idx[:, None] + torch.arange(chunk_size)[None, :]
        end = self.episode_end[idx][:, None]
        is_pad = raw >= end
        rows = torch.minimum(raw, end - 1)
        return {
            "observation.image": self.images[idx],
            "observation.state": self.states[idx],
            "lang_tokens": task_tokens[self.task_index[idx]],
            "action": self.actions[rows],
            "action_is_pad": is_pad,
        }


def _import_lerobot_dataset():
    # Import torchvision before lerobot: `datasets` probes torchvision with importlib.util.find_spec,
    # which would otherwise consume the venv's torchvision CPU shim before the real import.
    import torchvision  # noqa: F401
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    return LeRobotDataset


def load_frames(
    root: str | os.PathLike,
    repo_id: str | None = None,
    max_episodes: int | None = None,
    chunk_rows: int = 2048,
) -> FrameCache:
    """Read a LeRobotDataset once (features ``observation.image``, ``observation.state``, ``action``,
    per-frame ``task``) into a :class:`FrameCache`."""
    LeRobotDataset = _import_lerobot_dataset()
    root = Path(root)
    repo_id = repo_id or f"local/{root.name}"
    episodes = list(range(max_episodes)) if max_episodes else None
    ds = LeRobotDataset(repo_id, root=root, episodes=episodes)
    hf = ds.hf_dataset.with_format("numpy")
    n = len(hf)
    if n == 0:
        raise ValueError(f"dataset {root} has no frames")
    for key in ("observation.image", "observation.state", "action", "episode_index", "task_index"):
        if key not in hf.column_names:
            raise ValueError(f"dataset {root} lacks column {key!r} (has {hf.column_names})")
    images, states, actions, ep_idx, task_idx = [], [], [], [], []
    for start in range(0, n, chunk_rows):
        rows = hf[start : min(n, start + chunk_rows)]
        img = np.asarray(rows["observation.image"])
        if img.dtype != np.uint8:  # float images in [0, 1]
            img = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
        if img.shape[-1] == 3:
            img = img.transpose(0, 3, 1, 2)
        images.append(torch.from_numpy(np.ascontiguousarray(img)))
        states.append(torch.from_numpy(np.asarray(rows["observation.state"], dtype=np.float32)))
        actions.append(torch.from_numpy(np.asarray(rows["action"], dtype=np.float32)))
        ep_idx.append(np.asarray(rows["episode_index"], dtype=np.int64))
        task_idx.append(np.asarray(rows["task_index"], dtype=np.int64))
    ep = np.concatenate(ep_idx)
    # episode boundaries in row order (episodes are stored contiguously)
    change = np.flatnonzero(np.diff(ep)) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [n]])
    if len(np.unique(ep)) != len(starts):
        raise ValueError(f"dataset {root}: episodes are not contiguous in row order")
    episode_end = np.repeat(ends, ends - starts)
    # tasks table: task string -> task_index
    task_table = ds.meta.tasks
    by_index = {int(row.task_index): str(name) for name, row in task_table.iterrows()}
    t_idx = np.concatenate(task_idx)
    used = sorted(set(t_idx.tolist()))
    remap = {old: new for new, old in enumerate(used)}
    tasks = [by_index[i] for i in used]
    return FrameCache(
        images=torch.cat(images),
        states=torch.cat(states),
        actions=torch.cat(actions),
        episode_end=torch.from_numpy(episode_end.astype(np.int64)),
        task_index=torch.tensor([remap[int(i)] for i in t_idx], dtype=torch.long),
        tasks=tasks,
        fps=float(ds.fps),
        num_episodes=len(starts),
    )


# --------------------------------------------------------------------------- policy / optimizer


def build_policy(cfg: TrainConfig, data: FrameCache) -> VLAPolicy:
    """Fresh policy sized to the dataset (image size, state/action dims, vocabulary) + its statistics."""
    overrides = dict(cfg.policy_overrides)
    tokenizer = WordTokenizer.build(data.tasks, max_len=overrides.get("max_lang_len", 12))
    overrides.update(
        vocab=tuple(tokenizer.vocab),
        image_size=int(data.images.shape[-1]),
        state_dim=int(data.states.shape[1]),
        action_dim=int(data.actions.shape[1]),
        seed=cfg.seed,
    )
    if cfg.chunk_size is not None:
        overrides["chunk_size"] = cfg.chunk_size
        overrides.setdefault("n_action_steps", min(cfg.chunk_size, get_vla_config(cfg.policy).n_action_steps))
    policy = VLAPolicy(get_vla_config(cfg.policy).replace(**overrides))
    policy.set_normalization(data.stats())
    return policy


def build_optimizer(policy: torch.nn.Module, cfg: TrainConfig):
    decay, no_decay = [], []
    for name, p in policy.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and "embed" not in name else no_decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=cfg.betas,
    )

    def lr_lambda(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        span = max(1, cfg.steps - cfg.warmup_steps)
        progress = min(1.0, (step - cfg.warmup_steps) / span)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    return opt, sched


# --------------------------------------------------------------------------- training


def _log_extra(cfg: TrainConfig, policy: VLAPolicy, data: FrameCache) -> dict[str, Any]:
    return {
        "train_config": cfg.to_dict(),
        "policy_config": policy.config.to_dict(),
        "num_parameters": policy.num_parameters(),
        "dataset": {"frames": len(data), "episodes": data.num_episodes, "tasks": data.tasks, "fps": data.fps},
    }


def train(cfg: TrainConfig, data: FrameCache | None = None) -> Path:
    """Train (or resume) and return the final policy checkpoint directory ``out_dir/policy``.

    When stopped early by ``session_steps`` / ``time_budget_s`` it checkpoints and returns that
    checkpoint directory (itself a loadable policy directory); calling again resumes."""
    threads = torch.get_num_threads()
    if cfg.num_threads > 0:  # for the whole call: the dataset statistics are reductions too
        torch.set_num_threads(cfg.num_threads)
    try:
        return _train(cfg, data)
    finally:
        torch.set_num_threads(threads)


def _train(cfg: TrainConfig, data: FrameCache | None) -> Path:
    from latentstack.policies.checkpoint import load_policy

    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if data is None:
        data = load_frames(cfg.dataset_root, cfg.repo_id, cfg.max_episodes)

    torch.manual_seed(cfg.seed)
    policy = build_policy(cfg, data)
    policy.to(cfg.device)  # before the optimizer is built, so its state lives beside the parameters
    opt, sched = build_optimizer(policy, cfg)
    sampler = torch.Generator().manual_seed(cfg.seed + 1)
    chunk = policy.config.chunk_size
    task_tokens, _ = policy.tokenizer(data.tasks)
    n = len(data)

    def step_fn(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        idx = torch.randint(0, n, (cfg.batch_size,), generator=sampler)
        loss, _ = policy.compute_loss(data.batch(idx, chunk, task_tokens))
        return loss, {}

    def save_model(directory: Path, step: int) -> None:  # a checkpoint is a loadable policy directory
        save_policy(policy, directory, extra={"train_step": step})

    def load_model(directory: Path) -> None:
        resumed = load_policy(directory)
        if resumed.config != policy.config:
            raise ValueError(f"cannot resume from {directory}: its policy config differs from this run's")
        policy.load_state_dict(resumed.state_dict())

    result = train_supervised(
        policy, step_fn, opt, steps=cfg.steps, scheduler=sched, grad_clip=cfg.grad_clip,
        state={"sampler": sampler}, out_dir=out_dir, resume=cfg.resume, log_every=cfg.log_every,
        plot_every=cfg.plot_every, checkpoint_every=cfg.checkpoint_every, keep_last=cfg.keep_checkpoints,
        progress=cfg.progress, plot_keys=("loss", "lr"), log_extra=_log_extra(cfg, policy, data),
        desc="train vla", session_steps=cfg.session_steps, time_budget_s=cfg.time_budget_s,
        num_threads=cfg.num_threads, save_model=save_model, load_model=load_model,
    )
    if result.stopped_early:
        assert result.checkpoint is not None
        return result.checkpoint
    policy.eval()
    return save_policy(
        policy, out_dir / "policy", extra={"train_step": result.step, "dataset": str(cfg.dataset_root)}
    )


def add_train_arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The training flags, shared by ``python -m latentstack.policies.train`` and ``lstack train``."""
    ap.add_argument("--dataset", required=True, help="LeRobotDataset root directory")
    ap.add_argument("--repo-id", default=None, help="dataset repo id (default local/<root name>)")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument(
        "--config", default=None, help="YAML with train:/policy: sections (e.g. configs/vla_small.yaml)"
    )
    ap.add_argument("--policy", default=None, help="VLA preset name (default vla_small)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--chunk-size", type=int, default=None)
    ap.add_argument("--checkpoint-every", type=int, default=None)
    ap.add_argument("--max-episodes", type=int, default=None)
    ap.add_argument("--num-threads", type=int, default=None, help="0 = adaptive (default)")
    ap.add_argument("--time-budget-s", type=float, default=None, help="checkpoint and stop after this long")
    ap.add_argument("--no-resume", action="store_true")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def run_from_args(a: argparse.Namespace) -> int:
    kw = {
        "dataset_root": a.dataset,
        "repo_id": a.repo_id,
        "out_dir": a.out,
        "policy": a.policy,
        "steps": a.steps,
        "batch_size": a.batch_size,
        "lr": a.lr,
        "seed": a.seed,
        "chunk_size": a.chunk_size,
        "checkpoint_every": a.checkpoint_every,
        "max_episodes": a.max_episodes,
        "num_threads": a.num_threads,
        "time_budget_s": a.time_budget_s,
        "resume": False if a.no_resume else None,
        "progress": False if a.no_progress else None,
    }
    from latentstack.core.device import device_kwargs

    # --device (lstack train): handed to the trainer once it takes one; until then anything but cpu is refused
    kw.update(device_kwargs(TrainConfig, getattr(a, "device", None) or "cpu", "VLA training"))
    if a.config:
        cfg = TrainConfig.from_yaml(a.config, **kw)
    else:
        cfg = TrainConfig(**{k: v for k, v in kw.items() if v is not None})
    final = train(cfg)
    print(final)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m latentstack.policies.train", description=__doc__.split("\n")[0]
    )
    return run_from_args(add_train_arguments(ap).parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
