"""``lstack unilion train | eval`` commands; the flags are in :mod:`latentstack.cli.unilion` (torch-free)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["cmd_card", "cmd_eval", "cmd_train"]

# the two trained kinds: UniLION with modality dropout over every mode, and the LION-only model (same
# architecture and recipe, L tokens only) the report compares it with
KINDS: dict[str, tuple[str, ...]] = {"unilion": ("L", "LT", "LC", "LCT"), "lion_only": ("L",)}


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from latentstack.core.device import call_with_device
    from latentstack.sim.unilion_scenes import camera_calibration, load_split

    from .configuration_unilion import get_preset
    from .train import UniTrainConfig, train_unilion

    torch.set_num_threads(args.threads)
    frames, scfg = load_split(Path(args.data) / "train")
    modes = KINDS[args.kind]
    tcfg = UniTrainConfig(iterations=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                          modes=modes, mode_probs=tuple(1.0 / len(modes) for _ in modes))
    intr, c2e = camera_calibration(scfg)
    cfg = get_preset(args.preset)
    if tuple(cfg.image_size) != tuple(scfg.image_size) or cfg.num_cameras != len(intr):
        raise SystemExit(f"data cameras {len(intr)} x {scfg.image_size} do not match preset {args.preset} "
                         f"({cfg.num_cameras} x {cfg.image_size})")
    _, summary = call_with_device(train_unilion, args.device, "UniLION training", cfg, tcfg, frames, intr, c2e,
                                  args.out, extra={"kind": args.kind, "data": str(args.data)})
    print(json.dumps(summary, indent=1))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from latentstack.core.device import call_with_device

    from .report import run_evaluation

    torch.set_num_threads(args.threads)
    call_with_device(run_evaluation, args.device, "UniLION evaluation", args.unilion, args.lion_only,
                     clustering=not args.no_clustering, data_dir=args.data, split=args.split,
                     out_dir=Path(args.out), bootstrap=args.bootstrap)
    return 0


def cmd_card(args: argparse.Namespace) -> int:
    from .card import write_unilion_cards

    for path in write_unilion_cards(args.report, args.artifacts):
        print(f"wrote {path}")
    return 0
