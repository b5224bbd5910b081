"""``lstack stereo gen-data | pretrain | train | eval`` commands; the flags are in :mod:`latentstack.cli.stereo`
(torch-free). Heavy imports inside the commands."""
from __future__ import annotations

import argparse
from pathlib import Path

from latentstack.core.device import call_with_device

__all__ = ["cmd_eval", "cmd_gen_data", "cmd_pretrain", "cmd_train"]


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def cmd_gen_data(args: argparse.Namespace) -> int:
    from latentstack.sim.stereo_scenes import StereoSceneConfig, generate_split

    cfg = StereoSceneConfig(height=args.height, width=args.width)
    for split, n in (("test", args.test), ("val", args.val), ("train", args.train)):
        if n > 0:
            print(generate_split(split, n, Path(args.data) / f"{split}.npz", cfg))
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from .data import StereoSplit
    from .train import TrainRecipe, pretrain_mono

    _threads(args.threads)
    data = StereoSplit.load(Path(args.data) / "train.npz")
    recipe = TrainRecipe(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed, threads=args.threads)
    print(call_with_device(pretrain_mono, args.device, "stereo pretraining", data, args.out, recipe))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import dataclasses

    from .configuration_stereo import PRESETS
    from .data import StereoSplit
    from .train import TrainRecipe, train_stereo

    _threads(args.threads)
    if args.preset not in PRESETS:
        raise SystemExit(f"unknown preset {args.preset!r}; choose one of {sorted(PRESETS)}")
    config = dataclasses.replace(PRESETS[args.preset], train_iters=args.iters, valid_iters=args.iters)
    data = StereoSplit.load(Path(args.data) / "train.npz")
    val = StereoSplit.load(Path(args.data) / "val.npz", limit=32)
    recipe = TrainRecipe(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed, threads=args.threads)
    print(call_with_device(train_stereo, args.device, "stereo training", config, args.encoder, data, args.out, recipe,
                           val=val))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .data import StereoSplit
    from .evaluate import evaluate_methods, paired_wins, plot_report, write_json
    from .model import load_stereo_model

    _threads(args.threads)
    models, paths = {}, {}
    for spec in args.model:
        name, _, path = spec.partition("=")
        if not path:
            raise SystemExit(f"--model wants name=checkpoint_dir, got {spec!r}")
        models[name] = load_stereo_model(path, device=args.device)
        paths[name] = path
    data = StereoSplit.load(Path(args.data) / f"{args.split}.npz", limit=args.limit)
    res = evaluate_methods(models, data, tuple(args.turbidity), iters=args.iters, init_control=args.init_control,
                           batch_size=args.batch_size)
    res.update(split=args.split, iters=args.iters, checkpoints=paths, command=args.command_line or None,
               d1_definition="d1_kitti: error > 3 px and > 5 % of the true disparity; bad1 (> 1 px) is the "
                             "ETH3D/FlyingThings D1",
               masks={"noc": "non-occluded (in the right view, L/R-consistent)",
                      "large": "noc & true disparity > 12 px",
                      "textureless": "noc & clean-image local std (7x7) < 0.012"})
    import cv2
    import mujoco
    import torch

    res["versions"] = {"opencv": cv2.__version__, "torch": torch.__version__, "mujoco": mujoco.__version__}
    first = next(iter(models), None)
    res["paired"] = {}
    for key, per in res["per_image_epe"].items():
        if first is None:
            continue
        res["paired"][key] = {f"{first}_vs_{other}": paired_wins(per, first, other) for other in res["methods"]
                              if other != first}
    if "x3" in res["tables"]:
        x3 = res["tables"]["x3"]
        res["epe_turbidity_x3"] = {m: x3[m]["disparity"]["noc"]["epe"] for m in res["methods"]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(res, out / "stereo.json")
    plot_report(res, out / "stereo_turbidity.png")
    for k, t in res["tables"].items():
        row = "  ".join(f"{m}: EPE {t[m]['disparity']['noc']['epe']:.3f} bad1 {t[m]['disparity']['noc']['bad1']:.3f}"
                        for m in res["methods"])
        print(f"k={k}  {row}")
    print(f"report -> {out / 'stereo.json'}")
    return 0
