"""``lstack train``: one command for every trainer, dispatching on the config's ``type``.

``--config`` (YAML or JSON) names the model type at its top (``type: act``) or in a ``policy:`` section
(``policy: {type: vla, ...}``); ``--type`` says it without a config. The VLA recipes in ``configs/``
(``policy:`` + ``train:`` sections, no ``type``) and the old ``lstack train --dataset ...`` form stay the VLA.

=========  ======================================================  ====================================
type       trainer                                                 same flags as
=========  ======================================================  ====================================
``vla``    ``latentstack.policies.train`` (behaviour cloning)      (this command's historical form)
``act``    ``latentstack.policies.lerobot_act.train``              ``lstack act train``
``lion``   ``latentstack.perception.lion.train``                   ``lstack lion train``
``stereo`` ``latentstack.perception.stereo.train`` (stage B)       ``lstack stereo train``
=========  ======================================================  ====================================

For ``act`` / ``lion`` / ``stereo`` a config holds ``type`` and a ``train:`` mapping of that command's flags
(``batch_size: 8`` or ``batch-size: 8``); flags given on the command line win over the config, the config
over the command's defaults. A flag that does not apply to the type is refused.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from latentstack.cli.common import (
    LazyCommand,
    add_config_arg,
    add_data_arg,
    add_device_arg,
    add_flag,
    add_out_arg,
    add_seed_arg,
    add_threads_arg,
)

__all__ = ["TRAINER_TYPES", "add_parser", "cmd_train", "config_type"]

# type -> (command run with the merged namespace, the component parser's argument builder or None for vla)
TRAINER_TYPES: dict[str, str] = {
    "vla": "latentstack.cli.train:_train_vla",
    "act": "latentstack.policies.lerobot_act.cli:cmd_train",
    "lion": "latentstack.perception.lion.cli:cmd_train",
    "stereo": "latentstack.perception.stereo.cli:cmd_train",
}

# flags of the VLA trainer (dest names); the others' come from their component parsers
_VLA_DESTS = ("data", "repo_id", "out", "config", "policy", "steps", "batch_size", "lr", "seed", "chunk_size",
              "checkpoint_every", "max_episodes", "threads", "time_budget_s", "no_resume", "no_progress", "device")
_META_DESTS = ("type", "config")


def _component_builder(kind: str) -> Callable[[argparse.ArgumentParser], None]:
    if kind == "act":
        from latentstack.cli.act import add_act_train_arguments

        return add_act_train_arguments
    if kind == "lion":
        from latentstack.cli.lion import add_lion_train_arguments

        return add_lion_train_arguments
    if kind == "stereo":
        from latentstack.cli.stereo import add_stereo_train_arguments

        return add_stereo_train_arguments
    raise KeyError(kind)


def add_parser(sub: Any) -> argparse.ArgumentParser:
    t = sub.add_parser(
        "train", help="train a model; --config's type (vla | act | lion | stereo) picks the trainer",
        description=__doc__.split("\n\n")[0] + " Types: " + ", ".join(TRAINER_TYPES) + ".",
    )
    # every flag defaults to None here: the dispatcher tells "given" from "not given" and fills the trainer's
    # own defaults (one place for them: the component parser / the VLA TrainConfig)
    add_config_arg(t, help="YAML/JSON config; its `type` (or `policy: {type: ...}`) picks the trainer")
    t.add_argument("--type", choices=sorted(TRAINER_TYPES), default=None,
                   help="trainer type when no config names one (default vla)")
    add_data_arg(t, help="training data: a LeRobotDataset root (vla, act) or a split directory (lion, stereo)",
                 aliases=("--dataset",))
    add_out_arg(t, help="output directory")
    add_device_arg(t, default=None, help="where training runs: cpu | cuda | cuda:N | mps (default cpu)")
    add_seed_arg(t, None)
    t.add_argument("--steps", type=int, default=None, help="optimizer steps")
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--lr", type=float, default=None)
    add_threads_arg(t, None, aliases=("--num-threads",), help="torch CPU threads (vla: 0 = adaptive, the default)")
    t.add_argument("--time-budget-s", type=float, default=None, help="checkpoint and stop after this long")
    t.add_argument("--max-episodes", type=int, default=None, help="vla, act: only the first N episodes")
    t.add_argument("--repo-id", default=None, help="vla, act: dataset repo id (default local/<root name>)")
    t.add_argument("--preset", default=None, help="act, lion, stereo: model preset")
    g = t.add_argument_group("vla only")
    g.add_argument("--policy", default=None, help="VLA preset name (default vla_small)")
    g.add_argument("--chunk-size", type=int, default=None)
    g.add_argument("--checkpoint-every", type=int, default=None)
    g.add_argument("--no-resume", action="store_true", default=None)
    g.add_argument("--no-progress", action="store_true", default=None)
    g = t.add_argument_group("lion only")
    g.add_argument("--train-scans", type=int, default=None)
    add_flag(g, "--iterations", dest="steps", help=argparse.SUPPRESS, type=int, default=None)
    g = t.add_argument_group("stereo only")
    g.add_argument("--encoder", default=None, help="pretrained encoder (`lstack stereo pretrain`)")
    g.add_argument("--iters", type=int, default=None, help="refinement iterations")
    t.set_defaults(func=LazyCommand("latentstack.cli.train:cmd_train"))
    return t


def _load_config(path: str) -> dict[str, Any]:
    from latentstack.core.paths import find_config

    try:
        p = find_config(path)
    except FileNotFoundError as exc:
        raise SystemExit(f"lstack train: {exc}") from None
    text = p.read_text()
    if p.suffix == ".json":
        doc = json.loads(text)
    else:
        import yaml

        doc = yaml.safe_load(text)
    if not isinstance(doc, dict):
        raise SystemExit(f"lstack train: {path} is not a mapping")
    return doc


def config_type(doc: dict[str, Any]) -> str | None:
    """The model type a config names (top-level ``type``, else ``policy.type``); ``None`` when it names none."""
    if doc.get("type"):
        return str(doc["type"])
    pol = doc.get("policy")
    if isinstance(pol, dict) and pol.get("type"):
        return str(pol["type"])
    return None


def _given(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if v is not None and k not in ("func", "command")}


def cmd_train(args: argparse.Namespace) -> int:
    doc = _load_config(args.config) if args.config else {}
    named = config_type(doc)
    if args.type and named and args.type != named:
        raise SystemExit(f"lstack train: --type {args.type} but {args.config} says type {named!r}")
    kind = args.type or named or "vla"
    if kind not in TRAINER_TYPES:
        raise SystemExit(f"lstack train: no trainer for type {kind!r}; known: {sorted(TRAINER_TYPES)}")
    given = _given(args)
    if kind == "vla":
        ns = _vla_namespace(given)
    else:
        ns = _component_namespace(kind, doc, given)
    return int(LazyCommand(TRAINER_TYPES[kind])(ns) or 0)


def _refuse_foreign(kind: str, given: dict[str, Any], allowed: set[str]) -> None:
    foreign = sorted(set(given) - allowed - set(_META_DESTS))
    if foreign:
        flags = ", ".join("--" + k.replace("_", "-") for k in foreign)
        raise SystemExit(f"lstack train: {flags} do(es) not apply to type {kind}; "
                         f"its flags: {', '.join('--' + a.replace('_', '-') for a in sorted(allowed))}")


def _component_namespace(kind: str, doc: dict[str, Any], given: dict[str, Any]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"lstack train --type {kind}", add_help=False)
    _component_builder(kind)(p)
    actions = [a for a in p._actions if a.dest != argparse.SUPPRESS]  # argparse keeps no public list
    values = {a.dest: a.default for a in actions if a.default is not argparse.SUPPRESS}
    allowed = set(values)
    _refuse_foreign(kind, given, allowed)
    unknown_top = sorted(set(doc) - {"type", "train", "description"})
    if unknown_top:
        raise SystemExit(f"lstack train: config keys {unknown_top} are not understood for type {kind} "
                         "(expected: type, train, description)")
    section = doc.get("train") or {}
    if not isinstance(section, dict):
        raise SystemExit("lstack train: the config's `train:` must be a mapping of flags")
    from_config = {str(k).replace("-", "_"): v for k, v in section.items()}
    bad = sorted(set(from_config) - allowed)
    if bad:
        raise SystemExit(f"lstack train: config train keys {bad} are not flags of type {kind}; known: {sorted(allowed)}")
    values.update(from_config)
    values.update({k: v for k, v in given.items() if k not in _META_DESTS})
    if values.get("device") is not None:
        from latentstack.core.device import DeviceError, parse_device

        try:
            values["device"] = parse_device(values["device"])
        except DeviceError as exc:
            raise SystemExit(f"lstack train: {exc}") from None
    missing = sorted(a.dest for a in actions if a.required and values.get(a.dest) is None)
    if missing:
        raise SystemExit(f"lstack train: type {kind} needs " + ", ".join("--" + m.replace("_", "-") for m in missing)
                         + " (flag or the config's train: section)")
    return argparse.Namespace(**values)


def _vla_namespace(given: dict[str, Any]) -> argparse.Namespace:
    _refuse_foreign("vla", given, set(_VLA_DESTS))
    if "data" not in given:
        raise SystemExit("lstack train: the VLA trainer needs --data (a LeRobotDataset root)")
    if "out" not in given:
        raise SystemExit("lstack train: the VLA trainer needs --out")
    ns = {d: given.get(d) for d in _VLA_DESTS}
    ns["no_resume"] = bool(ns["no_resume"])
    ns["no_progress"] = bool(ns["no_progress"])
    ns["device"] = ns["device"] or "cpu"
    return argparse.Namespace(**ns)


def _train_vla(a: argparse.Namespace) -> int:
    """``latentstack.policies.train.run_from_args`` with its historical argument names."""
    from latentstack.policies.train import run_from_args

    legacy = argparse.Namespace(**{**vars(a), "dataset": a.data, "num_threads": a.threads})
    return int(run_from_args(legacy) or 0)
