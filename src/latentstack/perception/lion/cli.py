"""``lstack lion gen-data | train | eval`` commands; the flags are in :mod:`latentstack.cli.lion` (torch-free)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["cmd_eval", "cmd_gen_data", "cmd_train"]


def cmd_gen_data(args: argparse.Namespace) -> int:
    from .train import load_or_generate

    for split in ("train", "val", "test"):
        scans = load_or_generate(args.data, split, getattr(args, split))
        print(f"{split}: {len(scans)} scans -> {Path(args.data) / (split + '.npz')}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from latentstack.core.device import call_with_device

    from .configuration_lion import get_preset
    from .train import TrainConfig, load_or_generate, train_detector

    torch.set_num_threads(args.threads)
    scans = load_or_generate(args.data, "train", args.train_scans)
    tcfg = TrainConfig(iterations=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    _, summary = call_with_device(train_detector, args.device, "LION training", get_preset(args.preset), tcfg,
                                  scans, args.out)
    print(json.dumps(summary, indent=1))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from latentstack.core.device import call_with_device

    from .report import run_evaluation

    torch.set_num_threads(args.threads)
    models = {}
    for spec in args.model:
        if "=" not in spec:
            raise SystemExit(f"--model expects NAME=CKPT, got {spec!r}")
        name, path = spec.split("=", 1)
        models[name] = path
    call_with_device(run_evaluation, args.device, "LION evaluation", models, clustering=not args.no_clustering,
                     data_dir=args.data, split=args.split, num_scans=args.scans, out_dir=Path(args.out))
    return 0
