"""Node cores without ROS: a core = typed parameters + callbacks + timers on a :class:`Transport`.

A core never imports rclpy. The same class runs on the in-process bus (tests, one-process
graphs), on Cyclone DDS (separate processes, visible to ROS 2) or inside the thin rclpy
wrappers of :mod:`latentstack.ros`. Callbacks are guarded: a message that fails validation
(:class:`~latentstack.msgs.MessageError`) is logged (rate-limited) and counted, any other
exception is logged with its traceback and counted, and the node keeps running.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
import types
import typing
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from latentstack import msgs
from latentstack.transport import NodeId, Publisher, QoSProfile, Subscription, Transport, resolve_topic
from latentstack.transport.base import Sender, SenderFilter
from latentstack.transport.names import validate_namespace, validate_node_name
from latentstack.transport.ratelimit import RateLimitedLog  # shared with the transports' decode warnings

__all__ = ["CLOCK_QOS", "CLOCK_TOPIC", "CLOCK_TYPE", "Executor", "NodeCore", "NodeParams", "ParameterError", "RateLimitedLog", "Timer", "check_publisher_list",
           "params_from_mapping", "params_to_dict", "publisher_filter"]

P = TypeVar("P")


class ParameterError(ValueError):
    """A node parameter is unknown, of the wrong type, or out of range."""


# ----------------------------------------------------------------------------- parameters
def _coerce(name: str, hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(name, a, value)
            except ParameterError as exc:
                errors.append(str(exc))
        raise ParameterError("; ".join(errors))
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            value = (value,)
        item = args[0] if args else Any
        return tuple(_coerce(name, item, v) for v in value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ParameterError(f"parameter {name!r}: expected a bool, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)) or (
            isinstance(value, float) and not value.is_integer()
        ):
            raise ParameterError(f"parameter {name!r}: expected an int, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ParameterError(f"parameter {name!r}: expected an int, got {value!r}") from None
    if hint is float:
        if isinstance(value, bool):
            raise ParameterError(f"parameter {name!r}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ParameterError(f"parameter {name!r}: expected a number, got {value!r}") from None
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ParameterError(f"parameter {name!r}: expected a string, got {value!r}")
        return str(value)
    return value


def params_from_mapping(cls: type[P], values: Mapping[str, Any] | None = None, **overrides: Any) -> P:
    """Typed, validated parameters from YAML/CLI values; unknown keys are an error (typos fail loudly)."""
    data = {**(values or {}), **overrides}
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ParameterError(f"unknown parameter(s) {unknown} for {cls.__name__}; known: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(k, hints[k], v) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ParameterError:
        raise
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"{cls.__name__}: {exc}") from None


def params_to_dict(params: Any) -> dict[str, Any]:
    """Plain YAML-able dict (tuples -> lists) of a parameter dataclass."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(params).items()}


def check(cond: bool, message: str) -> None:
    """Parameter validation helper for ``__post_init__``."""
    if not cond:
        raise ParameterError(message)


def check_finite(name: str, value: float) -> None:
    check(math.isfinite(value), f"parameter {name!r} must be finite, got {value}")


def check_device_param(value: str) -> None:
    """``__post_init__`` check of a ``device`` parameter: syntax only (graph files validate without torch)."""
    from latentstack.core.device import DeviceError, parse_device

    try:
        normalized = parse_device(value)
    except DeviceError as exc:
        raise ParameterError(f"parameter 'device': {exc}") from None
    check(normalized == value, f"parameter 'device' must be written {normalized!r}, got {value!r}")


def available_device(value: str) -> str:
    """The ``device`` parameter once the node loads its model: it must exist here (e.g. ``cuda`` needs CUDA)."""
    from latentstack.core.device import DeviceError, check_device

    try:
        return check_device(value)
    except DeviceError as exc:
        raise ParameterError(f"parameter 'device': {exc}") from None


def check_string_length(label: str, value: Any, max_length: int) -> None:
    """Input cap for a string field of an incoming message (frame ids, encodings, field names).

    Raises :class:`~latentstack.msgs.MessageValueError` (the node logs, counts and drops the message)
    before the string is copied into outputs or logs.
    """
    n = len(value)
    if n > max_length:
        raise msgs.MessageValueError(f"{label} has {n} characters > max_string_length {max_length}")


