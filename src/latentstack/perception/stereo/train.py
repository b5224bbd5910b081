"""Training: (A) monocular pretraining of the encoder, (B) stereo training of SA2-tiny or its ConvGRU twin.

Recipe (identical for both updaters; spec §7 scaled to CPU): AdamW (lr ``lr``, wd 1e-5, eps 1e-8),
OneCycleLR (linear, pct_start 0.01, no momentum cycling), grad-norm clip 1.0, sequence loss with
γ = 0.9, ``train_iters`` refinement steps, CoDyRA L1 (λ) + threshold with the κ ramp in the second
half, frozen encoder. No model selection: the last step is the checkpoint; the val split gives
one number logged for sanity, the test split is never touched here.
"""
from __future__ import annotations

import json
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


def _on(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A host batch (built with numpy on the CPU, as before) moved to the model's device; no-op on the CPU."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


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


def pretrain_mono(data: StereoSplit, out_dir: Path | str, recipe: TrainRecipe, config: StereoConfig | None = None,
                  progress: bool = True, *, checkpoint_every: int = 0, resume: bool = False,
                  device: str = "cpu") -> Path:
    """Trains the encoder + mono head on left images (random turbidity) on ``device``; saves
    ``encoder.safetensors`` (from the host)."""
    from latentstack.training import train_supervised

    config = config if config is not None else StereoConfig()
    torch.manual_seed(recipe.seed)
    torch.set_num_threads(recipe.threads)
    rng = np.random.default_rng([recipe.seed, 1])
    enc = TinyEncoder(config.enc_channels, config.feat_dim)
    enc.to(device)  # before the optimizer is built, so its state lives beside the parameters
    dev = next(enc.parameters()).device
    opt = torch.optim.AdamW(enc.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, recipe.lr, total_steps=recipe.steps, pct_start=0.01,
                                                anneal_strategy="linear", cycle_momentum=False)

    def step_fn(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        idx = rng.integers(0, len(data), recipe.batch_size)
        b = _on(data.train_batch(idx, rng, recipe.k_max), dev)
        _, log_depth = enc(normalize_images(b["left"]))
        return mono_log_depth_loss(log_depth, b["depth"]), {}

    out = Path(out_dir)
    result = train_supervised(
        enc, step_fn, opt, steps=recipe.steps, scheduler=sched, grad_clip=recipe.clip, state={"rng": rng},
        out_dir=out, resume=resume, checkpoint_every=checkpoint_every, progress=progress, plot_keys=("loss",),
        plot_name="mono_pretrain.png", log_name="mono_pretrain_log.json", desc="mono pretrain",
    )
    save_file({k: v.detach().cpu().contiguous() for k, v in enc.state_dict().items()}, str(out / "encoder.safetensors"),
              metadata={"enc_channels": json.dumps(list(config.enc_channels)), "feat_dim": str(config.feat_dim)})
    final = float(np.mean([h["loss"] for h in result.history[-50:]]))
    (out / "mono_pretrain.json").write_text(json.dumps({"recipe": recipe.__dict__, "final_loss": final}, indent=2))
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
    dev = next(model.parameters()).device
    errs = []
    for i in range(min(n, len(data))):
        left, right = data.eval_pair(i, turbidity)
        b = _on(data.batch(np.array([i]), left[None], right[None]), dev)
        d = model(b["left"], b["right"], b["fb"])["disp_preds"][-1]
        m = b["noc"]
        errs.append((d - b["disp"]).abs()[m].mean().item())
    model.train()
    return float(np.mean(errs))


def train_stereo(config: StereoConfig, encoder_path: Path | str, data: StereoSplit, out_dir: Path | str,
                 recipe: TrainRecipe, val: StereoSplit | None = None, progress: bool = True, *,
                 checkpoint_every: int = 0, resume: bool = False, device: str = "cpu") -> Path:
    """Stage B: frozen pretrained encoder + CoDyRA, everything else trained with the sequence loss, on
    ``device`` (the artifact is written from the host)."""
    from latentstack.training import train_supervised

    torch.manual_seed(recipe.seed)
    torch.set_num_threads(recipe.threads)
    rng = np.random.default_rng([recipe.seed, 2])
    model = SA2Tiny(config)
    load_encoder_weights(model, encoder_path)
    n_adapters = model.add_adapters()
    model.train()
    model.to(device)  # after the adapters exist, before the optimizer is built (its state beside the parameters)
    dev = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay, eps=1e-8)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, recipe.lr, total_steps=recipe.steps + 100, pct_start=0.01,
                                                anneal_strategy="linear", cycle_momentum=False)

    def step_fn(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        idx = rng.integers(0, len(data), recipe.batch_size)
        b = _on(data.train_batch(idx, rng, recipe.k_max), dev)
        out = model(b["left"], b["right"], b["fb"], iters=config.train_iters)
        loss, info = sequence_loss(out["disp_preds"], b["disp"], b["valid"], recipe.gamma)
        kappa = kappa_schedule(step, recipe.steps, config.codyra_kappa)
        if kappa > 0 or step >= recipe.steps / 2:
            loss = loss + config.codyra_lambda * codyra_l1(model)
        return loss, {"epe_train": info["epe"]}

    def after_step(step: int) -> dict[str, float]:  # CoDyRA thresholding after the optimizer step
        codyra_threshold_(model, kappa_schedule(step, recipe.steps, config.codyra_kappa), config.codyra_rule)
        return {"active_rank": float(sum(int((m.lora_w != 0).sum()) for m in codyra_modules(model)))}

    result = train_supervised(
        model, step_fn, opt, steps=recipe.steps, scheduler=sched, grad_clip=recipe.clip, clip_parameters=params,
        after_step=after_step, state={"rng": rng}, out_dir=out_dir, resume=resume,
        checkpoint_every=checkpoint_every, progress=progress, plot_keys=("loss", "epe_train", "active_rank"),
        plot_name="training.png", desc=f"train {config.name}",
    )
    hist = result.history
    extra: dict[str, Any] = {
        "recipe": recipe.__dict__, "config": config.to_dict(), "encoder": str(encoder_path),
        "wall_s": float(hist[-1]["elapsed_s"]),
        "n_adapters": n_adapters, "train_samples": len(data), "train_seeds": [int(data.seeds[0]), int(data.seeds[-1])],
        "final_train_epe": float(np.mean([h["epe_train"] for h in hist[-50:]])),
        "active_rank_final": hist[-1]["active_rank"], "torch": torch.__version__, "device": str(dev),
    }
    if val is not None:
        extra["val_epe_x3_first32"] = val_epe(model, val)
    from latentstack.core.artifacts import describe_file

    return save_stereo_model(model, out_dir, extra, provenance={"encoder": describe_file(encoder_path)})
