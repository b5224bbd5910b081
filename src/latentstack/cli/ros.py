"""``lstack ros``: a ``ros2``-style inspector that needs no ROS install (topics, nodes, parameters over DDS).

    lstack ros topic list [-t]                 # every topic with its type (and RIHS01 hash with --hashes)
    lstack ros topic echo /action --count 3    # decode and print messages (type discovered from the graph)
    lstack ros node list                       # nodes announced in ros_discovery_info
    lstack ros param list /policy_node
    lstack ros param get /policy_node steering_beta
    lstack ros param set /policy_node steering_beta 0.5

Built on the same discovery and codec as the transports, so it is also a live check of what a ROS 2 graph
sees of latentstack's nodes. DDS: loopback only unless ``--dds-config default`` (or a Cyclone XML) is given.
``--transport zenoh`` reads an rmw_zenoh graph (liveliness tokens) through the router at tcp/localhost:7447 or
``--zenoh-connect``; topic list, node list and echo work there (the parameter services are DDS-only for now).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from latentstack.cli.common import LazyCommand

__all__ = ["add_parser", "message_to_data"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("ros", help="inspect a ROS 2 graph over DDS without ROS (topics, nodes, parameters)",
                              description=__doc__.split("\n\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--domain-id", type=int, default=int(os.environ.get("ROS_DOMAIN_ID", "0")),
                        help="DDS domain (default $ROS_DOMAIN_ID or 0)")
    common.add_argument("--dds-config", default="loopback",
                        help="loopback (127.0.0.1 only, the default) | default (Cyclone's settings) | <cyclonedds.xml>")
    common.add_argument("--distro", default=None, choices=["humble", "jazzy"], help="message definitions (default jazzy)")
    common.add_argument("--wait", type=float, default=2.0, help="seconds of discovery before answering")
    common.add_argument("--transport", default="dds", choices=["dds", "zenoh"])
    common.add_argument("--zenoh-config", default="router",
                        help="router (client of tcp/localhost:7447, as rmw_zenoh) | loopback (peer) | <json5 file>")
    common.add_argument("--zenoh-connect", default=None, help="zenoh endpoint to connect to, e.g. tcp/127.0.0.1:7447")
    sub = p.add_subparsers(dest="what", required=True)
    topic = sub.add_parser("topic", help="topics").add_subparsers(dest="verb", required=True)
    tl = topic.add_parser("list", parents=[common], help="list topics")
    tl.add_argument("-t", "--show-types", action="store_true")
    tl.add_argument("--hashes", action="store_true", help="with the RIHS01 type hash each writer/reader advertises")
    tl.set_defaults(func=LazyCommand("latentstack.cli.ros:cmd_topic_list"))
    te = topic.add_parser("echo", parents=[common], help="print a topic's messages")
    te.add_argument("topic")
    te.add_argument("type", nargs="?", default=None, help="pkg/msg/Type (default: discovered)")
    te.add_argument("--count", type=int, default=1, help="messages to print, then exit (0: until --timeout)")
    te.add_argument("--timeout", type=float, default=10.0)
    te.set_defaults(func=LazyCommand("latentstack.cli.ros:cmd_topic_echo"))
    node = sub.add_parser("node", help="nodes").add_subparsers(dest="verb", required=True)
    node.add_parser("list", parents=[common], help="list nodes").set_defaults(
        func=LazyCommand("latentstack.cli.ros:cmd_node_list"))
    param = sub.add_parser("param", help="parameters").add_subparsers(dest="verb", required=True)
    for verb, extra in (("list", ()), ("get", ("name",)), ("set", ("name", "value"))):
        q = param.add_parser(verb, parents=[common], help=f"{verb} parameters of a node")
        q.add_argument("node", help="fully qualified node name, e.g. /policy_node")
        for a in extra:
            q.add_argument(a)
        q.add_argument("--timeout", type=float, default=5.0)
        q.set_defaults(func=LazyCommand(f"latentstack.cli.ros:cmd_param_{verb}"))
    return p


def _transport(args: argparse.Namespace) -> Any:
    from latentstack.transport import make_transport

    if args.transport == "zenoh":
        config = None if args.zenoh_config == "router" else args.zenoh_config
        connect = [args.zenoh_connect] if args.zenoh_connect else None
        return make_transport("zenoh", domain_id=args.domain_id, config=config, distro=args.distro,
                              connect=connect)  # tracks the graph; announces nothing (no node here)
    config = None if args.dds_config == "default" else args.dds_config
    return make_transport("dds", domain_id=args.domain_id, config=config, distro=args.distro, discovery_info=False)


def _zenoh_graph(args: argparse.Namespace) -> list[Any]:
    t = _transport(args)
    try:
        end = time.monotonic() + args.wait
        while time.monotonic() < end:
            t.spin_once(0.05)
        return t.graph()
    finally:
        t.close()


def _endpoints(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every writer/reader as ``{topic: DDS name, type: DDS type, user_data}`` (zenoh tokens mapped the same way)."""
    if args.transport == "zenoh":
        return [{"topic": "rt" + e.topic, "type": e.dds_type, "kind": "writer" if e.kind == "MP" else "reader",
                 "user_data": f"typehash={e.type_hash};".encode() if e.type_hash else b""}
                for e in _zenoh_graph(args) if e.kind in ("MP", "MS") and e.topic]
    from latentstack.transport.dds import discover_endpoints

    config = None if args.dds_config == "default" else args.dds_config
    return discover_endpoints(args.domain_id, timeout=args.wait, config=config)


