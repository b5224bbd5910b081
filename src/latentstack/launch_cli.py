"""``lstack launch GRAPH``: run a node graph file without ROS (one process, or one per group over DDS).

Wired into ``latentstack.cli`` with ``add_launch_parser(subparsers)``. Examples::

    lstack launch ros/graphs/metaworld.yaml --episodes-per-task 2
    lstack launch ros/graphs/metaworld.yaml --tasks drawer-close-v3 --policy random:policies/vla_metaworld_mt6
    lstack launch ros/graphs/metaworld.yaml --episodes-per-task 1 --multiprocess --domain-id 17
    lstack launch ros/graphs/metaworld.yaml --episodes-per-task 2 --compare-eval    # asserts == lstack eval
    lstack launch ros/graphs/metaworld.yaml --record outputs/bag --set policy_node.torch_threads=1
    lstack launch ros/graphs/metaworld.yaml --device cuda   # every model-holding node (policy, detection, depth)
    lstack launch ros/graphs/perception.yaml --frames 5     # simulated LiDAR + stereo -> LION + stereo depth
    lstack launch ros/graphs/perception.yaml --frames 5 --transport dds --multiprocess
    lstack launch ros/graphs/perception.yaml --frames 4 --enable unilion_scene,unilion_detection,unilion_markers
                                                            # + driving rig (LiDAR, cameras, TF) -> UniLION (LCT)
    lstack launch ros/graphs/metaworld.yaml --transport zenoh --multiprocess     # rmw_zenoh wire contract
    lstack launch ros/graphs/metaworld.yaml --transport zenoh --zenoh-config router  # via zenohd on :7447

``--device`` sets the ``device`` parameter of every node that holds a model (``--set node.device=...`` sets one).
``--enable NODE[,NODE...]`` turns on nodes the graph file ships with ``enabled: false`` (applied before ``--frames``
and ``--device``, so those reach the enabled nodes too).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from latentstack.cli.common import LazyCommand, add_device_arg, add_episodes_arg, add_out_arg, add_policy_arg

__all__ = ["MODEL_NODE_KINDS", "add_launch_parser", "add_parser", "cmd_launch", "enable_nodes", "main"]

# node kinds whose core holds a model and takes a ``device`` parameter (sim bridge and recorder hold none)
MODEL_NODE_KINDS = ("policy", "lidar_detection", "stereo_depth", "unilion_detection")
# simulated sensors: streams of ``frames`` frames (``--frames``)
SENSOR_NODE_KINDS = ("lidar_scene", "stereo_scene", "unilion_scene")


def add_launch_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Adds the ``launch`` subcommand to an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "launch", help="run a node graph (ros/graphs/*.yaml) in one process or as DDS processes",
        description="Run a latentstack node graph without ROS 2: sim bridge -> policy node -> sim bridge, or "
                    "simulated sensors -> perception nodes.",
    )
    p.add_argument("graph", help="graph file, e.g. ros/graphs/metaworld.yaml")
    add_episodes_arg(p, None, aliases=("--episodes",), help="episodes per task (sim bridge episodes_per_task)")
    p.add_argument("--frames", type=int, default=None,
                   help="frames every simulated sensor (lidar_scene, stereo_scene, unilion_scene) streams before the "
                        "run ends")
    p.add_argument("--tasks", default=None, help="comma-separated task subset, e.g. drawer-close-v3,door-close-v3")
    p.add_argument("--split", default=None, choices=["train", "select", "test"], help="seed split")
    add_policy_arg(p, None, help="policy checkpoint / random:<dir> for every policy node")
    add_device_arg(p, default=None, help="device of every model-holding node: cpu | cuda | cuda:N | mps "
                                         "(default: each node's own parameter, cpu unless the graph says otherwise)")
    p.add_argument("--transport", default=None, choices=["inproc", "dds", "zenoh"],
                   help="override the graph's transport")
    p.add_argument("--multiprocess", action="store_true",
                   help="one process per 'process' group, over Cyclone DDS (or --transport zenoh)")
    p.add_argument("--zenoh-config", default="loopback",
                   help="zenoh transport: loopback (this machine only; --multiprocess runs a private router on "
                        "127.0.0.1) | router (client of the zenoh router at tcp/localhost:7447) | path to a zenoh "
                        "JSON5 config (TLS/mTLS, access control)")
    p.add_argument("--domain-id", type=int, default=None, help="DDS domain id (dds / multiprocess)")
    p.add_argument("--dds-config", default="loopback",
                   help="loopback (127.0.0.1 only, the default) | default (Cyclone defaults / $CYCLONEDDS_URI, "
                        "to meet ROS 2 nodes on other hosts) | path to a cyclonedds.xml")
    p.add_argument("--enable", dest="enable", action="append", default=[], metavar="NODE[,NODE...]",
                   help="enable nodes the graph file disables (enabled: false), e.g. "
                        "unilion_scene,unilion_detection,unilion_markers in perception.yaml; repeatable")
    p.add_argument("--record", default=None, metavar="PATH", help="enable the recorder, writing a rosbag2/MCAP here")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="NODE.PARAM=VALUE",
                   help="override a node parameter (value parsed as YAML); repeatable")
    p.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
    p.add_argument("--compare-eval", action="store_true",
                   help="also run `evaluate` on the same seeds and fail unless the outcomes are identical")
    add_out_arg(p, help="write results + node statistics as JSON here")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=LazyCommand("latentstack.launch_cli:cmd_launch"))
    return p


add_parser = add_launch_parser  # the name every ``latentstack.cli`` component module exports


def enable_nodes(spec: Any, options: list[str]) -> list[str]:
    """``--enable a,b --enable c``: switches those nodes on (by name); an unknown name is an error naming the graph's
    nodes. Returns the names enabled."""
    names = [n.strip() for opt in options for n in opt.split(",") if n.strip()]
    known = [n.name for n in spec.nodes]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"--enable: graph {spec.name!r} has no node {', '.join(map(repr, unknown))}; "
                         f"nodes: {known}")
    for name in names:
        spec.node(name).enabled = True
    return names


def _apply_overrides(spec: Any, args: argparse.Namespace) -> None:
    from latentstack.ros.graph import parse_set_option

    # first: the overrides below (--frames, --device, ...) look at the enabled nodes
    enable_nodes(spec, getattr(args, "enable", None) or [])
    for sim in spec.nodes_of("sim_bridge"):
        if args.episodes_per_task is not None:
            sim.params["episodes_per_task"] = args.episodes_per_task
        if args.tasks:
            sim.params["tasks"] = [t.strip() for t in args.tasks.split(",") if t.strip()]
        if args.split:
            sim.params["split"] = args.split
    if getattr(args, "frames", None) is not None:
        sensors = [n for n in spec.nodes if n.kind in SENSOR_NODE_KINDS and n.enabled]
        if not sensors:
            raise ValueError("--frames: the graph has no simulated sensor node "
                             "(lidar_scene, stereo_scene, unilion_scene)")
        for n in sensors:
            n.params["frames"] = args.frames
    if args.policy:
        for pol in spec.nodes_of("policy"):
            pol.params["policy"] = args.policy
    if args.device:
        for node in spec.nodes:
            if node.kind in MODEL_NODE_KINDS:
                node.params["device"] = args.device
    if args.record:
        recs = [n for n in spec.nodes if n.kind == "recorder"]
        if not recs:
            raise SystemExit("--record: the graph has no recorder node")
        recs[0].enabled = True
        recs[0].params["path"] = args.record
    for opt in args.sets:
        node, key, value = parse_set_option(opt)
        spec.set_param(node, key, value)
    spec.validate()


def cmd_launch(args: argparse.Namespace) -> int:
    os.environ.setdefault("MUJOCO_GL", "egl")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from latentstack.ros.graph import load_graph

    try:
        spec = load_graph(args.graph)
        _apply_overrides(spec, args)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        print(f"lstack launch: {exc}", file=sys.stderr)
        return 2
    from latentstack.nodes.base import ParameterError

    try:
        return _run(spec, args)
    except (FileNotFoundError, KeyError, NotImplementedError, RuntimeError, TimeoutError, ParameterError) as exc:
        print(f"lstack launch: {exc.args[0] if isinstance(exc, KeyError) and exc.args else exc}", file=sys.stderr)
        return 2


def _run(spec: Any, args: argparse.Namespace) -> int:
    from latentstack.ros.launcher import run_inprocess, run_multiprocess
    from latentstack.sim.evaluation import ConditionResult, outcome_table

    policies: dict[str, Any] = {}
    if args.compare_eval and not spec.nodes_of("sim_bridge"):
        print("lstack launch: --compare-eval compares a sim bridge's episodes with `lstack eval`; the perception "
              "graph's online == offline checks are tests/nodes/test_perception_graph.py", file=sys.stderr)
        return 2
    if args.multiprocess:
        if args.compare_eval:
            print("lstack launch: --compare-eval needs the in-process run", file=sys.stderr)
            return 2
        net = args.transport if args.transport in ("dds", "zenoh") else (
            spec.transport if spec.transport in ("dds", "zenoh") else "dds")
        run = run_multiprocess(spec, domain_id=args.domain_id, timeout=args.timeout or 3600.0,
                               config=args.dds_config, transport=net, zenoh_config=args.zenoh_config)
    else:
        node_kwargs: dict[str, dict[str, Any]] = {}
        if args.compare_eval:
            from latentstack.nodes.policy_node import load_policy

            for pn in spec.nodes_of("policy"):
                policies[pn.name] = load_policy(pn.typed_params())
                node_kwargs[pn.name] = {"policy": policies[pn.name]}
        run = run_inprocess(spec, transport=args.transport, timeout=args.timeout, node_kwargs=node_kwargs,
                            domain_id=args.domain_id, config=args.dds_config, zenoh_config=args.zenoh_config)
    mode = f"multiprocess/{net}" if args.multiprocess else (args.transport or spec.transport)
    if not spec.nodes_of("sim_bridge"):  # a sensor graph: frames, not episodes
        return _report_frames(spec, run, mode, args)
    if not run.results:
        print("lstack launch: no episode finished", file=sys.stderr)
        return 1
    table = {"graph": ConditionResult("graph", list(run.results))}
    print(f"graph {spec.name} | {mode} | {len(run.results)} episodes | {run.wall_s:.1f} s")
    rc = 0
    if args.compare_eval:
        ref = _evaluate_same_seeds(spec, policies)
        table["evaluate"] = ref
        same = [(e.task, e.seed, e.success, e.length) for e in run.results] == \
               [(e.task, e.seed, e.success, e.length) for e in ref.episodes]
        print(f"node graph vs evaluate on the same seeds: {'IDENTICAL' if same else 'DIFFERENT'}")
        rc = 0 if same else 1
    print(outcome_table(table))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(run.to_dict(), indent=2, default=str))
    return rc if run.finished else 1


def _report_frames(spec: Any, run: Any, mode: str, args: argparse.Namespace) -> int:
    """Summary of a sensor graph run: frames each sensor published and had answered, errors of every node."""
    print(f"graph {spec.name} | {mode} | {run.wall_s:.1f} s | {'finished' if run.finished else 'NOT finished'}")
    for name, st in run.stats.items():
        c = st.get("counters", {})
        line = ", ".join(f"{k} {v}" for k, v in sorted(c.items()))
        print(f"  {name}: {line or 'no counters'}; published " +
              ", ".join(f"{t} {n}" for t, n in sorted(st.get("published", {}).items())))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(run.to_dict(), indent=2, default=str))
    return 0 if run.finished else 1


def _evaluate_same_seeds(spec: Any, policies: dict[str, Any]) -> Any:
    """``evaluate`` on the sim bridge's (task, seed) plan, with the policy node's policy object."""
    import dataclasses

    import torch

    from latentstack.nodes.sim_bridge import plan_episodes
    from latentstack.sim.evaluation import ConditionResult, evaluate, run_episode
    from latentstack.sim.metaworld_env import MetaWorldLangEnv
    from latentstack.sim.suites import TaskSpec

    sims = spec.nodes_of("sim_bridge")
    if len(sims) != 1 or len(policies) != 1:
        raise SystemExit("--compare-eval needs exactly one sim bridge and one policy node")
    params = sims[0].typed_params()
    episodes, suite = plan_episodes(params)
    policy = next(iter(policies.values()))
    image_size, camera = params.image_size or suite.image_size, params.camera or suite.camera
    with torch.inference_mode():
        if not params.seeds:  # the harness itself, on the same task subset and seeds
            tasks = tuple(dict.fromkeys(TaskSpec(e.task, e.instruction, e.max_episode_steps) for e in episodes))
            sub = dataclasses.replace(suite, tasks=tasks, image_size=image_size, camera=camera)
            return evaluate(sub, {"evaluate": policy}, params.episodes_per_task, split=params.split,
                            progress=False)["evaluate"]
        torch.set_num_threads(1)
        out = ConditionResult("evaluate")
        env, task = None, None
        for ep in episodes:  # explicit seeds: the same loop evaluate runs
            if ep.task != task:
                if env is not None:
                    env.close()
                env = MetaWorldLangEnv(ep.task, image_size=image_size, camera=camera,
                                       max_episode_steps=ep.max_episode_steps, instruction=ep.instruction)
                task = ep.task
            out.episodes.append(run_episode(env, policy, ep.seed))
        if env is not None:
            env.close()
        return out


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (``python -m latentstack.launch_cli GRAPH ...``), same flags as ``lstack launch``."""
    ap = argparse.ArgumentParser(prog="lstack")
    add_launch_parser(ap.add_subparsers(dest="command", required=True))
    args = ap.parse_args(["launch", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
