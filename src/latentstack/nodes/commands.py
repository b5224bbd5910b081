"""Action commands on the wire: stamped, sequenced, and checked by whoever applies them.

The policy node publishes ``latentstack_msgs/msg/ActionCommand`` (``ros/latentstack_msgs``):

- ``header.stamp``: for an answer (``KIND_ACTION``), the stamp of the observation it answers; for a
  watchdog hold (``KIND_WATCHDOG_HOLD``), the publisher's clock. ``header.frame_id``: the publisher's
  fully qualified node name (informational: anyone can write any string).
- ``session``: random, fixed for one run of the publisher; ``sequence``: 1, 2, 3, ... within it.

A consumer (the sim bridge, a robot driver) runs every command through a :class:`CommandFilter`,
which refuses, with a reason:

- ``replayed``: a sequence number already seen in the session (the same message sent again);
- ``out_of_order``: a sequence number lower than the newest seen (an old message arriving late);
- ``foreign_session``: a second publisher (another session) while the pinned one is alive, i.e. it
  published within ``session_timeout_s``; once the pinned session falls silent, a new one takes over
  (a restarted policy node). This keeps an intruder from interleaving commands with a live policy;
  it does not authenticate anyone (see the threat model in the README);
- ``stale``: an answer whose stamp is older than the consumer's reference by more than ``max_age_s``
  (the consumer says what "now" is: its sim time, or its clock); ``future``: one stamped more than
  ``max_future_s`` ahead of it. Holds are never stale: stopping is the safe side.

The sequence bookkeeping is updated by every command that passes the session and sequence checks,
even one then refused as stale, so a stale command still uses up its number.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from latentstack import msgs

__all__ = [
    "ACTION_TYPE",
    "KIND_ACTION",
    "KIND_WATCHDOG_HOLD",
    "ActionCommand",
    "CommandFilter",
    "CommandSequencer",
    "action_command_msg",
    "decode_action_command",
]

ACTION_TYPE = "latentstack_msgs/msg/ActionCommand"
KIND_ACTION = 0
KIND_WATCHDOG_HOLD = 1
KINDS = {KIND_ACTION: "action", KIND_WATCHDOG_HOLD: "watchdog_hold"}
_U64_MAX = 2**64 - 1


@dataclass(frozen=True)
class ActionCommand:
    """A decoded, validated ``ActionCommand``."""

    values: np.ndarray
    kind: int
    stamp_ns: int
    session: int
    sequence: int
    source: str = ""

    @property
    def is_hold(self) -> bool:
        return self.kind == KIND_WATCHDOG_HOLD


class CommandSequencer:
    """The publisher side: one random session per run, then sequence numbers 1, 2, 3, ..."""

    def __init__(self, session: int | None = None) -> None:
        # 63 random bits, never 0 (0 reads as "unset" on the wire)
        self.session = secrets.randbits(63) | 1 if session is None else int(session)
        if not 0 < self.session <= _U64_MAX:
            raise ValueError(f"session must be in [1, 2**64 - 1], got {session}")
        self.sequence = 0

    def next(self) -> int:
        self.sequence += 1
        return self.sequence


def action_command_msg(values: np.ndarray, kind: int, stamp_ns: int, sequencer: CommandSequencer,
                       source: str = "", distro: str | None = None) -> Any:
    """An ``ActionCommand`` message with the sequencer's next number."""
    if kind not in KINDS:
        raise ValueError(f"unknown command kind {kind}")
    return msgs.new(ACTION_TYPE, distro, header=msgs.header(stamp_ns, source, distro),
                    session=sequencer.session, sequence=sequencer.next(), kind=kind,
                    data=np.ascontiguousarray(values, dtype=np.float32).reshape(-1))


def decode_action_command(msg: Any, action_dim: int) -> ActionCommand:
    """:class:`ActionCommand` from a message; ``MessageValueError`` for a wrong size, kind, or a non-finite value."""
    kind = int(msg.kind)
    if kind not in KINDS:
        raise msgs.MessageValueError(f"action command kind {kind} is neither ACTION (0) nor WATCHDOG_HOLD (1)")
    values = np.asarray(msg.data, dtype=np.float32).reshape(-1)
    if values.size != action_dim:
        raise msgs.MessageValueError(f"action command has {values.size} values, expected {action_dim}")
    if not np.all(np.isfinite(values)):
        raise msgs.MessageValueError("action command has non-finite values")
    if int(msg.sequence) < 1 or int(msg.session) < 1:
        raise msgs.MessageValueError(f"action command session {msg.session} / sequence {msg.sequence} must be >= 1")
    return ActionCommand(values.copy(), kind, msgs.stamp_ns(msg), int(msg.session), int(msg.sequence),
                         str(msg.header.frame_id))


@dataclass
class CommandFilter:
    """The consumer side (see the module docstring). ``check`` returns None (accept) or the refusal reason."""

    max_age_s: float | None = None  # None: no staleness check (the caller checks the stamp itself)
    max_future_s: float | None = None  # None: no check; a simulator's own sim time allows 0, a robot its clock skew
    session_timeout_s: float = 1.0
    session: int | None = None  # the pinned session
    last_sequence: int = 0
    _last_seen_ns: int = field(default=0, repr=False)

    def check(self, cmd: ActionCommand, now_ns: int, reference_stamp_ns: int | None = None) -> str | None:
        """``now_ns``: the consumer's clock (session liveness); ``reference_stamp_ns``: what an answer's stamp
        is compared with for staleness (sim time for a simulator), default ``now_ns``."""
        if cmd.session != self.session:
            alive = self.session is not None and now_ns - self._last_seen_ns <= int(self.session_timeout_s * 1e9)
            if alive:
                return "foreign_session"
            self.session, self.last_sequence = cmd.session, 0  # the first or a restarted publisher
        if cmd.sequence == self.last_sequence:
            return "replayed"
        if cmd.sequence < self.last_sequence:
            return "out_of_order"
        self.last_sequence = cmd.sequence
        self._last_seen_ns = now_ns
        if not cmd.is_hold:
            ref = now_ns if reference_stamp_ns is None else reference_stamp_ns
            if self.max_age_s is not None and ref - cmd.stamp_ns > int(self.max_age_s * 1e9):
                return "stale"
            if self.max_future_s is not None and cmd.stamp_ns - ref > int(self.max_future_s * 1e9):
                return "future"
        return None