def _ros_topic(dds_topic: str) -> str | None:
    return dds_topic[2:] if dds_topic.startswith("rt/") else None  # rq/rr are services, others are not ROS topics


def cmd_topic_list(args: argparse.Namespace) -> int:
    from latentstack.msgs import ros_type_from_dds

    rows: dict[tuple[str, str], set[str]] = {}
    for e in _endpoints(args):
        name = _ros_topic(e["topic"])
        if name is None:
            continue
        try:
            t = ros_type_from_dds(e["type"])
        except KeyError:
            t = e["type"]
        h = e["user_data"].decode(errors="replace").removeprefix("typehash=").rstrip(";") if e["user_data"] else ""
        rows.setdefault((name, t), set()).add(h)
    for (name, t), hashes in sorted(rows.items()):
        line = name + (f" [{t}]" if args.show_types or args.hashes else "")
        if args.hashes:
            line += " " + ",".join(sorted(h or "-" for h in hashes))
        print(line)
    return 0


def message_to_data(msg: Any, max_items: int = 16) -> Any:
    """A rosbags message as plain data for printing (long arrays summarised)."""
    import numpy as np

    if isinstance(msg, np.ndarray):
        return msg.tolist() if msg.size <= max_items else f"<{msg.dtype} array, {msg.size} values>"
    if isinstance(msg, (list, tuple)):
        items = [message_to_data(m, max_items) for m in msg[:max_items]]
        return items + ([f"... {len(msg) - max_items} more"] if len(msg) > max_items else [])
    fields = getattr(msg, "__dataclass_fields__", None)
    if fields is not None:
        return {k: message_to_data(getattr(msg, k), max_items) for k in fields if k != "__msgtype__"
                and not k.isupper()}
    return msg


