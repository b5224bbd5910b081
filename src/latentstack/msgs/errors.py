"""Exceptions of the message layer: one base class so a node can catch every wire problem at once."""
from __future__ import annotations

__all__ = ["MessageDecodeError", "MessageEncodeError", "MessageError", "MessageValueError", "UnknownMessageTypeError"]


class MessageError(Exception):
    """Base class: anything wrong with a ROS 2 message (type, bytes or content)."""


class UnknownMessageTypeError(MessageError, KeyError):
    """The type name is not in the typestore (neither built in nor registered)."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else "unknown message type"


class MessageDecodeError(MessageError, ValueError):
    """Bytes from the wire are not a valid CDR encoding of the expected type."""

    def __init__(self, typename: str, reason: str, size: int | None = None) -> None:
        self.typename = typename
        self.reason = reason
        self.size = size
        where = f" ({size} bytes)" if size is not None else ""
        super().__init__(f"cannot decode {typename}{where}: {reason}")


class MessageEncodeError(MessageError, ValueError):
    """A message object cannot be serialized as the requested type."""


class MessageValueError(MessageError, ValueError):
    """A well-formed message whose content is unusable (wrong encoding, size mismatch, NaN, ...)."""
