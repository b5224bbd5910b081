"""TF as the node cores read it: a small tf2-like buffer fed from ``/tf`` and ``/tf_static`` (no ROS needed).

:class:`TFBuffer` keeps every static transform (latest per parent/child pair) and, per dynamic pair, the last
``cache_size`` stamped transforms (a sample older than the newest one of its edge means the source restarted:
that edge's samples are dropped, as tf2 clears its buffer when time jumps back). :meth:`TFBuffer.lookup` returns the 4×4 ``target ← source`` matrix at a stamp by
chaining edges through the tree (either direction); a dynamic edge is taken at exactly that stamp or interpolated
(translation linearly, rotation by slerp) between the two stored samples around it, as tf2 does; a stamp outside
the stored range, an unknown frame or a tree without a path raises :class:`TFLookupError` (the caller logs it).
Memory is bounded: ``cache_size`` samples per dynamic edge, ``max_frames`` frames in all (further frames are
refused with a counted warning by the node).

Conversions :func:`transform_to_matrix` / :func:`matrix_to_quaternion` are plain numpy (float64).
"""
from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

from latentstack import msgs

__all__ = ["TFBuffer", "TFLookupError", "matrix_to_quaternion", "quaternion_to_matrix", "transform_to_matrix"]


class TFLookupError(LookupError):
    """No transform between two frames at the asked stamp."""


