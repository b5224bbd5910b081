"""CARD.md for a shipped ACT artifact, rendered from its ``train_log.json`` and a paired ``eval.json``
(numbers are copied from those files, never typed in)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from latentstack.core.card import bullet_lines, commands_lines, evaluation_lines, provenance_lines, render


def render_act_card(name: str, config: dict[str, Any], train_log: dict[str, Any], evaluation: dict[str, Any],
                    commands: list[str], notes: list[str], artifact: dict[str, Any] | None = None) -> str:
    """``config``: LeRobot's ACT config (``lerobot/config.json``); ``artifact``: the artifact's own
    ``config.json`` document (weights dtype, file hashes: the card's ``## Artifact`` block)."""
    tc = train_log["train_config"]
    out_dir = Path(tc["out_dir"])
    size_mb = sum(p.stat().st_size for p in out_dir.rglob("*.safetensors")) / 2**20 \
        if out_dir.is_dir() else float("nan")
    stored = (artifact or {}).get("config", {}).get("weights_dtype", "float32")
    stored = "fp32" if stored == "float32" else stored
    lines = [
        f"# {name}",
        "",
        "LeRobot 0.4.4's ACT (`lerobot.policies.act.ACTPolicy`, unmodified) in a small config, trained here, behind "
        "`latentstack.policies.lerobot_act.ACTAdapter` (Policy protocol + latent sites `decoder.layer{i}`, "
        "`decoder.out`, `encoder.out`, batch-first). Load: `make_policy(\"policies/" + name + "\")`.",
        "",
        "## How it was made",
        "",
        (f"- **data**: `{tc['dataset_root']}` (LeRobotDataset, read with LeRobot's loader): {train_log['episodes']} "
        f"scripted-expert episodes, {train_log['frames']} frames, tasks {', '.join(train_log['tasks'])}"),
        (f"- **model**: {config['vision_backbone']} from scratch (`pretrained_backbone_weights=None`), image 64x64, "
        f"dim_model {config['dim_model']}, {config['n_heads']} heads, ffn {config['dim_feedforward']}, "
        f"{config['n_encoder_layers']} encoder + {config['n_decoder_layers']} decoder layers, "
        f"VAE {'on' if config['use_vae'] else 'off'}, chunk {config['chunk_size']} (executes {config['n_action_steps']}); "
        f"{train_log['parameters'] / 1e6:.2f} M parameters, weights {size_mb:.1f} MiB (stored {stored}; the ResNet18 is 11.2 M of them)"),
        "- **language**: none — ACT has no language input; the task is implied by the image (one object per task)",
        ("- **normalisation**: LeRobot processors saved next to the weights (state/action mean-std from the demos; "
        "images ImageNet mean-std, as LeRobot's `use_imagenet_stats` default)"),
        (f"- **training**: {train_log['steps_done']} steps at batch {tc['batch_size']} (stopped by the "
        f"{tc['time_budget_s'] / 60:.0f}-min wall budget), AdamW lr {config['optimizer_lr']} (backbone "
        f"{config['optimizer_lr_backbone']}), wd {config['optimizer_weight_decay']}, grad clip {tc['grad_clip']}, "
        f"L1 loss; seed {tc['seed']}; {train_log['wall_s'] / 60:.1f} min on a shared, loaded 2-core CPU, "
        f"{tc['num_threads']} torch thread(s); final L1 (mean of last 10 logs) {train_log['final_l1_loss_mean_last10']:.4f} "
        "(`loss_curve.png`)"),
        "",
    ]
    return render(lines, commands_lines(commands),
                  evaluation_lines(evaluation, "`untrained` = same config and normalisation, random weights, same run.")
                  + ["Files: `eval/eval.json`, `eval/eval.png`."],
                  bullet_lines(notes, "Notes"), provenance_lines(artifact) if artifact else [])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="render CARD.md of a shipped ACT artifact")
    ap.add_argument("artifact")
    ap.add_argument("--eval", required=True)
    ap.add_argument("--command", action="append", default=[])
    ap.add_argument("--note", action="append", default=[])
    a = ap.parse_args(argv)
    art = Path(a.artifact)
    doc = json.loads((art / "config.json").read_text())
    lerobot_cfg = json.loads((art / doc["config"]["lerobot_dir"] / "config.json").read_text())
    card = render_act_card(art.name, lerobot_cfg, json.loads((art / "train_log.json").read_text()),
                           json.loads(Path(a.eval).read_text()), a.command, a.note, artifact=doc)
    (art / "CARD.md").write_text(card)
    print(card)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
