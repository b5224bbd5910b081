"""``lstack steer collect | fit | eval | study | presets``: COAST conceptor steering (commands in
``steering/cli.py``)."""
from __future__ import annotations

import argparse
from typing import Any

from latentstack.cli.common import (
    LazyCommand,
    add_device_arg,
    add_episodes_arg,
    add_out_arg,
    add_policy_arg,
    add_ray_args,
    add_suite_arg,
)

__all__ = ["DEFAULT_SITES", "add_parser"]

DEFAULT_SITES = "expert.layer0,expert.layer1,expert.layer2,expert.layer3"
_CMD = "latentstack.steering.cli:"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``steer {collect,fit,eval,study,presets}``; returns the ``steer`` parser."""
    st = subparsers.add_parser("steer", help="COAST conceptor steering: collect rollouts, fit, evaluate")
    sub = st.add_subparsers(dest="steer_command", required=True)

    c = sub.add_parser("collect", help="unsteered rollouts on fit seeds, success labels, tapped expert layers")
    add_suite_arg(c)
    add_policy_arg(c)
    c.add_argument("--sites", default=DEFAULT_SITES, help="comma-separated latent site names")
    c.add_argument("--split", default="fit", choices=["fit", "train", "select"], help="never test")
    add_episodes_arg(c, 15, aliases=("--n",))
    c.add_argument("--offset", type=int, default=0, help="first seed index within the split")
    c.add_argument("--seed-start", type=int, default=None,
                   help="explicit seeds seed_start..seed_start+episodes_per_task-1")
    c.add_argument("--tasks", default=None, help="comma-separated subset of the suite's tasks")
    c.add_argument("--keep", default="tokens", choices=["tokens", "mean"],
                   help="store every action token (repo preset) or their mean (paper preset only)")
    add_device_arg(c)
    add_out_arg(c, required=True, help="rollouts .safetensors")
    c.set_defaults(func=LazyCommand(_CMD + "cmd_collect"))

    f = sub.add_parser("fit", help="fit C_success AND NOT C_failure per site/strategy/aperture")
    f.add_argument("--rollouts", required=True)
    f.add_argument("--preset", default="paper", choices=["paper", "repo"])
    f.add_argument("--sites", default=None, help="default: every site in the rollouts")
    f.add_argument("--alphas", default="0.1,0.5,1,2,10")
    f.add_argument("--strategies", default="global,per_step")
    f.add_argument("--per-task", action="store_true", help="one fit per task (spec default) instead of pooled")
    f.add_argument("--beta", type=float, default=0.3, help="default beta recorded in the card")
    f.add_argument("--control-seed", type=int, default=0, help="seed recorded for random_matched")
    add_out_arg(f, required=True, help="artifact directory, e.g. policies/<name>/conceptors")
    f.set_defaults(func=LazyCommand(_CMD + "cmd_fit"))

    e = sub.add_parser("eval", help="paired base / coast / controls on one split")
    add_suite_arg(e)
    add_policy_arg(e)
    e.add_argument("--artifact", required=True, help="artifact stem (.safetensors + .json)")
    e.add_argument("--beta", type=float, default=None)
    e.add_argument("--controls", default="shrinkage,random_matched,linear",
                   help="shrinkage and random_matched are always run (spec §9); add linear / positive_only")
    e.add_argument("--linear-magnitude", type=float, default=1.0)
    e.add_argument("--control-seed", type=int, default=0)
    add_episodes_arg(e, 10)
    e.add_argument("--split", default="select", choices=["select", "test"])
    e.add_argument("--rollouts", default=None, help="stored unsteered states for the offline gate diagnostic")
    add_device_arg(e)
    add_out_arg(e, help="report directory")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(func=LazyCommand(_CMD + "cmd_eval"))

    y = sub.add_parser("study", help="select (heuristic + grid on select seeds), then base/COAST/controls on test seeds")
    add_suite_arg(y)
    add_policy_arg(y, "policies/vla_metaworld_mt6_weak")
    y.add_argument("--rollouts", required=True, help="fit rollouts from `steer collect` (diagnostics, CAA scale)")
    y.add_argument("--conceptors", required=True, help="directory of `steer fit` artifacts")
    y.add_argument("--preset", default="paper", choices=["paper", "repo"])
    y.add_argument("--sites", default=DEFAULT_SITES)
    y.add_argument("--betas", default="0.1,0.3")
    y.add_argument("--caa-scales", default="0.1,0.3", help="CAA magnitude = scale x mean |h| at the site")
    y.add_argument("--select-episodes", type=int, default=10)
    y.add_argument("--test-episodes", type=int, default=30)
    y.add_argument("--control-seed", type=int, default=0)
    y.add_argument("--overhead-reps", type=int, default=300)
    add_ray_args(y, workers=2)
    y.add_argument("--stage", default="all", choices=["all", "select", "test", "overhead"],
                   help="test reuses <out>/selection.json (frozen before any test seed runs); overhead re-times "
                        "the frozen conditions and updates <out>/coast.json's overhead fields only")
    y.add_argument("--ship", default=None, help="copy the chosen artifacts (+ CARD.md) here, e.g. policies/<name>/conceptors")
    add_device_arg(y)
    add_out_arg(y, "reports/coast", help="report directory")
    y.add_argument("--quiet", action="store_true")
    y.set_defaults(func=LazyCommand(_CMD + "cmd_study"))

    q = sub.add_parser("presets", help="offline paper-vs-repo comparison of fitted global conceptors (D1-D3)")
    q.add_argument("--conceptors", required=True)
    q.add_argument("--sites", default=DEFAULT_SITES)
    q.add_argument("--alphas", default="0.5,1,10")
    add_out_arg(q, required=True, help="JSON file")
    q.set_defaults(func=LazyCommand(_CMD + "cmd_presets"))
    return st
