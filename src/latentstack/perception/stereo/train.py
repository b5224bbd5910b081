"""Training: (A) monocular pretraining of the encoder, (B) stereo training of SA2-tiny or its ConvGRU twin.

Recipe (identical for both updaters; spec §7 scaled to CPU): AdamW (lr ``lr``, wd 1e-5, eps 1e-8),
OneCycleLR (linear, pct_start 0.01, no momentum cycling), grad-norm clip 1.0, sequence loss with
γ = 0.9, ``train_iters`` refinement steps, CoDyRA L1 (λ) + threshold with the κ ramp in the second
half, frozen encoder. No model selection: the last step is the checkpoint; the val split gives
one number logged for sanity, the test split is never touched here.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .codyra import codyra_l1, codyra_modules, codyra_threshold_, kappa_schedule
from .configuration_stereo import StereoConfig
from .data import StereoSplit
from .encoder import TinyEncoder, normalize_images
from .losses import mono_log_depth_loss, sequence_loss
from .model import SA2Tiny, save_stereo_model

__all__ = ["TrainRecipe", "pretrain_mono", "train_stereo"]


@dataclass(frozen=True)
class TrainRecipe:
    steps: int = 800
    batch_size: int = 4
    lr: float = 4e-4
    weight_decay: float = 1e-5
    clip: float = 1.0
    gamma: float = 0.9
    k_max: float = 3.0  # training turbidity range U(0, k_max)
    seed: int = 0
    threads: int = 1


def _plot(history: dict[str, list[float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(history), figsize=(4 * len(history), 3))
    for ax, (k, v) in zip(np.atleast_1d(axes), history.items()):
        v = np.asarray(v)
        ax.plot(v, alpha=0.3)
        if len(v) > 20:
            ax.plot(np.convolve(v, np.ones(20) / 20, mode="valid"))
        ax.set_title(k)
        ax.set_xlabel("step")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def pretrain_mono(data: StereoSplit, out_dir: Path | str, recipe: TrainRecipe, config: StereoConfig | None = None,
                  progress: bool = True) -> Path:
    """Trains the encoder + mono head on left images (random turbidity); saves ``encoder.safetensors``."""
    from tqdm import tqdm

    config = config if config is not None else StereoConfig()
    torch.manual_seed(recipe.seed)
    torch.set_num_threads(recipe.threads)
    rng = np.random.default_rng([recipe.seed, 1])
    enc = TinyEncoder(config.enc_channels, config.feat_dim)
    opt = torch.optim.AdamW(enc.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, recipe.lr, total_steps=recipe.steps, pct_start=0.01,
                                                anneal_strategy="linear", cycle_momentum=False)
    hist: dict[str, list[float]] = {"mono_log_l1": []}
    for _ in tqdm(range(recipe.steps), desc="mono pretrain", disable=not progress):
        idx = rng.integers(0, len(data), recipe.batch_size)
        b = data.train_batch(idx, rng, recipe.k_max)
        _, log_depth = enc(normalize_images(b["left"]))
        loss = mono_log_depth_loss(log_depth, b["depth"])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(enc.parameters(), recipe.clip)
        opt.step()
        sched.step()
        hist["mono_log_l1"].append(loss.item())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in enc.state_dict().items()}, str(out / "encoder.safetensors"),
              metadata={"enc_channels": json.dumps(list(config.enc_channels)), "feat_dim": str(config.feat_dim)})
    _plot(hist, out / "mono_pretrain.png", "monocular pretraining")
    (out / "mono_pretrain.json").write_text(json.dumps({"recipe": recipe.__dict__, "final_loss": float(np.mean(hist["mono_log_l1"][-50:]))}, indent=2))
    return out / "encoder.safetensors"


def load_encoder_weights(model: SA2Tiny, path: Path | str) -> None:
    sd = load_file(str(path))
    own = model.encoder.state_dict()
    if set(sd) != set(own) or any(sd[k].shape != own[k].shape for k in sd):
        raise ValueError(f"encoder weights {path} do not match config {model.config.name!r} "
                         f"(enc_channels={model.config.enc_channels}, feat_dim={model.config.feat_dim})")
    model.encoder.load_state_dict(sd)


@torch.no_grad()
def val_epe(model: SA2Tiny, data: StereoSplit, turbidity: float = 3.0, n: int = 32) -> float:
    model.eval()
    errs = []
    for i in range(min(n, len(data))):
        left, right = data.eval_pair(i, turbidity)
        b = data.batch(np.array([i]), left[None], right[None])
        d = model(b["left"], b["right"], b["fb"])["disp_preds"][-1]
        m = b["noc"]
        errs.append((d - b["disp"]).abs()[m].mean().item())
    model.train()
    return float(np.mean(errs))


def train_stereo(config: StereoConfig, encoder_path: Path | str, data: StereoSplit, out_dir: Path | str,
                 recipe: TrainRecipe, val: StereoSplit | None = None, progress: bool = True) -> Path:
    """Stage B: frozen pretrained encoder + CoDyRA, everything else trained with the sequence loss."""
    from tqdm import tqdm

    torch.manual_seed(recipe.seed)
    torch.set_num_threads(recipe.threads)
    rng = np.random.default_rng([recipe.seed, 2])
    model = SA2Tiny(config)
    load_encoder_weights(model, encoder_path)
    n_adapters = model.add_adapters()
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay, eps=1e-8)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, recipe.lr, total_steps=recipe.steps + 100, pct_start=0.01,
                                                anneal_strategy="linear", cycle_momentum=False)
    hist: dict[str, list[float]] = {"loss": [], "epe_train": [], "active_rank": []}
    t0 = time.time()
    for step in tqdm(range(recipe.steps), desc=f"train {config.name}", disable=not progress):
        idx = rng.integers(0, len(data), recipe.batch_size)
        b = data.train_batch(idx, rng, recipe.k_max)
        out = model(b["left"], b["right"], b["fb"], iters=config.train_iters)
        loss, info = sequence_loss(out["disp_preds"], b["disp"], b["valid"], recipe.gamma)
        kappa = kappa_schedule(step, recipe.steps, config.codyra_kappa)
        if kappa > 0 or step >= recipe.steps / 2:
            loss = loss + config.codyra_lambda * codyra_l1(model)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, recipe.clip)
        opt.step()
        sched.step()
        codyra_threshold_(model, kappa, config.codyra_rule)
        hist["loss"].append(loss.item())
        hist["epe_train"].append(info["epe"])
        hist["active_rank"].append(float(sum(int((m.lora_w != 0).sum()) for m in codyra_modules(model))))
    wall = time.time() - t0
    extra: dict[str, Any] = {
        "recipe": recipe.__dict__, "config": config.to_dict(), "encoder": str(encoder_path), "wall_s": wall,
        "n_adapters": n_adapters, "train_samples": len(data), "train_seeds": [int(data.seeds[0]), int(data.seeds[-1])],
        "final_train_epe": float(np.mean(hist["epe_train"][-50:])), "active_rank_final": hist["active_rank"][-1],
        "torch": torch.__version__,
    }
    if val is not None:
        extra["val_epe_x3_first32"] = val_epe(model, val)
    out = save_stereo_model(model, out_dir, extra)
    _plot(hist, Path(out_dir) / "training.png", f"{config.name} ({config.updater}, {config.train_iters} iters)")
    return out
