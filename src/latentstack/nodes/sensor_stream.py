"""Shared driver of the simulated sensor nodes (``lidar_scene``, ``stereo_scene``): a finite stream of frames.

A sensor core publishes frame ``k`` (all its topics with one header stamp, ``k · dt_s`` of sim time) and then

- ``lockstep: true`` (default): waits for the downstream perception node's answer on ``answer_topic`` (a
  message whose header stamp is the frame's stamp: the detector and the depth node keep their input's stamp)
  before it publishes frame ``k + 1``; so every frame is processed exactly once, whatever the inference time,
  and a graph run is reproducible frame for frame (online == offline tests). The frame is re-sent every
  ``republish_s`` while no answer comes (a late subscriber over DDS, a best-effort sample lost at start-up);
  answers with another stamp (a late duplicate) are counted and ignored.
- ``lockstep: false``: publishes at ``rate_hz`` regardless of the consumers, as a real sensor does; a slow
  consumer drops frames (the perception nodes keep the newest). After the last frame the stream waits up to
  ``drain_s`` for its answer before it counts as finished.

``frames`` frames are sent, then :attr:`finished` is true (``lstack launch`` stops a graph when every
sensor and sim bridge has finished). Counters: ``frames_published``, ``frames_answered``, ``republished``,
``stale_answer`` (answers for a frame other than the current one).
"""
from __future__ import annotations

from typing import Any, ClassVar

from latentstack import msgs

from .base import CLOCK_QOS, CLOCK_TOPIC, CLOCK_TYPE, NodeCore, check, check_finite
from .tf import TF_QOS, TF_STATIC_QOS, TF_TYPE, tf_message, transform_stamped

__all__ = ["SensorStreamCore", "check_stream_params"]


def check_stream_params(p: Any) -> None:
    """``__post_init__`` checks of the stream fields every sensor's parameters share."""
    check(p.frames >= 1, f"frames must be >= 1, got {p.frames}")
    for name in ("rate_hz", "dt_s", "republish_s", "drain_s"):
        check_finite(name, getattr(p, name))
        check(getattr(p, name) > 0, f"{name} must be > 0, got {getattr(p, name)}")
    check(bool(p.answer_topic) or not p.lockstep, "lockstep needs an answer_topic")


class SensorStreamCore(NodeCore):
    """Frame scheduling of a simulated sensor; subclasses implement :meth:`publish_frame`."""

    # the node kind drives a graph run: the launcher waits until it has finished
    drives_graph: ClassVar[bool] = True
    answer_type: ClassVar[str] = ""

    def __init__(self, transport: Any, params: Any = None, *, name: str | None = None, namespace: str = "/") -> None:
        super().__init__(transport, params, name=name, namespace=namespace)
        self.frame_index = -1  # the frame last published
        self.answered = -1  # the last frame whose answer arrived
        self._last_sent_ns = 0
        self._started = False
        self.clock_pub = (self.create_publisher(CLOCK_TOPIC, CLOCK_TYPE, CLOCK_QOS)
                          if getattr(self.params, "publish_clock", False) else None)
        self.tf_static_pub = self.create_publisher("/tf_static", TF_TYPE, TF_STATIC_QOS)
        self._tf_pub: Any = None

    def publish_static_frames(self, frames: list[tuple[str, str, tuple[float, float, float]]]) -> None:
        """``(parent, child, xyz)`` mounts (no rotation) on /tf_static, once."""
        d = self.transport.distro
        self.tf_static_pub.publish(tf_message([transform_stamped(a, b, 0, xyz, distro=d) for a, b, xyz in frames], d))

    def publish_frame_tf(self, parent: str, child: str, stamp_ns: int, xyz: tuple[float, float, float]) -> None:
        """A transform that changes with the frame (on /tf, stamped with the frame)."""
        if self._tf_pub is None:
            self._tf_pub = self.create_publisher("/tf", TF_TYPE, TF_QOS)
        d = self.transport.distro
        self._tf_pub.publish(tf_message([transform_stamped(parent, child, stamp_ns, xyz, distro=d)], d))

    def setup_stream(self) -> None:
        """Answer subscription and timer (after the subclass created its publishers)."""
        p = self.params
        if p.answer_topic and self.answer_type:
            # best effort matches any writer (the depth node publishes sensor_data, the detector reliable)
            self.create_subscription(p.answer_topic, self.answer_type, self._on_answer, "sensor_data")
        if p.lockstep:
            self.create_timer(p.republish_s, self._republish)
        else:
            self.create_timer(1.0 / p.rate_hz, self._free_run_tick)

    # -- to implement
    def publish_frame(self, k: int, stamp_ns: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- scheduling
    def stamp(self, k: int) -> int:
        return round(k * self.params.dt_s * 1e9)

    @property
    def finished(self) -> bool:
        p = self.params
        if not self._started or self.frame_index < p.frames - 1:
            return False
        if self.answered >= p.frames - 1:
            return True
        if p.lockstep:
            return False
        return self.now_ns() - self._last_sent_ns >= int(p.drain_s * 1e9)

    def start(self) -> None:
        """Publishes the first frame (lockstep) or arms the rate timer (free-running)."""
        if self._started:
            return
        self._started = True
        if self.params.lockstep:
            self._send(0)

    def _send(self, k: int) -> None:
        self.frame_index = k
        if self.clock_pub is not None:  # sim time first: a use_sim_time consumer is at the frame's stamp
            d = self.transport.distro
            self.clock_pub.publish(msgs.new(CLOCK_TYPE, d, clock=msgs.ns_to_time(self.stamp(k), d)))
        self.publish_frame(k, self.stamp(k))
        self.counters["frames_published"] += 1
        self._last_sent_ns = self.now_ns()

    def _free_run_tick(self) -> None:
        if self._started and self.frame_index < self.params.frames - 1:
            self._send(self.frame_index + 1)

    def _republish(self) -> None:
        if not self._started or self.answered >= self.frame_index or self.frame_index < 0:
            return
        if self.now_ns() - self._last_sent_ns >= int(self.params.republish_s * 1e9):
            self.counters["republished"] += 1
            self._send(self.frame_index)

    def _on_answer(self, msg: Any) -> None:
        stamp = msgs.stamp_ns(msg)
        k = self.frame_index
        if k < 0 or stamp != self.stamp(k) or self.answered >= k:
            self.counters["stale_answer"] += 1
            return
        self.answered = k
        self.counters["frames_answered"] += 1
        if self.params.lockstep and k < self.params.frames - 1:
            self._send(k + 1)