# ----------------------------------------------------------------------------- common parameters
@dataclasses.dataclass(frozen=True)
class NodeParams:
    """Parameters every node core has (ROS names: the field names), inherited by each core's ``Params``."""

    # node time from /clock (rosgraph_msgs/Clock, published by the sim bridge and the simulated sensors) instead
    # of the system clock: timers, watchdogs and stamp checks then run in sim time (0 until the first /clock)
    use_sim_time: bool = False


CLOCK_TOPIC = "/clock"
CLOCK_TYPE = "rosgraph_msgs/msg/Clock"
CLOCK_QOS = "clock"  # rclcpp ClockQoS: KEEP_LAST 1, BEST_EFFORT


# ----------------------------------------------------------------------------- publisher allow-lists
def _fq_node(node: NodeId) -> str:
    return node.namespace.rstrip("/") + "/" + node.name


def _parse_publisher(entry: str, namespace: str) -> tuple[str, str | bytes]:
    """``("node", "/ns/name")`` or ``("guid", prefix bytes)``; ValueError for anything else."""
    if not isinstance(entry, str) or not entry:
        raise ValueError(f"allowed publisher must be a node name or 'guid:<hex>', got {entry!r}")
    if entry.startswith("guid:"):
        hexpart = entry[5:]
        if not 2 <= len(hexpart) <= 32 or len(hexpart) % 2:
            raise ValueError(f"{entry!r}: a GUID prefix is 1 to 16 bytes of hex")
        return "guid", bytes.fromhex(hexpart)
    if entry.startswith("/"):
        ns, _, name = entry.rpartition("/")
        ns = ns or "/"
    else:
        ns, name = namespace, entry
    validate_namespace(ns)
    validate_node_name(name)
    return "node", ns.rstrip("/") + "/" + name


def check_publisher_list(name: str, entries: Sequence[str]) -> None:
    """Start-up check of an ``*_publishers`` parameter (ParameterError naming the bad entry)."""
    for e in entries:
        try:
            _parse_publisher(e, "/")
        except ValueError as exc:
            raise ParameterError(f"parameter {name!r}: {exc}") from None


def publisher_filter(allowed: Sequence[str], namespace: str = "/") -> SenderFilter | None:
    """A subscription's sender filter from node names and ``guid:<hex>`` prefixes; None (anyone) when empty.

    A node name matches a writer announced for that node (in-process: the publishing node; DDS: its
    participant's ``ros_discovery_info``); a GUID prefix matches the writer's participant or its own GUID.
    This is identification, not authentication: on an unsecured DDS domain a participant can announce
    any node name (threat model: README)."""
    if not allowed:
        return None
    parsed = [_parse_publisher(e, namespace) for e in allowed]
    names = {v for k, v in parsed if k == "node"}
    prefixes = [v for k, v in parsed if k == "guid"]

    def accept(sender: Sender) -> bool | None:
        if any(sender.participant.startswith(g) or sender.gid.startswith(g) for g in prefixes):  # type: ignore[arg-type]
            return True
        if sender.node is None:
            return None if names else False  # DDS: the writer's node may not be announced yet
        return _fq_node(sender.node) in names

    return accept


# ----------------------------------------------------------------------------- timers / nodes
class Timer:
    """Periodic callback on the transport clock (fired by :class:`Executor` or an rclpy timer)."""

    def __init__(self, period_s: float, callback: Callable[[], None], clock: Callable[[], int]) -> None:
        if not period_s > 0:
            raise ParameterError(f"timer period must be > 0, got {period_s}")
        self.period_ns = round(period_s * 1e9)
        self.callback = callback
        self._clock = clock
        self.next_ns = clock() + self.period_ns
        self.cancelled = False

    @property
    def period_s(self) -> float:
        return self.period_ns / 1e9

    def due_in_s(self, now_ns: int | None = None) -> float:
        now = self._clock() if now_ns is None else now_ns
        return max(0.0, (self.next_ns - now) / 1e9)

    def fire_if_due(self, now_ns: int | None = None) -> bool:
        now = self._clock() if now_ns is None else now_ns
        if self.cancelled or now < self.next_ns:
            return False
        # skip missed periods instead of bursting (a slow policy must not queue up stale ticks)
        missed = (now - self.next_ns) // self.period_ns
        self.next_ns += (missed + 1) * self.period_ns
        self.callback()
        return True

    def cancel(self) -> None:
        self.cancelled = True


