"""The node graph's wire interface: default topic names, message types, QoS and episode events.

Standard ROS 2 types wherever one fits, so a stock ROS 2 install can talk to the nodes; the one
project type is the action command (``ros/latentstack_msgs``: build it with colcon beside this package):

=====================  ==========================================  ====================
topic (relative)       type                                        QoS
=====================  ==========================================  ====================
``camera/image_raw``   sensor_msgs/msg/Image (rgb8)                sensor_data
``camera/camera_info`` sensor_msgs/msg/CameraInfo                  sensor_data
``joint_states``       sensor_msgs/msg/JointState                  sensor_data
``instruction``        std_msgs/msg/String                         transient_local
``action``             latentstack_msgs/msg/ActionCommand          default (reliable)
``episode``            diagnostic_msgs/msg/DiagnosticStatus        reliable, transient_local, depth 10
=====================  ==========================================  ====================

Image and JointState of one observation carry the same header stamp (sim time of the step),
which is how the policy node pairs them. Episode events are DiagnosticStatus messages named
``episode`` whose ``message`` is ``start`` or ``end``, whose ``hardware_id`` is the publishing node's
fully qualified name and whose key/values carry task, seed, instruction, success, length, the episode
``index`` and the publisher's ``session`` (random per run: a consumer refuses a start event that does not
advance ``index`` within a session, i.e. a replayed one).

Action commands are stamped and sequenced (:mod:`.commands`): an answer carries the stamp of the
observation it answers, a watchdog hold (``KIND_WATCHDOG_HOLD``: no fresh observation) the publisher's
clock; a robot applies a hold like any action (it stops motion), a lockstep simulator ignores it (it
waits for the answer to its current observation).

Who may publish: the sim bridge takes commands only from ``action_publishers`` and the policy node
episode events only from ``episode_publishers`` (node names; empty = anyone); see the README's threat model.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from latentstack import msgs
from latentstack.transport import QoSProfile
from latentstack.transport.qos import Durability, History, Reliability

from .commands import ACTION_TYPE, KIND_ACTION, KIND_WATCHDOG_HOLD

__all__ = [
    "ACTION_TYPE",
    "CAMERA_INFO_TYPE",
    "EPISODE_QOS",
    "EPISODE_TYPE",
    "IMAGE_TYPE",
    "INSTRUCTION_TYPE",
    "JOINT_STATE_TYPE",
    "KIND_ACTION",
    "KIND_WATCHDOG_HOLD",
    "SEED_MAX",
    "EpisodeEvent",
    "EpisodeGate",
    "decode_episode_event",
    "episode_event_msg",
    "is_valid_seed",
]

IMAGE_TYPE = "sensor_msgs/msg/Image"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
JOINT_STATE_TYPE = "sensor_msgs/msg/JointState"
INSTRUCTION_TYPE = "std_msgs/msg/String"
EPISODE_TYPE = "diagnostic_msgs/msg/DiagnosticStatus"

# Episode seeds are integers in [0, SEED_MAX]: what an int64 ROS parameter holds and what numpy /
# torch / gymnasium seeding accept (2**64 or a negative seed made reset raise and stalled the graph).
SEED_MAX = 2**63 - 1

EPISODE_QOS = QoSProfile(Reliability.RELIABLE, Durability.TRANSIENT_LOCAL, History.KEEP_LAST, 10)
INSTRUCTION_QOS = "transient_local"


def is_valid_seed(seed: object) -> bool:
    """True for an episode seed the graph accepts: an int (not a bool) in ``[0, SEED_MAX]``."""
    return isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed <= SEED_MAX


@dataclass(frozen=True)
class EpisodeEvent:
    event: str  # "start" | "end"
    task: str = ""
    seed: int | None = None
    instruction: str = ""
    success: bool = False
    length: int = 0
    index: int = 0  # episode number within the run
    session: int = 0  # random per run of the publisher (0: not sent)
    source: str = ""  # the publisher's fully qualified node name (DiagnosticStatus.hardware_id)


def episode_event_msg(ev: EpisodeEvent, distro: str | None = None) -> Any:
    values: dict[str, Any] = {"task": ev.task, "instruction": ev.instruction, "index": ev.index}
    if ev.session:
        values["session"] = ev.session
    if ev.seed is not None:
        values["seed"] = ev.seed
    if ev.event == "end":
        values.update(success=str(bool(ev.success)).lower(), length=ev.length)
    return msgs.new(EPISODE_TYPE, distro, level=0, name="episode", message=ev.event,
                    hardware_id=ev.source, values=msgs.kv_pairs(values, distro))


def decode_episode_event(msg: Any) -> EpisodeEvent | None:
    """EpisodeEvent from a DiagnosticStatus, None if it is some other diagnostic; MessageValueError if garbled."""
    if msg.name != "episode":
        return None
    if msg.message not in ("start", "end"):
        raise msgs.MessageValueError(f"episode event {msg.message!r} is neither 'start' nor 'end'")
    kv: Mapping[str, str] = {v.key: v.value for v in msg.values}
    try:
        seed = int(kv["seed"]) if kv.get("seed", "") != "" else None
        ev = EpisodeEvent(
            event=msg.message, task=kv.get("task", ""), seed=seed, instruction=kv.get("instruction", ""),
            success=kv.get("success", "false") == "true", length=int(kv.get("length", 0) or 0),
            index=int(kv.get("index", 0) or 0), session=int(kv.get("session", 0) or 0), source=str(msg.hardware_id),
        )
    except ValueError as exc:
        raise msgs.MessageValueError(f"garbled episode event: {exc}") from None
    if seed is not None and not is_valid_seed(seed):  # refused here, before any reset sees it
        raise msgs.MessageValueError(f"episode seed {seed} outside [0, 2**63 - 1]")
    if not 0 <= ev.session < 2**64 or not 0 <= ev.index < 2**63:
        raise msgs.MessageValueError(f"episode session {ev.session} / index {ev.index} out of range")
    return ev


class EpisodeGate:
    """Refuses replayed episode starts: within one publisher session, ``index`` must go up.

    A new session (a restarted sim bridge) starts afresh. Events without a session (0) are taken as they
    come (older publishers). The TRANSIENT_LOCAL replay a late joiner gets is in order, so it passes.
    """

    def __init__(self) -> None:
        self.session = 0
        self.index = -1

    def check(self, ev: EpisodeEvent) -> str | None:
        """None to accept, else why the event is refused."""
        if ev.session and ev.session == self.session and ev.index <= self.index:
            return f"episode {ev.index} of session {ev.session} does not follow episode {self.index} (replayed)"
        if ev.session:
            self.session, self.index = ev.session, ev.index
        return None
