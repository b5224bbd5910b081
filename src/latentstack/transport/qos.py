"""ROS 2 QoS profiles (rmw ``qos_profiles.h``) as plain frozen dataclasses, shared by every backend."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

__all__ = [
    "DEFAULT",
    "PARAMETERS",
    "PROFILES",
    "SENSOR_DATA",
    "TRANSIENT_LOCAL",
    "Durability",
    "History",
    "QoSProfile",
    "Reliability",
    "qos_compatible",
    "qos_profile",
]


class Reliability(str, Enum):
    RELIABLE = "reliable"
    BEST_EFFORT = "best_effort"


class Durability(str, Enum):
    VOLATILE = "volatile"
    TRANSIENT_LOCAL = "transient_local"


class History(str, Enum):
    KEEP_LAST = "keep_last"
    KEEP_ALL = "keep_all"


@dataclass(frozen=True)
class QoSProfile:
    """The QoS knobs ROS 2 nodes actually negotiate (reliability, durability, history, depth)."""

    reliability: Reliability = Reliability.RELIABLE
    durability: Durability = Durability.VOLATILE
    history: History = History.KEEP_LAST
    depth: int = 10

    def __post_init__(self) -> None:
        object.__setattr__(self, "reliability", Reliability(self.reliability))
        object.__setattr__(self, "durability", Durability(self.durability))
        object.__setattr__(self, "history", History(self.history))
        if self.history == History.KEEP_LAST and int(self.depth) < 1:
            raise ValueError(f"KEEP_LAST needs depth >= 1, got {self.depth}")
        object.__setattr__(self, "depth", int(self.depth))

    def with_depth(self, depth: int) -> QoSProfile:
        return replace(self, depth=depth)

    def to_dict(self) -> dict[str, Any]:
        return {"reliability": self.reliability.value, "durability": self.durability.value,
                "history": self.history.value, "depth": self.depth}


SENSOR_DATA = QoSProfile(Reliability.BEST_EFFORT, Durability.VOLATILE, History.KEEP_LAST, 5)
DEFAULT = QoSProfile(Reliability.RELIABLE, Durability.VOLATILE, History.KEEP_LAST, 10)
PARAMETERS = QoSProfile(Reliability.RELIABLE, Durability.VOLATILE, History.KEEP_LAST, 1000)
# /tf_static-style latched topic (StaticBroadcasterQoS): late joiners get the last sample.
TRANSIENT_LOCAL = QoSProfile(Reliability.RELIABLE, Durability.TRANSIENT_LOCAL, History.KEEP_LAST, 1)
# /clock (rclcpp ClockQoS): only the newest time matters
CLOCK = QoSProfile(Reliability.BEST_EFFORT, Durability.VOLATILE, History.KEEP_LAST, 1)

PROFILES: dict[str, QoSProfile] = {
    "sensor_data": SENSOR_DATA,
    "default": DEFAULT,
    "services_default": DEFAULT,
    "parameters": PARAMETERS,
    "transient_local": TRANSIENT_LOCAL,
    "clock": CLOCK,
}


def qos_profile(spec: str | QoSProfile | Mapping[str, Any] | None) -> QoSProfile:
    """A profile by name (``sensor_data``, ``default``, ``transient_local``, ...), dict, or as is."""
    if spec is None:
        return DEFAULT
    if isinstance(spec, QoSProfile):
        return spec
    if isinstance(spec, str):
        try:
            return PROFILES[spec]
        except KeyError:
            raise ValueError(f"unknown QoS profile {spec!r}; known: {sorted(PROFILES)}") from None
    if isinstance(spec, Mapping):
        d = dict(spec)
        base = qos_profile(d.pop("profile", "default"))
        unknown = set(d) - {"reliability", "durability", "history", "depth"}
        if unknown:
            raise ValueError(f"unknown QoS fields {sorted(unknown)}")
        return replace(base, **d)
    raise TypeError(f"cannot make a QoS profile from {spec!r}")


def qos_compatible(offered: QoSProfile, requested: QoSProfile) -> tuple[bool, str]:
    """DDS request/offered rules: a RELIABLE reader needs a RELIABLE writer; a TRANSIENT_LOCAL
    reader needs a TRANSIENT_LOCAL writer. Returns ``(ok, reason)``."""
    if requested.reliability == Reliability.RELIABLE and offered.reliability == Reliability.BEST_EFFORT:
        return False, "RELIABLE subscription cannot match a BEST_EFFORT publisher"
    if requested.durability == Durability.TRANSIENT_LOCAL and offered.durability == Durability.VOLATILE:
        return False, "TRANSIENT_LOCAL subscription cannot match a VOLATILE publisher"
    return True, ""
