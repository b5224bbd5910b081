"""Rate-limited logging: a flood of bad input costs a bounded number of log lines, and the rest are counted.

Used by the transports (malformed bytes) and the node cores (invalid messages, callback errors).
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, ClassVar

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    """At most ``burst`` lines per key per ``window_s``; the rest are counted and summarized.

    A hostile or broken peer can send thousands of bad messages a second; one line (or one
    traceback) each would fill the disk and drown the useful lines (issue 14: 10.5 MB of log for
    5k messages). Per key, the first ``burst`` lines of a window are written; later ones are
    dropped and counted in :attr:`suppressed`, and the next line after the window closes is
    preceded by one summary line with the count (:meth:`flush` writes pending summaries, e.g. on close).
    """

    DEFAULT_BURST: ClassVar[int] = 5
    DEFAULT_WINDOW_S: ClassVar[float] = 10.0

    def __init__(self, logger: logging.Logger, burst: int = DEFAULT_BURST, window_s: float = DEFAULT_WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if burst < 1 or not window_s > 0:
            raise ValueError(f"need burst >= 1 and window_s > 0, got {burst}, {window_s}")
        self.logger = logger
        self.burst = burst
        self.window_s = window_s
        self.clock = clock
        self.suppressed: Counter[str] = Counter()  # lines dropped per key since creation
        self._state: dict[str, list[Any]] = {}  # key -> [window start, lines written, dropped in window, level]

    def log(self, key: str, level: int, message: str, *args: Any, exc_info: bool = False,
            burst: int | None = None, window_s: float | None = None) -> bool:
        """Writes the line unless ``key`` used up its budget in this window; True when written."""
        burst = self.burst if burst is None else burst
        window = self.window_s if window_s is None else window_s
        now = self.clock()
        st = self._state.get(key)
        if st is None or now - st[0] >= window:
            if st is not None:
                self._summarize(key, st, now - st[0])
            st = self._state[key] = [now, 0, 0, level]
        if st[1] >= burst:
            st[2] += 1
            self.suppressed[key] += 1
            return False
        st[1] += 1
        self.logger.log(level, message, *args, exc_info=exc_info)
        return True

    def _summarize(self, key: str, st: list[Any], elapsed: float) -> None:
        if st[2]:
            self.logger.log(st[3], "%d similar log line(s) for %r suppressed in the last %.1f s", st[2], key,
                            elapsed)
            st[2] = 0

    def flush(self) -> None:
        """Writes the summary of every key with dropped lines in its current window."""
        now = self.clock()
        for key, st in self._state.items():
            self._summarize(key, st, now - st[0])
