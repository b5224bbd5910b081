"""``lstack act train`` — train LeRobot's ACT (small preset) and save it LeRobot's way.

The flags are defined in :mod:`latentstack.cli.act` (torch-free, shared with ``lstack train --type act``).
"""
from __future__ import annotations

import argparse

__all__ = ["cmd_train"]


def cmd_train(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from latentstack.core.device import device_kwargs
    from latentstack.policies.lerobot_act.train import ACTTrainConfig, train_act

    out = train_act(ACTTrainConfig(dataset_root=args.data, out_dir=args.out, repo_id=args.repo_id,
                                   preset=args.preset, steps=args.steps, time_budget_s=args.time_budget_s,
                                   batch_size=args.batch_size, seed=args.seed, num_threads=args.threads,
                                   max_episodes=args.max_episodes,
                                   **device_kwargs(ACTTrainConfig, args.device, "ACT training")))
    print(f"saved {out}")
    return 0