class NodeCore:
    """Base class of the node cores: name/namespace, guarded endpoints, timers, error counters."""

    default_name: ClassVar[str] = "node"
    Params: ClassVar[type] = object

    def __init__(self, transport: Transport, params: Any = None, *, name: str | None = None,
                 namespace: str = "/") -> None:
        self.transport = transport
        self.params = params if params is not None else self.Params()
        self.name = validate_node_name(name or self.default_name)
        self.namespace = validate_namespace(namespace)
        self.node_id = NodeId(self.name, self.namespace)
        self.log = logging.getLogger(f"latentstack.nodes.{self.name}")
        self.timers: list[Timer] = []
        self.publishers: list[Publisher] = []
        self.subscriptions: list[Subscription] = []
        self.counters: Counter[str] = Counter()
        # bad input is counted in ``counters`` and logged through this limiter (dropped lines: stats())
        self.rate_log = RateLimitedLog(self.log)
        self.closed = False
        self._sim_now_ns: int | None = None  # last /clock (use_sim_time)
        transport.register_node(self.node_id)
        if getattr(self.params, "use_sim_time", False):
            self.create_subscription(CLOCK_TOPIC, CLOCK_TYPE, self._on_clock, CLOCK_QOS)
        # ROS 2 graph citizenship where the transport carries services (DDS): parameter services,
        # /parameter_events, /rosout (latentstack.nodes.parameters); rclpy wrappers use rclpy's own
        self.parameter_services: Any = None
        self._rosout: Any = None
        if getattr(transport, "create_service", None) is not None:
            from .parameters import ParameterServices, RosoutHandler

            self.parameter_services = ParameterServices(self)
            self._rosout = RosoutHandler(self)
            self.log.addHandler(self._rosout)

    def now_ns(self) -> int:
        """Node time: the last /clock with ``use_sim_time`` (0 before the first), else the transport's clock."""
        if getattr(self.params, "use_sim_time", False):
            return self._sim_now_ns or 0
        return self.transport.now_ns()

    def _on_clock(self, msg: Any) -> None:
        t = msgs.time_to_ns(msg.clock)
        if self._sim_now_ns is None or t >= self._sim_now_ns:  # time does not run backwards within a run
            self._sim_now_ns = t
        else:  # a restarted simulator: follow it (ROS resets time-jump-aware timers the same way)
            self.counters["clock_jump_back"] += 1
            self._sim_now_ns = t
            for timer in self.timers:
                timer.next_ns = t + timer.period_ns

    @property
    def fq_name(self) -> str:
        """``/namespace/name``."""
        return _fq_node(self.node_id)

    # -- endpoints
    def topic(self, name: str) -> str:
        return resolve_topic(name, self.namespace, self.name)

    def create_publisher(self, topic: str, msgtype: str, qos: QoSProfile | str | None = None) -> Publisher:
        pub = self.transport.create_publisher(self.topic(topic), msgtype, qos, node=self.node_id)
        self.publishers.append(pub)
        return pub

    def create_subscription(self, topic: str, msgtype: str, callback: Callable[[Any], None],
                            qos: QoSProfile | str | None = None, *, raw: bool = False,
                            allowed_publishers: Sequence[str] = ()) -> Subscription:
        """``allowed_publishers``: node names (relative to this node's namespace, or absolute) and/or
        ``guid:<hex>`` prefixes of DDS participant/writer GUIDs; messages from anyone else are refused
        (counted in the subscription's ``refused_senders``). Empty: anyone (see :func:`publisher_filter`)."""
        sub = self.transport.create_subscription(self.topic(topic), msgtype, self._guard(callback, topic), qos,
                                                 raw=raw, node=self.node_id)
        sub.sender_filter = publisher_filter(allowed_publishers, self.namespace)
        self.subscriptions.append(sub)
        return sub

    def create_timer(self, period_s: float, callback: Callable[[], None]) -> Timer:
        t = Timer(period_s, self._guard_timer(callback), self.now_ns)
        self.timers.append(t)
        return t

    # -- robustness
    def warn(self, key: str, message: str, *args: Any, every_s: float = 5.0) -> None:
        """Counted, rate-limited warning (one line per ``key`` every ``every_s``, then a count of the dropped)."""
        self.counters[key] += 1
        n = self.counters[key]
        self.rate_log.log(key, logging.WARNING, "[%s] " + message + (f" (x{n})" if n > 1 else ""), self.name, *args,
                          burst=1, window_s=every_s)

    def _guard(self, callback: Callable[[Any], None], topic: str) -> Callable[[Any], None]:
        def guarded(msg: Any) -> None:
            if self.closed:
                return
            try:
                callback(msg)
            except msgs.MessageError as exc:
                self.warn("invalid_message", "ignored message on %s: %s", topic, exc)
            except Exception:  # noqa: BLE001 - the node keeps running; logged (rate-limited) with traceback
                self.counters["callback_error"] += 1
                self.rate_log.log(f"callback_error:{topic}", logging.ERROR,
                                  "[%s] callback for %s failed; node keeps running", self.name, topic, exc_info=True)

        return guarded

    def _guard_timer(self, callback: Callable[[], None]) -> Callable[[], None]:
        def guarded() -> None:
            if self.closed:
                return
            try:
                callback()
            except Exception:  # noqa: BLE001 - the node keeps running; logged (rate-limited) with traceback
                self.counters["timer_error"] += 1
                self.rate_log.log("timer_error", logging.ERROR, "[%s] timer callback failed; node keeps running",
                                  self.name, exc_info=True)

        return guarded

    def stats(self) -> dict[str, Any]:
        """Counters plus per-subscription receive/decode-error counts (for logs and tests)."""
        return {
            "counters": dict(self.counters),
            "subscriptions": {s.topic: {"received": s.received, "decode_errors": s.decode_errors,
                                        "decode_log_suppressed": s.rate_log.suppressed["decode"]}
                              for s in self.subscriptions},
            "published": {p.topic: p.published for p in self.publishers},
            "log_suppressed": dict(self.rate_log.suppressed),
        }

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.rate_log.flush()
        if self._rosout is not None:
            self.log.removeHandler(self._rosout)
        if self.parameter_services is not None:
            self.parameter_services.close()
        for t in self.timers:
            t.cancel()
        for e in [*self.publishers, *self.subscriptions]:
            e.close()
        self.transport.unregister_node(self.node_id)


