"""``lstack lion gen-data | train | eval``. Wire with ``add_lion_parser(subparsers)`` in ``latentstack.cli``."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["add_lion_parser"]


def add_lion_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("lion", help="LION 3-D LiDAR detection: synthetic data, training, AP evaluation")
    sub = p.add_subparsers(dest="lion_cmd", required=True)

    g = sub.add_parser("gen-data", help="generate the MuJoCo LiDAR splits (npz, documented format)")
    g.add_argument("--data-dir", default="data/lion")
    g.add_argument("--train", type=int, default=400)
    g.add_argument("--val", type=int, default=50)
    g.add_argument("--test", type=int, default=100)
    g.set_defaults(func=cmd_gen_data)

    t = sub.add_parser("train", help="train a LION detector preset from scratch")
    t.add_argument("--preset", default="lion_tiny")
    t.add_argument("--out", required=True, help="checkpoint directory (safetensors + config.json + train_log)")
    t.add_argument("--data-dir", default="data/lion")
    t.add_argument("--train-scans", type=int, default=400)
    t.add_argument("--iterations", type=int, default=400)
    t.add_argument("--batch-size", type=int, default=4)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=1)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="BEV/3-D AP R40 on held-out test scans, baselines in the same run")
    e.add_argument("--model", action="append", default=[], metavar="NAME=CKPT",
                   help="detector checkpoint(s) to evaluate (repeatable); e.g. lion=policies/lion_tiny")
    e.add_argument("--no-clustering", action="store_true", help="skip the non-learned clustering baseline")
    e.add_argument("--data-dir", default="data/lion")
    e.add_argument("--split", default="test", choices=["val", "test"])
    e.add_argument("--scans", type=int, default=100)
    e.add_argument("--out", default="reports/lion", help="report directory (lion.json, PNG, summary.md)")
    e.add_argument("--threads", type=int, default=1)
    e.set_defaults(func=cmd_eval)
    return p


def cmd_gen_data(args: argparse.Namespace) -> int:
    from .train import load_or_generate

    for split in ("train", "val", "test"):
        scans = load_or_generate(args.data_dir, split, getattr(args, split))
        print(f"{split}: {len(scans)} scans -> {Path(args.data_dir) / (split + '.npz')}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from .configuration_lion import get_preset
    from .train import TrainConfig, load_or_generate, train_detector

    torch.set_num_threads(args.threads)
    scans = load_or_generate(args.data_dir, "train", args.train_scans)
    tcfg = TrainConfig(iterations=args.iterations, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    _, summary = train_detector(get_preset(args.preset), tcfg, scans, args.out)
    print(json.dumps(summary, indent=1))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from .report import run_evaluation

    torch.set_num_threads(args.threads)
    models = {}
    for spec in args.model:
        if "=" not in spec:
            raise SystemExit(f"--model expects NAME=CKPT, got {spec!r}")
        name, path = spec.split("=", 1)
        models[name] = path
    run_evaluation(models, clustering=not args.no_clustering, data_dir=args.data_dir, split=args.split,
                   num_scans=args.scans, out_dir=Path(args.out))
    return 0
