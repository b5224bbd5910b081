"""Heavy perception work off the executor: one background thread per node with a "latest wins" slot.

Why (issue 14): a perception callback that runs its model on the executor blocks every other node the
same executor spins (a 2048² stereo pair took 68 s on a CPU). A :class:`PerceptionNodeCore` splits the
work: the subscription callback (executor thread) only validates the message — the cheap input caps and
decoding, bounded by those caps — and hands the result to its :class:`LatestFrameWorker`; the worker
thread runs the model and publishes. The executor returns at once and keeps serving the other nodes.

The hand-off is a depth-1 slot, not a queue: a frame that arrives while one is in flight replaces the
pending one (counted as ``frames_dropped_busy``). A perception consumer wants the newest frame, not a
backlog, and memory stays bounded: at most one frame in flight plus one pending, however fast frames come.
Exceptions in the worker are logged (rate-limited, with the traceback) and counted (``worker_error``,
or ``invalid_message`` for the project's message errors); they never end the thread. ``close()`` stops
and joins it (the node does this before its endpoints close).

Publishing from the worker thread is safe on every transport: in-process publishers take the bus lock
(the delivery FIFO is guarded by the same lock); the DDS transport writes through Cyclone's C writer
(``dds_write`` is thread-safe) and touches no shared Python state; rclpy publishers are thread-safe (rcl
allows publishing from any thread). So the worker publishes directly — no queue back to the executor.

Synchronous mode (``threaded=False``, the nodes' ``async_inference: false``): ``submit`` runs the job on
the caller's thread and lets its exceptions reach the node's callback guard, exactly the behaviour before
the worker existed — for deterministic tests and offline == online comparisons. Both modes run the same
job function, so on the same frames (none dropped) they publish the same outputs.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from latentstack import msgs
from latentstack.transport.ratelimit import RateLimitedLog

from .base import NodeCore

__all__ = ["LatestFrameWorker", "PerceptionNodeCore"]


class LatestFrameWorker:
    """Runs ``job(item)`` for submitted items on one background thread; the newest pending item wins.

    Counters (:attr:`counters`, a snapshot): ``frames_submitted``, ``frames_processed`` (jobs finished,
    with or without error), ``frames_dropped_busy`` (replaced while pending), ``frames_dropped_closed``
    (pending at close), ``worker_error``, ``invalid_message``. ``max_held`` is the most items ever held at
    once (in flight + pending): 2 at most by construction, kept as the observable memory bound.
    """

    def __init__(self, job: Callable[[Any], None], *, name: str, logger: logging.Logger,
                 threaded: bool = True) -> None:
        self.job = job
        self.name = name
        self.threaded = threaded
        self.log = logger
        self.rate_log = RateLimitedLog(logger)  # used by the worker thread only (the node's is the executor's)
        self._cv = threading.Condition()
        self._pending: Any = None
        self._has_pending = False
        self._busy = False
        self._stop = False
        self._counters: Counter[str] = Counter()  # guarded by _cv: both threads count
        self.max_held = 0
        self._thread: threading.Thread | None = None

    # -- state (all under the lock, so a reader never sees a half-updated pair)
    @property
    def counters(self) -> dict[str, int]:
        with self._cv:
            return dict(self._counters)

    @property
    def in_flight(self) -> int:
        with self._cv:
            return int(self._busy)

    @property
    def pending(self) -> int:
        with self._cv:
            return int(self._has_pending)

    @property
    def closed(self) -> bool:
        return self._stop

    # -- executor side
    def submit(self, item: Any) -> None:
        """Hand ``item`` to the worker (threaded: returns at once; synchronous: runs the job here)."""
        if self._stop:
            return
        if not self.threaded:
            with self._cv:
                self._counters["frames_submitted"] += 1
            try:
                self.job(item)  # exceptions go to the caller (the node's callback guard counts them)
            finally:
                with self._cv:
                    self._counters["frames_processed"] += 1
            return
        with self._cv:
            self._counters["frames_submitted"] += 1
            if self._has_pending:
                self._counters["frames_dropped_busy"] += 1  # latest wins: the older pending frame is dropped
            self._pending, self._has_pending = item, True
            self.max_held = max(self.max_held, int(self._busy) + 1)
            if self._thread is None:  # started on the first frame: a node that never gets one holds no thread
                self._thread = threading.Thread(target=self._loop, name=f"{self.name}-worker", daemon=True)
                self._thread.start()
            self._cv.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Blocks until nothing is pending or in flight (True), or ``timeout`` seconds pass (False)."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while self._has_pending or self._busy:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cv.wait(left)
            return True

    def close(self, timeout: float = 10.0) -> None:
        """Stops the thread: a pending frame is dropped, one in flight finishes (joined up to ``timeout`` s)."""
        with self._cv:
            if self._stop:
                return
            self._stop = True
            if self._has_pending:
                self._counters["frames_dropped_closed"] += 1
                self._pending, self._has_pending = None, False
            self._cv.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():  # a daemon thread: it cannot keep the process alive; its late publish fails
                self.log.warning("[%s] worker still busy %.1f s after close; not waiting longer", self.name, timeout)
        self.rate_log.flush()

    # -- worker thread
    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._has_pending and not self._stop:
                    self._cv.wait()
                if self._stop:
                    return
                item, self._pending, self._has_pending = self._pending, None, False
                self._busy = True
            try:
                self.job(item)
            except msgs.MessageError as exc:  # the same classification as the executor's callback guard
                self._count("invalid_message")
                self.rate_log.log("invalid_message", logging.WARNING, "[%s] worker dropped a frame: %s",
                                  self.name, exc)
            except Exception:  # noqa: BLE001 - the worker keeps running; logged (rate-limited) with traceback
                self._count("worker_error")
                self.rate_log.log("worker_error", logging.ERROR, "[%s] worker job failed; node keeps running",
                                  self.name, exc_info=True)
            finally:
                item = None  # release the frame before waiting for the next one
                with self._cv:
                    self._busy = False
                    self._counters["frames_processed"] += 1
                    self._cv.notify_all()

    def _count(self, key: str) -> None:
        with self._cv:
            self._counters[key] += 1


class PerceptionNodeCore(NodeCore):
    """A node core whose model runs on a :class:`LatestFrameWorker` (``async_inference`` parameter)."""

    worker: LatestFrameWorker | None = None

    def start_worker(self, job: Callable[[Any], None], threaded: bool) -> LatestFrameWorker:
        self.worker = LatestFrameWorker(job, name=self.name, logger=self.log, threaded=threaded)
        return self.worker

    def submit(self, item: Any) -> None:
        """Hands one validated frame to the worker (see :meth:`LatestFrameWorker.submit`)."""
        if self.worker is None:
            raise RuntimeError(f"{type(self).__name__}: start_worker() was not called")
        self.worker.submit(item)

    def wait_idle(self, timeout: float | None = 30.0) -> bool:
        """Blocks until the frame in flight and the pending one are processed and published (True), or
        ``timeout`` seconds pass (False). Immediate in synchronous mode. For tests and offline runs."""
        return True if self.worker is None else self.worker.wait_idle(timeout)

    def stats(self) -> dict[str, Any]:
        """:meth:`NodeCore.stats` with the worker's counters merged into ``counters`` (and under ``worker``)."""
        st = super().stats()
        if self.worker is not None:
            wc = self.worker.counters
            merged = Counter(st["counters"])
            merged.update({k: v for k, v in wc.items() if k in ("worker_error", "invalid_message",
                                                                  "frames_dropped_busy", "frames_dropped_closed")})
            st["counters"] = dict(merged)
            st["log_suppressed"] = dict(Counter(st["log_suppressed"]) + Counter(
                {f"worker:{k}": v for k, v in self.worker.rate_log.suppressed.items()}))
            st["worker"] = {"threaded": self.worker.threaded, "counters": wc, "in_flight": self.worker.in_flight,
                            "pending": self.worker.pending, "max_held": self.worker.max_held}
        return st

    def close(self) -> None:
        # the worker first: it may be publishing, and its endpoints close next
        if self.worker is not None:
            self.worker.close()
        super().close()