class Executor:
    """Single-threaded executor: delivers messages and fires timers of the nodes it holds."""

    def __init__(self, nodes: Iterable[NodeCore] = ()) -> None:
        self.nodes: list[NodeCore] = []
        for n in nodes:
            self.add(n)

    def add(self, node: NodeCore) -> None:
        self.nodes.append(node)

    @property
    def transports(self) -> list[Transport]:
        seen: dict[int, Transport] = {}
        for n in self.nodes:
            seen.setdefault(id(n.transport), n.transport)
        return list(seen.values())

    def _next_timer_s(self) -> float:
        due = [t.due_in_s() for n in self.nodes if not n.closed for t in n.timers if not t.cancelled]
        return min(due) if due else math.inf

    def spin_once(self, timeout: float = 0.0) -> int:
        """Delivers what is pending (waiting up to ``timeout`` or until the next timer), fires due timers."""
        transports = self.transports
        wait = min(timeout, self._next_timer_s())
        n = 0
        for i, t in enumerate(transports):
            if not t.closed:
                n += t.spin_once(wait if i == 0 else 0.0)
        for node in self.nodes:
            if node.closed:
                continue
            now = node.now_ns()
            for timer in list(node.timers):
                if timer.fire_if_due(now):
                    n += 1
        return n

    def spin_until(self, predicate: Callable[[], bool], timeout: float | None = None, poll_s: float = 0.05) -> bool:
        """Spins until ``predicate()`` is true (True) or ``timeout`` seconds pass (False)."""
        end = math.inf if timeout is None else time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= end:
                return False
            self.spin_once(poll_s)
        return True

    def close(self) -> None:
        for n in self.nodes:
            n.close()
