"""The Policy protocol every runnable policy in the stack implements.

Observations are plain dicts so the robot-side client never needs the model stack:
``{"image": uint8 (H, W, 3) upright RGB, "state": float32 (state_dim,),
"instruction": str, "task": str}``. Actions are float32 numpy arrays.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

Observation = Mapping[str, Any]


@runtime_checkable
class Policy(Protocol):
    """What the evaluation harness, the policy node and the steering/quant tools rely on."""

    def reset(self, seed: int | None = None) -> None:
        """Start a new episode: clear the action queue; reseed any sampling noise."""

    def select_action(self, obs: Observation) -> np.ndarray:
        """One action for the current control step (pops the action-chunk queue)."""

    def latent_sites(self) -> Mapping[str, Any]:
        """Named :class:`latentstack.latent.Site` objects, relative to the policy module."""


class ActionChunkQueue:
    """Executes the first ``n_action_steps`` actions of each predicted chunk, then asks again."""

    def __init__(self, n_action_steps: int) -> None:
        if n_action_steps < 1:
            raise ValueError(f"n_action_steps must be >= 1, got {n_action_steps}")
        self.n_action_steps = n_action_steps
        self._queue: deque[np.ndarray] = deque()

    def clear(self) -> None:
        self._queue.clear()

    def __len__(self) -> int:
        return len(self._queue)

    def needs_chunk(self) -> bool:
        return not self._queue

    def push_chunk(self, chunk: np.ndarray) -> None:
        """``chunk``: (H, action_dim); keeps the first ``n_action_steps`` rows."""
        if chunk.ndim != 2:
            raise ValueError(f"action chunk must be (H, action_dim), got shape {chunk.shape}")
        if chunk.shape[0] < self.n_action_steps:
            raise ValueError(f"chunk of {chunk.shape[0]} steps < n_action_steps={self.n_action_steps}")
        self._queue.extend(np.asarray(row, dtype=np.float32) for row in chunk[: self.n_action_steps])

    def pop(self) -> np.ndarray:
        return self._queue.popleft()
