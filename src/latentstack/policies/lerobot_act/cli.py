"""``lstack act train`` — train LeRobot's ACT (small preset) on a LeRobotDataset and save it LeRobot's way."""
from __future__ import annotations

import argparse


def _cmd_train(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from latentstack.policies.lerobot_act.train import ACTTrainConfig, train_act

    out = train_act(ACTTrainConfig(dataset_root=args.dataset, out_dir=args.out, repo_id=args.repo_id,
                                   preset=args.preset, steps=args.steps, time_budget_s=args.time_budget_s,
                                   batch_size=args.batch_size, seed=args.seed, num_threads=args.threads,
                                   max_episodes=args.max_episodes))
    print(f"saved {out}")
    return 0


def add_act_parser(sub) -> None:
    p = sub.add_parser("act", help="LeRobot ACT adapter: train a small ACT (evaluate with `lstack eval --policy <dir>`)")
    acts = p.add_subparsers(dest="act_command", required=True)
    t = acts.add_parser("train", help="train LeRobot ACT on a LeRobotDataset (tqdm bar + loss plot)")
    t.add_argument("--dataset", required=True, help="LeRobotDataset root, e.g. data/demos_metaworld_mt6")
    t.add_argument("--out", default="policies/act_metaworld_mt6")
    t.add_argument("--repo-id", default=None)
    t.add_argument("--preset", default="act_small", choices=["act_small", "act_tiny"])
    t.add_argument("--steps", type=int, default=100_000)
    t.add_argument("--time-budget-s", type=float, default=14 * 60.0)
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--max-episodes", type=int, default=None)
    t.set_defaults(func=_cmd_train)
