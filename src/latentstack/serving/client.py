"""Robot-side client of ``lstack serve`` (openpi's websocket protocol): imports numpy, msgpack and websockets only.

- :class:`WebsocketClientPolicy` -- one connection: ``get_server_metadata()``, ``infer(obs) -> {"actions",
  "server_timing", ...}``, ``reset(seed)``. A text frame from the server is its traceback (the server then
  closes with 1011): raised here as :class:`RemotePolicyError` with that text.
- :class:`RemotePolicy` -- the :class:`latentstack.policies.protocol.Policy` protocol over a connection, what the
  policy node builds for ``policy: ws://host:port``. It executes the first ``n_action_steps`` actions of each
  returned chunk open-loop (openpi's ``ActionChunkBroker``; default: the server's ``n_action_steps``, the same
  count the local policy executes), then asks again: one request per chunk, not per control step.

Seeds: ``reset(seed)`` sends a control message ``{"__control__": "reset", "seed": seed}`` (an extension: openpi
clients never send it and are unaffected). The server keeps one noise generator per connection, seeded from it,
so a client's sampling noise is the stream the local policy would draw after ``reset(seed)``, whatever other
clients do and whether or not requests are batched. A request may also carry its own ``"noise"`` array
(horizon, action_dim), which the server then uses as is.

This file is self-contained on purpose (no other latentstack import), so it can be copied onto a robot.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np
import websockets
from websockets.sync.client import connect

from latentstack.serving import msgpack_numpy

__all__ = ["RemotePolicy", "RemotePolicyError", "WebsocketClientPolicy", "is_remote_spec"]

REMOTE_SCHEMES = ("ws://", "wss://")


def is_remote_spec(spec: str) -> bool:
    """True for a policy spec that names a server (``ws://host:port`` / ``wss://...``)."""
    return str(spec).startswith(REMOTE_SCHEMES)


class RemotePolicyError(RuntimeError):
    """The server failed on a request; the message is the server's traceback text."""


class WebsocketClientPolicy:
    """One websocket connection to a policy server (synchronous request -> reply)."""

    def __init__(self, uri: str = "ws://127.0.0.1:8000", *, connect_timeout_s: float = 10.0,
                 max_size: int | None = 64 << 20) -> None:
        if not is_remote_spec(uri):
            raise ValueError(f"policy server URI must start with ws:// or wss://, got {uri!r}")
        self.uri = uri
        deadline = time.monotonic() + connect_timeout_s
        while True:  # the server may still be loading its model: retry until the deadline
            try:
                self._ws = connect(uri, compression=None, max_size=max_size, open_timeout=connect_timeout_s)
                break
            except (OSError, websockets.exceptions.InvalidHandshake):
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)
        self._metadata = self._recv()

    def _recv(self) -> dict[str, Any]:
        try:
            msg = self._ws.recv()
        except websockets.exceptions.ConnectionClosed as exc:
            raise RemotePolicyError(f"policy server closed the connection: {exc}") from None
        if isinstance(msg, str):  # the server's traceback; it closes with 1011 right after
            raise RemotePolicyError(f"policy server error:\n{msg}")
        reply = msgpack_numpy.unpackb(msg)
        if not isinstance(reply, dict):
            raise RemotePolicyError(f"policy server sent a {type(reply).__name__}, expected a dict")
        return reply

    def get_server_metadata(self) -> dict[str, Any]:
        return dict(self._metadata)

    def infer(self, obs: Mapping[str, Any]) -> dict[str, Any]:
        """One observation dict (arrays / str / numbers) -> the reply (``actions`` (horizon, action_dim), ...)."""
        self._ws.send(msgpack_numpy.packb(dict(obs)))
        return self._recv()

    def reset(self, seed: int | None = None) -> None:
        """Reseed this connection's noise generator on the server (``None``: keep the current stream)."""
        self._ws.send(msgpack_numpy.packb({"__control__": "reset", "seed": None if seed is None else int(seed)}))
        reply = self._recv()
        if not reply.get("reset"):
            raise RemotePolicyError(f"unexpected reply to reset: {sorted(reply)}")

    def close(self) -> None:
        self._ws.close()


def _wire_obs(obs: Mapping[str, Any]) -> dict[str, Any]:
    """The Policy-protocol observation as it travels: arrays stay arrays (dtype kept), text stays str."""
    out: dict[str, Any] = {}
    for k, v in obs.items():
        if isinstance(v, (str, bytes, int, float, bool)) or v is None:
            out[k] = v
        else:
            out[k] = np.asarray(v)
    return out


class RemotePolicy:
    """:class:`~latentstack.policies.protocol.Policy` backed by a policy server (see the module docstring)."""

    def __init__(self, uri: str, *, n_action_steps: int | None = None, connect_timeout_s: float = 10.0) -> None:
        self.client = WebsocketClientPolicy(uri, connect_timeout_s=connect_timeout_s)
        meta = self.client.get_server_metadata()
        n = int(n_action_steps or meta.get("n_action_steps") or meta.get("action_horizon") or 1)
        if n < 1:
            raise ValueError(f"n_action_steps must be >= 1, got {n}")
        self.n_action_steps = n
        self._queue: deque[np.ndarray] = deque()
        self.requests = 0
        self.last_timing: dict[str, Any] = {}

    @property
    def metadata(self) -> dict[str, Any]:
        return self.client.get_server_metadata()

    def reset(self, seed: int | None = None) -> None:
        self._queue.clear()
        self.client.reset(seed)

    def select_action(self, obs: Mapping[str, Any]) -> np.ndarray:
        if not self._queue:
            reply = self.client.infer(_wire_obs(obs))
            chunk = np.asarray(reply["actions"], dtype=np.float32)
            if chunk.ndim != 2 or chunk.shape[0] < self.n_action_steps:
                raise RemotePolicyError(f"server chunk of shape {chunk.shape} < n_action_steps={self.n_action_steps}")
            self._queue.extend(np.array(row, dtype=np.float32) for row in chunk[: self.n_action_steps])
            self.requests += 1
            self.last_timing = dict(reply.get("server_timing") or {})
        return self._queue.popleft()

    def latent_sites(self) -> dict[str, Any]:
        return {}  # the model's internals live on the server (steering/quantization are applied there)

    def close(self) -> None:
        self.client.close()
