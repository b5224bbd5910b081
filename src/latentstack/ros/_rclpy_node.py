"""Shared plumbing of the thin rclpy wrappers: parameters from the core's dataclass, timers, spin.

Pure helpers (:func:`parameter_declarations`, :func:`params_from_ros`) are testable without
ROS; :func:`run_core` needs rclpy and fails with a clear message when it is missing.
"""
from __future__ import annotations

import dataclasses
import sys
import typing
from collections.abc import Callable, Mapping
from typing import Any

from latentstack.nodes.base import params_from_mapping

try:  # pragma: no cover - rclpy is only present on a ROS 2 machine
    import rclpy

    RCLPY_AVAILABLE = True
except ImportError:
    rclpy = None
    RCLPY_AVAILABLE = False

__all__ = ["RCLPY_AVAILABLE", "attach_core", "declare_parameters", "parameter_declarations", "params_from_ros",
           "run_core"]


def _ros_type(hint: Any) -> str:
    """rcl_interfaces ParameterType name for a dataclass field type."""
    if typing.get_origin(hint) is tuple:
        item = (typing.get_args(hint) or (str,))[0]
        return {str: "STRING_ARRAY", float: "DOUBLE_ARRAY", int: "INTEGER_ARRAY", bool: "BOOL_ARRAY"}[item]
    return {str: "STRING", float: "DOUBLE", int: "INTEGER", bool: "BOOL"}[hint]


def parameter_declarations(params_cls: type) -> list[tuple[str, Any, str]]:
    """``(name, default, ParameterType name)`` for every field (tuples become lists for rclpy)."""
    hints = typing.get_type_hints(params_cls)
    out = []
    for f in dataclasses.fields(params_cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        out.append((f.name, list(default) if isinstance(default, tuple) else default, _ros_type(hints[f.name])))
    return out


def params_from_ros(params_cls: type, values: Mapping[str, Any]) -> Any:
    """Dataclass parameters from ROS values (``None`` = not set: keep the default)."""
    return params_from_mapping(params_cls, {k: v for k, v in values.items() if v is not None})


def declare_parameters(node: Any, params_cls: type) -> dict[str, Any]:  # pragma: no cover - needs rclpy
    """Declares the dataclass's parameters on an rclpy node and reads them (None: an unset empty-array default)."""
    from rclpy.exceptions import ParameterUninitializedException
    from rclpy.parameter import Parameter

    values: dict[str, Any] = {}
    for name, default, ros_type in parameter_declarations(params_cls):
        if node.has_parameter(name):  # use_sim_time: every rclpy node declares it itself
            values[name] = node.get_parameter(name).value
            continue
        if isinstance(default, list) and not default:
            node.declare_parameter(name, getattr(Parameter.Type, ros_type))
        else:
            node.declare_parameter(name, default)
        try:
            values[name] = node.get_parameter(name).value
        except ParameterUninitializedException:  # empty-array default, not set by the user
            values[name] = None
    return values


def attach_core(node: Any, core: Any) -> tuple[list[Any], Any]:  # pragma: no cover - needs rclpy
    """rclpy timers for the core's timers, and its run-time parameter hook; returns both (to detach later)."""
    timers = [node.create_timer(t.period_s, t.callback) for t in core.timers]
    hook = None
    if hasattr(core, "on_set_parameters"):  # e.g. steering / steering_beta on the policy node
        from rcl_interfaces.msg import SetParametersResult

        def _on_set(ps: list[Any], _core: Any = core) -> Any:
            if _core.closed:  # a lifecycle node between activations: nothing to change yet
                return SetParametersResult(successful=True, reason="")
            ok, reason = _core.on_set_parameters({p.name: p.value for p in ps})
            return SetParametersResult(successful=ok, reason=reason)

        node.add_on_set_parameters_callback(_on_set)
        hook = _on_set
    return timers, hook


def run_core(core_cls: type, node_name: str, argv: list[str] | None = None,
             core_kwargs: Callable[[Any], Mapping[str, Any]] | None = None) -> int:  # pragma: no cover - needs rclpy
    """``main()`` of a wrapper: rclpy node + declared parameters + RclpyTransport + the core, spun."""
    if not RCLPY_AVAILABLE:
        print(f"{node_name}: rclpy is not importable; source a ROS 2 installation, or run the same node "
              "without ROS via `lstack launch ros/graphs/<graph>.yaml`", file=sys.stderr)
        return 2
    from rclpy.executors import ExternalShutdownException
    from rclpy.node import Node

    from latentstack.transport.rclpy_backend import RclpyTransport

    rclpy.init(args=argv)
    node = Node(node_name)
    core = None
    try:
        values = declare_parameters(node, core_cls.Params)
        params = params_from_ros(core_cls.Params, values)
        transport = RclpyTransport(node)
        core = core_cls(transport, params, name=node.get_name(), namespace=node.get_namespace(),
                        **dict(core_kwargs(params) if core_kwargs else {}))
        attach_core(node, core)
        if hasattr(core, "start"):
            core.start()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if core is not None:
            core.close()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0
