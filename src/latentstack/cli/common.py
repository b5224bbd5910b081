"""The flags every ``lstack`` component shares, defined once (same name, same meaning, same help everywhere).

- ``--device``  where models run / train (``cpu`` | ``cuda`` | ``cuda:N`` | ``mps``), checked when parsed;
- ``--out``     what a command writes (report directory, artifact directory, rollouts file);
- ``--data``    a dataset a command reads (or, for ``record`` / ``gen-data``, writes);
- ``--policy``  an action policy (checkpoint directory, ``name=dir``, ``random:<dir>``, a registered name);
- ``--model``   a perception model (``name=checkpoint``);
- ``--seed``, ``--config``, ``--suite``, ``--episodes-per-task``, ``--threads``.

Old spellings that a README, report or script still uses stay as hidden aliases that print a deprecation
note (:func:`add_flag` ``aliases=``). This module imports neither torch nor any model stack: ``lstack --help``
and ``lstack <component> --help`` stay instant. Commands are referenced lazily (:class:`LazyCommand`), so a
component's heavy modules load only when that command runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

from latentstack.core.device import DEVICE_HELP, DeviceError, check_device, parse_device

__all__ = [
    "DEFAULT_POLICY",
    "DEFAULT_SUITE",
    "LazyCommand",
    "add_config_arg",
    "add_data_arg",
    "add_device_arg",
    "add_episodes_arg",
    "add_flag",
    "add_model_arg",
    "add_out_arg",
    "add_policy_arg",
    "add_seed_arg",
    "add_suite_arg",
    "add_threads_arg",
    "device_or_exit",
]

DEFAULT_SUITE = "metaworld_mt6"
DEFAULT_POLICY = "policies/vla_metaworld_mt6"


class _DeprecatedAlias(argparse.Action):
    """Stores like the flag it aliases and says once, on stderr, which spelling to use instead."""

    def __init__(self, option_strings: Sequence[str], dest: str, preferred: str = "", append: bool = False,
                 **kw: Any) -> None:
        self.preferred, self.append = preferred, append
        super().__init__(option_strings, dest, **kw)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"lstack: {option_string} is deprecated, use {self.preferred}", file=sys.stderr)
        if self.nargs == 0:
            setattr(namespace, self.dest, self.const)
        elif self.append:  # alias of an action="append" flag: same list
            setattr(namespace, self.dest, [*(getattr(namespace, self.dest, None) or []), values])
        else:
            setattr(namespace, self.dest, values)


def add_flag(p: argparse.ArgumentParser | Any, flag: str, *, aliases: Sequence[str] = (), required: bool = False,
             **kw: Any) -> argparse.Action:
    """``p.add_argument(flag, **kw)`` plus hidden deprecated ``aliases`` that fill the same ``dest``.

    ``required`` with aliases is enforced by a required mutually exclusive group, so the usual argparse
    error names the flag (never the alias) and either spelling satisfies it."""
    dest = kw.pop("dest", None) or flag.lstrip("-").replace("-", "_")
    target = p.add_mutually_exclusive_group(required=True) if required and aliases else p
    action = target.add_argument(flag, dest=dest, required=required and not aliases, **kw)
    for old in aliases:
        extra: dict[str, Any] = {}
        if kw.get("action") == "store_true":
            extra = {"nargs": 0, "const": True}
        elif kw.get("action") == "append":
            extra = {"append": True}
        elif kw.get("nargs") is not None:
            extra = {"nargs": kw["nargs"]}
        target.add_argument(old, dest=dest, action=_DeprecatedAlias, preferred=flag, help=argparse.SUPPRESS,
                            default=argparse.SUPPRESS, type=kw.get("type"), **extra)
    return action


def _device_type(value: str) -> str:
    try:
        return parse_device(value)
    except DeviceError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_device_arg(p: Any, default: str = "cpu", help: str | None = None) -> argparse.Action:
    """``--device``: syntax checked while parsing; availability checked by :func:`device_or_exit` when run."""
    return p.add_argument("--device", type=_device_type, default=default,
                          help=help or f"where the model runs: {DEVICE_HELP}")


def device_or_exit(device: str) -> str:
    """The checked device string, or exit 2 with one line (e.g. ``cuda`` on a machine without CUDA)."""
    try:
        return check_device(device)
    except DeviceError as exc:
        raise SystemExit(f"lstack: {exc}") from None


def add_out_arg(p: Any, default: str | None = None, *, required: bool = False, help: str = "output directory",
                aliases: Sequence[str] = ()) -> argparse.Action:
    return add_flag(p, "--out", aliases=aliases, required=required, default=default, help=help)


def add_data_arg(p: Any, default: str | None = None, *, required: bool = False, help: str = "dataset directory",
                 aliases: Sequence[str] = ()) -> argparse.Action:
    return add_flag(p, "--data", aliases=aliases, required=required, default=default, help=help)


def add_policy_arg(p: Any, default: str | None = DEFAULT_POLICY, *, repeat: bool = False, required: bool = False,
                   help: str | None = None, aliases: Sequence[str] = ()) -> argparse.Action:
    """``--policy``: a checkpoint dir, ``random:<dir>`` (untrained twin) or a registered name; ``repeat``: a list
    of ``name=dir`` conditions."""
    text = help or ("checkpoint dir, name=dir, or random:<dir> (untrained twin); repeat for paired conditions"
                    if repeat else "policy checkpoint directory, random:<dir>, or a registered name")
    if repeat:
        return add_flag(p, "--policy", aliases=aliases, required=required, action="append",
                        default=None if required else default, help=text)
    return add_flag(p, "--policy", aliases=aliases, required=required, default=default, help=text)


def add_model_arg(p: Any, *, help: str = "NAME=CHECKPOINT of a model to evaluate (repeatable)") -> argparse.Action:
    return p.add_argument("--model", action="append", default=[], metavar="NAME=CKPT", help=help)


def add_seed_arg(p: Any, default: int | None = 0, help: str = "random seed") -> argparse.Action:
    return p.add_argument("--seed", type=int, default=default, help=help)


def add_config_arg(p: Any, default: str | None = None, help: str = "config file (YAML or JSON)") -> argparse.Action:
    return p.add_argument("--config", default=default, help=help)


def add_suite_arg(p: Any, default: str = DEFAULT_SUITE) -> argparse.Action:
    return p.add_argument("--suite", default=default, help=f"evaluation suite name or YAML (default {default})")


def add_episodes_arg(p: Any, default: int | None, *, aliases: Sequence[str] = (),
                     help: str = "episodes per task") -> argparse.Action:
    return add_flag(p, "--episodes-per-task", aliases=aliases, type=int, default=default, help=help)


def add_threads_arg(p: Any, default: int | None = 1, *, aliases: Sequence[str] = (),
                    help: str = "torch CPU threads") -> argparse.Action:
    return add_flag(p, "--threads", aliases=aliases, type=int, default=default, help=help)


def add_ray_args(p: Any, workers: int = 1) -> None:
    """``--workers`` and ``--ray-address``: evaluation shards as Ray tasks (``sim.evaluation.evaluate_parallel``)."""
    add_flag(p, "--workers", type=int, default=workers,
             help="parallel evaluation workers (Ray actors; 1 = in-process, no Ray)")
    add_flag(p, "--ray-address", default=None,
             help="Ray cluster to run on (ray://host:10001 or host:6379; default $RAY_ADDRESS, else a local Ray "
                  "with --workers CPUs)")


class LazyCommand:
    """``set_defaults(func=LazyCommand("pkg.module:cmd"))``: the module is imported when the command runs."""

    def __init__(self, target: str) -> None:
        module, _, attr = target.partition(":")
        if not module or not attr:
            raise ValueError(f"LazyCommand target must be 'module:function', got {target!r}")
        self.target = target
        self.__name__ = attr

    def resolve(self) -> Any:
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)

    def __call__(self, args: argparse.Namespace, **kw: Any) -> Any:
        if isinstance(getattr(args, "device", None), str):  # every --device: fail early, in one line
            args.device = device_or_exit(args.device)
        return self.resolve()(args, **kw)

    def __repr__(self) -> str:
        return f"LazyCommand({self.target!r})"
