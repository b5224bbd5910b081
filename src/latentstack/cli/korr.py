"""``lstack korr train | eval | compare | robosuite``: Koopman-guided residual RL on a frozen chunked base
(commands in ``koopman/cli.py``). The frozen base policy is ``--policy`` (old spelling ``--base``)."""
from __future__ import annotations

import argparse
from typing import Any

from latentstack.cli.common import (
    LazyCommand,
    add_config_arg,
    add_device_arg,
    add_flag,
    add_out_arg,
    add_ray_args,
    add_seed_arg,
)

__all__ = ["add_parser"]

_CMD = "latentstack.koopman.cli:"


def _base(p: argparse.ArgumentParser, help: str) -> None:
    add_flag(p, "--policy", dest="base", aliases=("--base",), default=None, metavar="DIR", help=help)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    k = subparsers.add_parser("korr", help="KORR: Koopman-guided residual RL on a frozen chunked base")
    ks = k.add_subparsers(dest="korr_cmd", required=True)

    t = ks.add_parser("train", help="train one residual with residual PPO → artifact (safetensors + config)")
    t.add_argument("--env", default="toy_insertion", choices=["toy_insertion", "robosuite"])
    t.add_argument("--kind", default="korr", choices=["korr", "korr_goal", "resip", "dyn"])
    add_seed_arg(t)
    t.add_argument("--iterations", type=int, default=40, help="PPO iterations")
    t.add_argument("--num-envs", type=int, default=128)
    t.add_argument("--num-steps", type=int, default=None, help="steps per iteration (default: episode length)")
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--hidden", type=int, default=256)
    t.add_argument("--lift", type=int, default=256)
    _base(t, "robosuite: frozen base policy directory")
    add_device_arg(t)
    add_ray_args(t)  # robosuite: the training envs stepped on Ray actors
    add_out_arg(t, required=True, help="artifact directory")
    t.set_defaults(func=LazyCommand(_CMD + "cmd_train"))

    e = ks.add_parser("eval", help="evaluate base and residual artifacts on held-out test seeds")
    e.add_argument("--env", default="toy_insertion", choices=["toy_insertion", "robosuite"])
    _base(e, "robosuite: frozen chunk base directory")
    e.add_argument("--residual", nargs="*", default=[], help="artifact directories (name=dir or dir)")
    e.add_argument("--perturb", default="both", choices=["on", "off", "both"])
    e.add_argument("--test-batches", type=int, default=8)
    e.add_argument("--episodes-per-batch", type=int, default=None, help="default: 512 toy, 8 robosuite")
    add_device_arg(e)
    add_ray_args(e)
    add_out_arg(e, help="write eval.json here")
    e.set_defaults(func=LazyCommand(_CMD + "cmd_eval"))

    c = ks.add_parser("compare", help="base vs trained residuals over several training seeds (config YAML)")
    add_config_arg(c, "configs/korr_toy.yaml", help="comparison config (YAML)")
    add_device_arg(c)
    add_ray_args(c)
    add_out_arg(c, "reports/korr", help="report directory")
    c.add_argument("--artifacts", default=None, help="also save every trained residual here")
    c.add_argument("--from-artifacts", default=None,
                   help="skip training: evaluate <dir>/<kind>_seed<s> residuals saved by an earlier --artifacts run")
    c.add_argument("--histories-from", nargs="*", default=[],
                   help="kind=artifact dirs written by `lstack korr train` (meta.history) to plot the diagnostic curves")
    c.set_defaults(func=LazyCommand(_CMD + "cmd_compare"))

    r = ks.add_parser("robosuite", help="robosuite Lift study: demos → chunked BC base → ResiP/KORR → nominal+perturbed")
    add_out_arg(r, "reports/korr", help="report directory")
    r.add_argument("--policies", default="policies", help="where the base and residual artifacts are written")
    r.add_argument("--kinds", default="resip,korr")
    r.add_argument("--demo-batches", type=int, default=1, help="8 scripted demos per batch")
    r.add_argument("--demo-noise", type=float, default=0.3)
    r.add_argument("--bc-steps", type=int, default=600)
    r.add_argument("--num-envs", type=int, default=8)
    r.add_argument("--horizon", type=int, default=60)
    r.add_argument("--iterations", type=int, default=26)
    r.add_argument("--epochs", type=int, default=10)
    r.add_argument("--train-seeds", default="0")
    r.add_argument("--test-batches", type=int, default=6)
    _base(r, "reuse this chunk base instead of training one")
    add_device_arg(r)
    add_ray_args(r)
    r.set_defaults(func=LazyCommand(_CMD + "cmd_robosuite"))
    return k