def quaternion_to_matrix(q: Any) -> np.ndarray:
    """3×3 rotation of a quaternion ``(x, y, z, w)`` (normalised first; a zero quaternion raises ValueError)."""
    x, y, z, w = (float(v) for v in q)
    n = math.sqrt(x * x + y * y + z * z + w * w)
    if not math.isfinite(n) or n < 1e-9:
        raise ValueError(f"quaternion ({x}, {y}, {z}, {w}) is not a rotation")
    x, y, z, w = x / n, y / n, z / n, w / n
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def matrix_to_quaternion(r: np.ndarray) -> tuple[float, float, float, float]:
    """``(x, y, z, w)`` of a 3×3 rotation matrix (Shepperd's method: the numerically stable branch)."""
    m = np.asarray(r, dtype=np.float64)
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0:
        s = math.sqrt(tr + 1.0) * 2
        w, x, y, z = 0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
        w, x, y, z = (m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s
    elif m[1, 1] > m[2, 2]:
        s = math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
        w, x, y, z = (m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s
    else:
        s = math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
        w, x, y, z = (m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s
    return float(x), float(y), float(z), float(w)


def transform_to_matrix(tf: Any) -> np.ndarray:
    """4×4 float64 of a ``geometry_msgs/Transform``; MessageValueError for non-finite values or a zero rotation."""
    t, q = tf.translation, tf.rotation
    vals = [t.x, t.y, t.z, q.x, q.y, q.z, q.w]
    if not all(math.isfinite(float(v)) for v in vals):
        raise msgs.MessageValueError(f"transform has non-finite values {vals}")
    out = np.eye(4)
    try:
        out[:3, :3] = quaternion_to_matrix((q.x, q.y, q.z, q.w))
    except ValueError as exc:
        raise msgs.MessageValueError(str(exc)) from None
    out[:3, 3] = (float(t.x), float(t.y), float(t.z))
    return out


def _slerp(a: np.ndarray, b: np.ndarray, u: float) -> np.ndarray:
    """Rotation between 3×3 ``a`` (u = 0) and ``b`` (u = 1) on the shortest arc."""
    qa, qb = np.array(matrix_to_quaternion(a)), np.array(matrix_to_quaternion(b))
    d = float(qa @ qb)
    if d < 0:
        qb, d = -qb, -d
    if d > 0.9995:  # nearly equal: linear is exact enough and avoids 0/0
        q = qa + u * (qb - qa)
    else:
        th = math.acos(d)
        q = (math.sin((1 - u) * th) * qa + math.sin(u * th) * qb) / math.sin(th)
    return quaternion_to_matrix(q)


class TFBuffer:
    """``/tf`` + ``/tf_static`` edges; lookups chain them (module docstring)."""

    def __init__(self, cache_size: int = 100, max_frames: int = 256) -> None:
        self.cache_size = int(cache_size)
        self.max_frames = int(max_frames)
        self._static: dict[str, tuple[str, np.ndarray]] = {}  # child -> (parent, parent <- child)
        self._dynamic: dict[str, tuple[str, deque[tuple[int, np.ndarray]]]] = {}

    @property
    def frames(self) -> set[str]:
        return {*self._static, *self._dynamic, *(p for p, _ in self._static.values()),
                *(p for p, _ in self._dynamic.values())}

    def clear_dynamic(self) -> None:
        """Forget the dynamic samples (a time jump back: tf2 clears its buffer the same way)."""
        self._dynamic.clear()

    def add(self, tf: Any, static: bool) -> None:
        """One ``geometry_msgs/TransformStamped``; MessageValueError when malformed, over ``max_frames`` or when
        it gives a frame a second parent."""
        parent, child = str(tf.header.frame_id).lstrip("/"), str(tf.child_frame_id).lstrip("/")
        if not parent or not child or parent == child:
            raise msgs.MessageValueError(f"transform {parent!r} <- {child!r} needs two distinct frame ids")
        mat = transform_to_matrix(tf.transform)
        known = self.frames
        if len(known | {parent, child}) > self.max_frames:
            raise msgs.MessageValueError(f"TF tree would exceed max_frames {self.max_frames}")
        other = self._dynamic.get(child) if static else self._static.get(child)
        if other is not None and other[0] != parent:
            raise msgs.MessageValueError(f"frame {child!r} already has parent {other[0]!r}, not {parent!r}")
        if static:
            self._static[child] = (parent, mat)
            return
        entry = self._dynamic.get(child)
        if entry is None or entry[0] != parent:
            entry = (parent, deque(maxlen=self.cache_size))
            self._dynamic[child] = entry
        stamp = msgs.stamp_ns(tf)
        samples = entry[1]
        if samples and stamp < samples[-1][0]:  # time went back (a restarted source): its old samples are void
            samples.clear()
        if samples and stamp == samples[-1][0]:
            samples[-1] = (stamp, mat)
        else:
            samples.append((stamp, mat))

    def add_message(self, msg: Any, static: bool) -> None:
        """Every transform of a ``tf2_msgs/TFMessage`` (a bad one raises after the good ones are stored)."""
        errors = []
        for tf in msg.transforms:
            try:
                self.add(tf, static)
            except msgs.MessageValueError as exc:
                errors.append(str(exc))
        if errors:
            raise msgs.MessageValueError("; ".join(errors))

    def _edge(self, child: str, stamp: int) -> tuple[str, np.ndarray] | None:
        """``(parent, parent <- child)`` at ``stamp``; None at a root. TFLookupError when the stamp is not covered."""
        if child in self._static:
            return self._static[child]
        if child not in self._dynamic:
            return None
        parent, samples = self._dynamic[child]
        stamps = [s for s, _ in samples]
        i = int(np.searchsorted(stamps, stamp))
        if i < len(stamps) and stamps[i] == stamp:
            return parent, samples[i][1]
        if i == 0 or i == len(stamps):
            lo, hi = stamps[0] / 1e9, stamps[-1] / 1e9
            raise TFLookupError(f"no transform {parent!r} <- {child!r} at {stamp / 1e9:.9f} s "
                                f"(buffer holds {lo:.3f} .. {hi:.3f} s)")
        (s0, a), (s1, b) = samples[i - 1], samples[i]
        u = (stamp - s0) / (s1 - s0)
        out = np.eye(4)
        out[:3, :3] = _slerp(a[:3, :3], b[:3, :3], u)
        out[:3, 3] = a[:3, 3] + u * (b[:3, 3] - a[:3, 3])
        return parent, out

    def _to_root(self, frame: str, stamp: int) -> tuple[list[str], list[np.ndarray]]:
        chain, mats = [frame], [np.eye(4)]
        while True:
            edge = self._edge(chain[-1], stamp)
            if edge is None:
                return chain, mats
            parent, m = edge
            if parent in chain or len(chain) > self.max_frames:
                raise TFLookupError(f"TF loop through {parent!r}")
            chain.append(parent)
            mats.append(m)

    def lookup(self, target: str, source: str, stamp: int) -> np.ndarray:
        """4×4 ``target ← source`` at ``stamp`` (ns). Identity when the frames are equal."""
        target, source = target.lstrip("/"), source.lstrip("/")
        if target == source:
            return np.eye(4)
        known = self.frames
        for f in (target, source):
            if f not in known:
                raise TFLookupError(f"frame {f!r} is not in the TF tree (known: {sorted(known)[:8]})")
        sc, sm = self._to_root(source, stamp)
        tc, tm = self._to_root(target, stamp)
        common = next((f for f in sc if f in tc), None)
        if common is None:
            raise TFLookupError(f"frames {target!r} and {source!r} are not connected")
        # common <- source and common <- target as products of the edges up to the common ancestor
        up_s = _compose(sm[1:sc.index(common) + 1])
        up_t = _compose(tm[1:tc.index(common) + 1])
        if up_t is None and up_s is None:
            return np.eye(4)
        if up_t is None:
            return up_s
        inv_t = np.eye(4)
        inv_t[:3, :3] = up_t[:3, :3].T
        inv_t[:3, 3] = -up_t[:3, :3].T @ up_t[:3, 3]
        return inv_t if up_s is None else inv_t @ up_s


def _compose(edges: list[np.ndarray]) -> np.ndarray | None:
    """``root <- frame`` from the edges listed frame-first (``parent <- child`` each); None for no edge (exactly
    the identity: no arithmetic, so an exact transform stays exact)."""
    out: np.ndarray | None = None
    for m in edges:
        out = m if out is None else m @ out
    return out
