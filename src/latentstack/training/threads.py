"""Intra-op thread count chosen by timing real training steps (moved here from ``policies/train.py``)."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["ThreadTuner"]


class ThreadTuner:
    """Picks the intra-op thread count by timing real training steps.

    On a shared 2-core machine two threads only help while the machine is otherwise idle; when another
    process occupies a core they are 2-10x *slower* than one (measured: 0.64 vs 1.63 steps/s), because
    OpenMP threads spin-wait on each other. So the choice is re-measured every ``every`` steps:
    ``probe`` timed steps per candidate, the fastest wins.
    """

    def __init__(self, candidates: list[int], every: int = 200, probe: int = 3) -> None:
        self.candidates = candidates
        self.every = every
        self.probe = probe
        self.current = candidates[-1]
        self._plan: list[int] = []
        self._times: dict[int, list[float]] = {}
        self._since = 0
        self._start_probe()

    def _start_probe(self) -> None:
        # one warm-up step after each switch is not timed
        self._plan = [c for c in self.candidates for _ in range(self.probe + 1)]
        self._times = {c: [] for c in self.candidates}
        self._last: int | None = None

    def before_step(self) -> None:
        if self._plan:
            c = self._plan[0]
            if c != torch.get_num_threads():
                torch.set_num_threads(c)
        elif torch.get_num_threads() != self.current:
            torch.set_num_threads(self.current)

    def after_step(self, seconds: float) -> None:
        if self._plan:
            c = self._plan.pop(0)
            if self._last == c:
                self._times[c].append(seconds)
            self._last = c
            if not self._plan:
                self.current = min(
                    self.candidates, key=lambda k: float(np.median(self._times[k] or [np.inf]))
                )
                torch.set_num_threads(self.current)
                self._since = 0
            return
        self._since += 1
        if self._since >= self.every:
            self._start_probe()
