"""Graph files (``ros/graphs/*.yaml``): which node cores run, with which parameters, in which process.

::

    name: metaworld
    transport: inproc          # inproc (one process) | dds (one DDS participant per process) | zenoh (rmw_zenoh)
    distro: jazzy              # humble | jazzy (type hashes on the wire for jazzy)
    domain_id: 0               # dds only ($ROS_DOMAIN_ID semantics)
    nodes:
      sim_bridge:              # node name
        kind: sim_bridge       # sim_bridge | policy | recorder
        process: sim           # process group for multi-process runs
        namespace: /
        enabled: true
        params: {suite: metaworld_mt6, lockstep: true}

Parameters are validated against the node's dataclass when the graph loads, so a typo in a
graph file fails before any simulator starts.
"""
from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from latentstack.nodes import node_class, params_from_mapping

__all__ = ["GraphSpec", "NodeSpec", "load_graph", "parse_set_option"]

TRANSPORTS = ("inproc", "dds", "zenoh")


@dataclass
class NodeSpec:
    name: str
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    namespace: str = "/"
    process: str = "main"
    enabled: bool = True

    def core_class(self) -> Any:
        return node_class(self.kind)

    def typed_params(self) -> Any:
        return params_from_mapping(self.core_class().Params, self.params)


@dataclass
class GraphSpec:
    name: str
    nodes: list[NodeSpec]
    transport: str = "inproc"
    distro: str = "jazzy"
    domain_id: int = 0
    description: str = ""
    source: str | None = None

    def node(self, name: str) -> NodeSpec:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"graph {self.name!r} has no node {name!r}; nodes: {[n.name for n in self.nodes]}")

    def nodes_of(self, kind: str) -> list[NodeSpec]:
        return [n for n in self.nodes if n.kind == kind and n.enabled]

    @property
    def enabled_nodes(self) -> list[NodeSpec]:
        return [n for n in self.nodes if n.enabled]

    @property
    def processes(self) -> list[str]:
        return list(dict.fromkeys(n.process for n in self.enabled_nodes))

    def set_param(self, node: str, key: str, value: Any) -> None:
        """Override one parameter (``--set node.key=value``); validated by :meth:`validate`."""
        self.node(node).params[key] = value

    def validate(self) -> GraphSpec:
        if self.transport not in TRANSPORTS:
            raise ValueError(f"graph transport must be one of {TRANSPORTS}, got {self.transport!r}")
        from latentstack.msgs import DISTROS

        if self.distro not in DISTROS:
            raise ValueError(f"graph distro must be one of {DISTROS}, got {self.distro!r}")
        names = [n.name for n in self.nodes]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate node names in graph: {names}")
        for n in self.enabled_nodes:
            try:
                n.typed_params()
            except (ValueError, TypeError) as exc:
                raise ValueError(f"node {n.name!r} ({n.kind}): {exc}") from None
        return self

    def copy(self) -> GraphSpec:
        return copy.deepcopy(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "description": self.description, "transport": self.transport,
            "distro": self.distro, "domain_id": self.domain_id,
            "nodes": {n.name: {"kind": n.kind, "namespace": n.namespace, "process": n.process,
                               "enabled": n.enabled, "params": dict(n.params)} for n in self.nodes},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str | None = None) -> GraphSpec:
        unknown = set(d) - {"name", "description", "transport", "distro", "domain_id", "nodes"}
        if unknown:
            raise ValueError(f"unknown graph keys {sorted(unknown)}")
        raw_nodes = d.get("nodes") or {}
        if not isinstance(raw_nodes, Mapping) or not raw_nodes:
            raise ValueError("a graph needs a non-empty 'nodes' mapping (node name -> spec)")
        nodes = []
        for name, nd in raw_nodes.items():
            nd = dict(nd or {})
            bad = set(nd) - {"kind", "params", "namespace", "process", "enabled"}
            if bad:
                raise ValueError(f"node {name!r}: unknown keys {sorted(bad)}")
            if "kind" not in nd:
                raise ValueError(f"node {name!r} needs a 'kind'")
            nodes.append(NodeSpec(name=str(name), kind=str(nd["kind"]), params=dict(nd.get("params") or {}),
                                  namespace=str(nd.get("namespace", "/")), process=str(nd.get("process", "main")),
                                  enabled=bool(nd.get("enabled", True))))
        return cls(name=str(d.get("name", "graph")), nodes=nodes, transport=str(d.get("transport", "inproc")),
                   distro=str(d.get("distro", "jazzy")), domain_id=int(d.get("domain_id", 0)),
                   description=str(d.get("description", "")), source=source).wire_publishers().validate()

    # who may publish what a node consumes: (consumer kind, its allow-list parameter, publisher kind)
    PUBLISHER_WIRING = (("sim_bridge", "action_publishers", "policy"), ("policy", "episode_publishers", "sim_bridge"))

    def wire_publishers(self) -> GraphSpec:
        """Fills the allow-lists the graph implies (the sim takes actions from the graph's policy nodes, the
        policy nodes take episode control from the graph's sims) unless a node sets them itself, so renamed or
        namespaced nodes keep working and nothing outside the graph is on a list."""
        for consumer, param, producer in self.PUBLISHER_WIRING:
            sources = [n.namespace.rstrip("/") + "/" + n.name for n in self.nodes_of(producer)]
            for n in self.nodes_of(consumer):
                if sources and param not in n.params:
                    n.params[param] = list(sources)
        return self


def load_graph(path: str | os.PathLike) -> GraphSpec:
    """A graph from YAML: a path (checkout-relative paths work from any cwd) or a name such as ``metaworld``
    (``find_data("graphs", name)``: the checkout's ``ros/graphs`` or an install's ``share/latentstack/graphs``)."""
    import yaml

    from latentstack.core.paths import find_data, resolve_path

    p = resolve_path(path)
    if not p.is_file():
        try:
            p = find_data("graphs", str(path))
        except FileNotFoundError as e:
            raise FileNotFoundError(f"no graph file {path} ({e})") from None
    with open(p) as f:
        d = yaml.safe_load(f) or {}
    return GraphSpec.from_dict(d, source=str(p))


def parse_set_option(opt: str) -> tuple[str, str, Any]:
    """``node.param=value`` (value parsed as YAML: numbers, bools, lists) -> (node, param, value)."""
    import yaml

    if "=" not in opt or "." not in opt.split("=", 1)[0]:
        raise ValueError(f"--set expects node.param=value, got {opt!r}")
    key, raw = opt.split("=", 1)
    node, param = key.split(".", 1)
    return node, param, yaml.safe_load(raw) if raw != "" else ""