def cmd_topic_echo(args: argparse.Namespace) -> int:
    import yaml

    from latentstack.msgs import ros_type_from_dds
    from latentstack.transport.qos import Durability, History, QoSProfile, Reliability

    msgtype = args.type
    if msgtype is None:
        types = {e["type"] for e in _endpoints(args) if _ros_topic(e["topic"]) == args.topic}
        if len(types) != 1:
            print(f"lstack ros: cannot tell the type of {args.topic} ({sorted(types) or 'no endpoint seen'}); "
                  "give it as the second argument", file=sys.stderr)
            return 1
        msgtype = ros_type_from_dds(types.pop())
    got: list[Any] = []
    t = _transport(args)
    try:  # best effort + volatile matches every writer
        t.create_subscription(args.topic, msgtype, got.append,
                              QoSProfile(Reliability.BEST_EFFORT, Durability.VOLATILE, History.KEEP_LAST, 10))
        end = time.monotonic() + args.timeout
        printed = 0
        while time.monotonic() < end and (args.count == 0 or printed < args.count):
            t.spin_once(0.05)
            while got and (args.count == 0 or printed < args.count):
                print(yaml.safe_dump(message_to_data(got.pop(0)), sort_keys=False).rstrip() + "\n---")
                printed += 1
    finally:
        t.close()
    return 0 if printed else 1


def cmd_node_list(args: argparse.Namespace) -> int:
    if args.transport == "zenoh":
        names = {e.node.namespace.rstrip("/") + "/" + e.node.name for e in _zenoh_graph(args) if e.kind == "NN"}
        for n in sorted(names):
            print(n)
        return 0
    t = _transport(args)
    try:
        end = time.monotonic() + args.wait
        while time.monotonic() < end:
            t.spin_once(0.05)
        names = {n.namespace.rstrip("/") + "/" + n.name for nodes in t.graph_nodes.values() for n in nodes}
    finally:
        t.close()
    for n in sorted(names):
        print(n)
    return 0


def _call(args: argparse.Namespace, service: str, request: Any) -> Any:
    if args.transport != "dds":
        raise TimeoutError("parameter services run over DDS only (services over zenoh are not implemented)")
    t = _transport(args)
    try:
        client = t.create_client(args.node.rstrip("/") + "/" + service, "rcl_interfaces/srv/" +
                                 "".join(p.capitalize() for p in service.split("_")))
        if not client.wait_for_service(args.timeout):
            raise TimeoutError(f"no {service} service of {args.node} within {args.timeout} s")
        return client.call(request, timeout=args.timeout)
    finally:
        t.close()


def _run(fn: Any) -> int:
    try:
        fn()
    except TimeoutError as exc:
        print(f"lstack ros: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_param_list(args: argparse.Namespace) -> int:
    from latentstack import msgs

    def go() -> None:
        r = _call(args, "list_parameters", msgs.new("rcl_interfaces/srv/ListParameters_Request", args.distro,
                                                    prefixes=[], depth=0))
        for n in r.result.names:
            print(n)

    return _run(go)


def cmd_param_get(args: argparse.Namespace) -> int:
    from latentstack import msgs
    from latentstack.nodes.parameters import from_parameter_value

    def go() -> None:
        r = _call(args, "get_parameters", msgs.new("rcl_interfaces/srv/GetParameters_Request", args.distro,
                                                   names=[args.name]))
        v = from_parameter_value(r.values[0])
        print("Parameter not set" if v is None else f"{args.name}: {v!r}")

    return _run(go)


def cmd_param_set(args: argparse.Namespace) -> int:
    import yaml

    from latentstack import msgs
    from latentstack.nodes.parameters import parameter_type, to_parameter_value

    value = yaml.safe_load(args.value)  # "0.5" -> 0.5, "true" -> True, "[a, b]" -> list, like ros2 param set
    hint = type(value) if not isinstance(value, list) else tuple[type(value[0]) if value else str, ...]
    pv = to_parameter_value(value, parameter_type(hint), args.distro)
    result: list[Any] = []

    def go() -> None:
        req = msgs.new("rcl_interfaces/srv/SetParameters_Request", args.distro,
                       parameters=[msgs.new("rcl_interfaces/msg/Parameter", args.distro, name=args.name, value=pv)])
        result.append(_call(args, "set_parameters", req).results[0])

    rc = _run(go)
    if rc:
        return rc
    r = result[0]
    print("Set parameter successful" if r.successful else f"Setting parameter failed: {r.reason}")
    return 0 if r.successful else 1
