"""Runs a graph file without ROS: all nodes in one process, or one process per group over DDS or zenoh.

- :func:`run_inprocess`: every enabled node on one transport (``inproc`` by default: a
  deterministic FIFO bus; or one DDS participant / zenoh session). With a lockstep sim bridge the
  closed loop is exactly reproducible: same seeds => same episode outcomes as ``evaluate``.
- :func:`run_multiprocess`: one child process per ``process`` group, each with its own DDS
  participant (``rt/`` topics on the configured domain) or zenoh session (rmw_zenoh keys; with
  ``zenoh_config="loopback"`` the parent runs a private zenoh router on a free 127.0.0.1 port that
  the children connect to), i.e. how the nodes would run next to a ROS 2 graph. The parent waits for the process holding the sim bridge, collects its
  episode results and stops the others.

A graph runs until its *drivers* finish: the sim bridges (their episodes) and the simulated sensors
(``lidar_scene``, ``stereo_scene``: their ``frames``); any core class with ``drives_graph = True`` is one.

``python -m latentstack.ros.launcher GRAPH --process NAME ...`` is the child entry point.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from latentstack.sim.evaluation import EpisodeResult

from .graph import GraphSpec, load_graph

__all__ = ["Graph", "GraphRun", "build_graph", "run_inprocess", "run_multiprocess"]

log = logging.getLogger("latentstack.launch")


@dataclass
class GraphRun:
    results: list[EpisodeResult] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0
    finished: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"results": [asdict(r) for r in self.results], "stats": self.stats, "wall_s": self.wall_s,
                "finished": self.finished}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GraphRun:
        return cls([EpisodeResult(**r) for r in d.get("results", [])], dict(d.get("stats", {})),
                   float(d.get("wall_s", 0.0)), bool(d.get("finished", False)))


class Graph:
    """Instantiated node cores of one process, with their executor."""

    def __init__(self, spec: GraphSpec, transport: Any, nodes: dict[str, Any]) -> None:
        from latentstack.nodes import Executor

        self.spec = spec
        self.transport = transport
        self.nodes = nodes
        self.executor = Executor(nodes.values())

    @property
    def sim_bridges(self) -> list[Any]:
        from latentstack.nodes.sim_bridge import SimBridgeCore

        return [n for n in self.nodes.values() if isinstance(n, SimBridgeCore)]

    @property
    def drivers(self) -> list[Any]:
        """The nodes whose end is the end of the run: sim bridges and simulated sensors."""
        return [n for n in self.nodes.values() if _drives(type(n))]

    def start(self) -> None:
        for n in self.nodes.values():
            if hasattr(n, "start"):
                n.start()

    def finished(self) -> bool:
        drivers = self.drivers
        return bool(drivers) and all(s.finished for s in drivers)

    def drain(self, timeout: float = 5.0, max_rounds: int = 50, quiet_s: float = 0.0) -> None:
        """Delivers what is still in flight once the drivers finished (e.g. the markers of the last detections,
        outputs of a node's worker thread), so the last frame's outputs reach every node and the recorder.

        ``quiet_s`` > 0 (other processes still publishing over DDS): stop only after that long without a
        message (bounded by ``timeout``); 0: stop at the first empty round (in-process: nothing is in flight)."""
        end = time.monotonic() + timeout
        last = time.monotonic()
        for _ in range(max_rounds if quiet_s <= 0 else 1_000_000):
            for n in self.nodes.values():
                wait = getattr(n, "wait_idle", None)
                if callable(wait):
                    wait(max(0.0, end - time.monotonic()))
            got = self.executor.spin_once(min(0.05, quiet_s))
            now = time.monotonic()
            if got:
                last = now
            if now >= end or (not got and now - last >= quiet_s):
                return

    def results(self) -> list[EpisodeResult]:
        return [r for s in self.sim_bridges for r in s.results]

    def stats(self) -> dict[str, Any]:
        return {name: n.stats() for name, n in self.nodes.items()}

    def close(self) -> None:
        # recorders last so they see everything already delivered
        order = sorted(self.nodes.values(), key=lambda n: type(n).__name__ == "RecorderCore")
        for n in order:
            n.close()


def _drives(cls: type) -> bool:
    from latentstack.nodes.sim_bridge import SimBridgeCore

    return issubclass(cls, SimBridgeCore) or bool(getattr(cls, "drives_graph", False))


def dds_config(spec: str | None) -> str | None:
    """``loopback`` (default: 127.0.0.1 only, multicast off) | ``default`` (Cyclone's own settings or
    ``$CYCLONEDDS_URI``, needed to reach ROS 2 nodes on other hosts) | a Cyclone XML file path."""
    if spec in (None, "", "loopback"):
        return "loopback"
    if spec == "default":
        return None
    p = Path(spec)
    if not p.is_file():
        raise FileNotFoundError(f"no Cyclone DDS config file {spec}")
    return p.resolve().as_uri()


def make_graph_transport(spec: GraphSpec, kind: str | None = None, *, domain_id: int | None = None,
                         config: str | None = "loopback", zenoh_config: str | None = "loopback",
                         zenoh_connect: list[str] | None = None) -> Any:
    """The transport a graph process runs on (``kind`` overrides the graph's; ``config`` see :func:`dds_config`;
    ``zenoh_config``: ``loopback`` | ``router`` (client of tcp/localhost:7447) | a zenoh JSON5 file, see
    :func:`latentstack.transport.zenoh.session_config`; ``zenoh_connect``: endpoints to connect to)."""
    from latentstack.transport import make_transport

    kind = kind or spec.transport
    if kind == "zenoh":  # given endpoints (the multi-process launcher's private router): a client of them
        return make_transport("zenoh", domain_id=spec.domain_id if domain_id is None else domain_id,
                              distro=spec.distro, config=zenoh_config, connect=zenoh_connect,
                              mode="client" if zenoh_connect else None)
    config = dds_config(config)
    if kind == "dds":
        return make_transport("dds", domain_id=spec.domain_id if domain_id is None else domain_id,
                              distro=spec.distro, config=config)
    return make_transport(kind, distro=spec.distro)


def build_graph(spec: GraphSpec, transport: Any, *, process: str | None = None,
                node_kwargs: Mapping[str, Mapping[str, Any]] | None = None) -> Graph:
    """Instantiates the enabled nodes (of ``process`` only, when given) on ``transport``.

    ``node_kwargs`` passes objects a YAML file cannot hold, e.g. ``{"policy_node": {"policy": p}}``.
    """
    nodes: dict[str, Any] = {}
    try:
        for ns in spec.enabled_nodes:
            if process is not None and ns.process != process:
                continue
            cls = ns.core_class()
            nodes[ns.name] = cls(transport, ns.typed_params(), name=ns.name, namespace=ns.namespace,
                                 **dict((node_kwargs or {}).get(ns.name, {})))
    except BaseException:
        for n in nodes.values():
            n.close()
        raise
    return Graph(spec, transport, nodes)


def run_inprocess(spec: GraphSpec, *, transport: str | Any | None = None, timeout: float | None = None,
                  duration_s: float | None = None, node_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
                  domain_id: int | None = None, config: str | None = "loopback",
                  zenoh_config: str | None = "loopback") -> GraphRun:
    """Runs all enabled nodes in this process until the drivers (sim bridges, sensors) finish (or
    ``timeout``/``duration_s``)."""
    own = transport is None or isinstance(transport, str)
    tr = make_graph_transport(spec, transport if isinstance(transport, str) else None, domain_id=domain_id,
                              config=config, zenoh_config=zenoh_config) if own else transport
    run = GraphRun()
    t0 = time.perf_counter()
    try:
        graph = build_graph(spec, tr, node_kwargs=node_kwargs)
        try:
            graph.start()
            if duration_s is not None:
                graph.executor.spin_until(lambda: graph.finished(), timeout=duration_s)
            elif graph.drivers:
                if not graph.executor.spin_until(graph.finished, timeout=timeout):
                    log.warning("graph %s: timed out after %s s", spec.name, timeout)
            else:
                raise ValueError("a graph without a sim bridge or sensor needs duration_s (it would never finish)")
            run.finished = graph.finished()
            graph.drain()
            run.results = graph.results()
            run.stats = graph.stats()
        finally:
            graph.close()
    finally:
        if own:
            tr.close()
    run.wall_s = time.perf_counter() - t0
    return run


# ----------------------------------------------------------------------------- multi-process
def _child_cmd(spec_path: str, process: str, domain_id: int, results: str | None, config: str,
               transport: str = "dds", zenoh_config: str = "loopback", zenoh_connect: str | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "latentstack.ros.launcher", spec_path, "--process", process,
           "--domain-id", str(domain_id), "--dds-config", config, "--transport", transport]
    if transport == "zenoh":
        cmd += ["--zenoh-config", zenoh_config] + (["--zenoh-connect", zenoh_connect] if zenoh_connect else [])
    if results:
        cmd += ["--results", results]
    return cmd


def run_multiprocess(spec: GraphSpec, *, domain_id: int | None = None, timeout: float = 600.0,
                     env: Mapping[str, str] | None = None, config: str = "loopback", transport: str = "dds",
                     zenoh_config: str = "loopback") -> GraphRun:
    """One child process per process group, DDS (``config``: see :func:`dds_config`) or zenoh (``zenoh_config``:
    see :func:`make_graph_transport`) between them; returns the sim's results (and every process's node
    statistics: ``stats[node]``)."""
    if transport not in ("dds", "zenoh"):
        raise ValueError(f"multi-process runs need a network transport (dds | zenoh), got {transport!r}")
    if transport == "dds":
        dds_config(config)  # fail early on a missing file
    sim_groups = {n.process for n in spec.enabled_nodes if _drives(n.core_class())}
    if len(sim_groups) != 1:
        raise ValueError("multi-process runs need exactly one process group holding the sim bridge(s) / sensors")
    sim_group = sim_groups.pop()
    dom = spec.domain_id if domain_id is None else int(domain_id)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lstack_launch_") as tmp:
        spec_path = str(Path(tmp) / "graph.json")
        Path(spec_path).write_text(json.dumps(spec.to_dict()))
        results_path = str(Path(tmp) / "results.json")

        def group_results(group: str) -> str:  # every child reports its node statistics on exit
            return results_path if group == sim_group else str(Path(tmp) / f"results_{len(group)}_{group}.json")

        child_env = {**os.environ, **(env or {})}
        procs: dict[str, subprocess.Popen] = {}
        hub, hub_ep = None, None
        try:
            if transport == "zenoh" and zenoh_config == "loopback":  # the children meet at a private router
                from latentstack.transport.zenoh import open_loopback_router

                hub, hub_ep = open_loopback_router()
            for group in spec.processes:
                procs[group] = subprocess.Popen(
                    _child_cmd(spec_path, group, dom, group_results(group), config, transport, zenoh_config,
                               hub_ep),
                    env=child_env)
            end = time.monotonic() + timeout
            while procs[sim_group].poll() is None:  # watch every child: a dead policy would stall lockstep
                dead = {g: p.returncode for g, p in procs.items() if g != sim_group and p.poll() not in (None, 0)}
                if dead:
                    raise RuntimeError(f"graph process(es) exited early: {dead}")
                if time.monotonic() > end:
                    raise TimeoutError(f"graph did not finish within {timeout} s")
                time.sleep(0.1)
            if procs[sim_group].returncode != 0:
                raise RuntimeError(f"sim process {sim_group!r} exited with {procs[sim_group].returncode}")
        finally:
            for group, p in procs.items():
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for group, p in procs.items():
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            if hub is not None:
                hub.close()
        run = GraphRun.from_dict(json.loads(Path(results_path).read_text()))
        for group in procs:
            other = Path(group_results(group))
            if group != sim_group and other.is_file():
                run.stats.update(GraphRun.from_dict(json.loads(other.read_text())).stats)
    run.wall_s = time.perf_counter() - t0
    return run


def _child_main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m latentstack.ros.launcher",
                                 description="run one process group of a graph over DDS or zenoh")
    ap.add_argument("graph", help="graph YAML or the JSON written by run_multiprocess")
    ap.add_argument("--process", required=True)
    ap.add_argument("--domain-id", type=int, default=None)
    ap.add_argument("--results", default=None, help="write the process's results and node statistics here (JSON)")
    ap.add_argument("--timeout", type=float, default=None)
    ap.add_argument("--dds-config", default="loopback", help="loopback | default | <cyclonedds.xml>")
    ap.add_argument("--transport", default="dds", choices=["dds", "zenoh"])
    ap.add_argument("--zenoh-config", default="loopback", help="loopback | router | <zenoh.json5>")
    ap.add_argument("--zenoh-connect", default=None, help="comma-separated zenoh endpoints to connect to")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.graph.endswith(".json"):
        spec = GraphSpec.from_dict(json.loads(Path(args.graph).read_text()), source=args.graph)
    else:
        spec = load_graph(args.graph)
    stop = {"flag": False}

    def on_term(signum: int, frame: Any) -> None:
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    tr = make_graph_transport(spec, args.transport, domain_id=args.domain_id, config=args.dds_config,
                              zenoh_config=args.zenoh_config,
                              zenoh_connect=args.zenoh_connect.split(",") if args.zenoh_connect else None)
    graph = build_graph(spec, tr, process=args.process)
    run = GraphRun()
    t0 = time.perf_counter()
    try:
        graph.start()
        end = time.monotonic() + args.timeout if args.timeout else float("inf")
        has_driver = bool(graph.drivers)
        while not stop["flag"] and time.monotonic() < end:
            if has_driver and graph.finished():
                break
            graph.executor.spin_once(0.05)
        run.finished = graph.finished()
        if run.finished:
            graph.drain(quiet_s=0.5)  # the other processes' answers to the last frame may still be on the way
        run.results = graph.results()
        run.stats = graph.stats()
    finally:
        graph.close()
        tr.close()
    run.wall_s = time.perf_counter() - t0
    if args.results:
        Path(args.results).write_text(json.dumps(run.to_dict()))
    return 0


if __name__ == "__main__":
    raise SystemExit(_child_main())
