"""Asynchronous action-chunk execution: the next chunk is inferred while the current one executes.

:class:`ChunkExecutor` wraps a chunk policy (anything with ``reset(seed)`` and a chunk predictor; the VLA
through :class:`VLAChunker`) and implements the :class:`~latentstack.policies.protocol.Policy` protocol, so
the evaluation harness runs it as any policy. It is ROS-free; the policy node can drive it step by step.

Timeline (control steps ``t = 0, 1, ...``; ``H`` = chunk size, ``s`` = ``execute_steps``, ``d`` = delay):

- ``t = 0``: the first chunk is inferred blocking (the robot waits before moving, as every async client does).
- every ``s`` steps (``t = s, 2s, ...``) the next chunk is *requested* from the observation at that step. A
  chunk requested at ``t_r`` holds actions for the absolute steps ``t_r .. t_r + H - 1``.
- with a simulated inference delay of ``d`` control steps (deterministic, for evaluation) it becomes
  *available* at ``t_r + d``: its first ``d`` actions are stale (those steps already executed the previous
  chunk's actions) and are dropped; an action of it is never used before ``t_r + d``.
- on arrival, the steps both chunks cover are merged by the aggregation preset:

  ``latest_only``       the new chunk's action replaces the old one;
  ``weighted_average``  LeRobot's ``aggregate_fn``: ``0.3 · old + 0.7 · new``;
  ``rtc``               real-time chunking: the new chunk was *sampled conditioned on* the actions that execute
                        during its inference (the ``d̂`` committed actions ``t_r .. t_r + d̂ - 1``), then replaces
                        the old one as ``latest_only``. ``d̂`` is estimated from actions actually consumed: the
                        number of steps executed between the last chunk's request and its arrival
                        (``initial_delay_estimate`` before the first measurement), not from a configured value.

With ``d = 0`` and ``latest_only`` each chunk is requested, and at once used, every ``s`` steps: exactly the
synchronous policy (same observations, same noise draws in the same order, same actions).

RTC for the flow-matching VLA (:func:`sample_chunk_with_prefix`) is *hard replacement* inpainting: at every
Euler step, at flow time ``τ``, the first ``d̂`` rows of the flow state are overwritten by the committed actions
noised to that time, ``τ·ε + (1-τ)·a`` (pi0 convention, the same ``ε`` as the sample), and set to ``a`` at the
end; the network thus denoises the rest of the chunk attending to the committed prefix. No soft mask over the
rest of the overlap and no guidance gradient (the RTC paper's ΠGDM guidance with decaying weights is the fuller
form); the prefix is kept exactly, up to the normalization round trip.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np

from latentstack.policies.protocol import Observation

__all__ = ["AGGREGATIONS", "ChunkExecutor", "ChunkSource", "ThreadedChunkExecutor", "VLAChunker", "action_jerk",
           "sample_chunk_with_prefix"]

AGGREGATIONS = ("latest_only", "weighted_average", "rtc")
OLD_WEIGHT = 0.3  # LeRobot async inference: weighted_average = 0.3 · old + 0.7 · new


class ChunkSource(Protocol):
    """What :class:`ChunkExecutor` needs from a chunk policy."""

    chunk_size: int
    n_action_steps: int

    def reset(self, seed: int | None = None) -> None: ...

    def predict_chunk(self, obs: Observation, prefix: np.ndarray | None = None) -> np.ndarray:
        """(H, A) float32 raw actions for steps ``t .. t + H - 1``; with ``prefix`` (P, A), rows ``:P`` are
        conditioned to (and returned equal to) the prefix (RTC); sources without RTC raise on a prefix."""
        ...


class VLAChunker:
    """:class:`ChunkSource` over a :class:`~latentstack.policies.vla.VLAPolicy`: the same call sequence as its
    ``select_action`` (observation batch -> ``predict_action_chunk`` -> host numpy), so noise draws match."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.chunk_size = int(policy.config.chunk_size)
        self.n_action_steps = int(policy.config.n_action_steps)

    def reset(self, seed: int | None = None) -> None:
        self.policy.reset(seed=seed)

    def predict_chunk(self, obs: Observation, prefix: np.ndarray | None = None) -> np.ndarray:
        proc = self.policy._processor
        batch = proc.observation_batch(obs)
        if prefix is None or len(prefix) == 0:
            return proc.postprocess(self.policy.predict_action_chunk(batch)[0])
        return proc.postprocess(sample_chunk_with_prefix(self.policy, batch, prefix)[0])

    def latent_sites(self) -> Mapping[str, Any]:
        return self.policy.latent_sites()


def sample_chunk_with_prefix(policy: Any, batch: Mapping[str, Any], prefix: np.ndarray) -> Any:
    """VLA chunk (1, H, A) whose first ``P = len(prefix)`` raw actions are inpainted to ``prefix`` (P, A).

    Hard replacement at every Euler step (see the module docstring); draws its noise exactly as
    ``predict_action_chunk`` does (one ``randn`` of (1, H, A) on the policy's generator), eager path."""
    import torch

    from latentstack.latent.context import annotate

    cfg = policy.config
    p = len(prefix)
    if not 0 < p <= cfg.chunk_size:
        raise ValueError(f"prefix of {p} steps must be in [1, chunk_size={cfg.chunk_size}]")
    with torch.inference_mode(), annotate(step=policy._step):
        prefix_tokens, prefix_mask = policy.encode_prefix(batch, augment=False)
        gen = policy._generator
        noise = torch.randn(1, cfg.chunk_size, cfg.action_dim, generator=gen, device=gen.device)
        x = noise.to(device=prefix_tokens.device, dtype=torch.promote_types(prefix_tokens.dtype, torch.float32))
        known = policy.normalize_action(torch.as_tensor(np.asarray(prefix, np.float32), device=x.device))[None]
        eps = x[:, :p].clone()
        cache = policy.expert.prefix_cache(prefix_tokens)
        mask = policy._expert_mask(prefix_mask, x.shape[1])
        k_steps = int(cfg.num_inference_steps)
        dt = -1.0 / k_steps
        for k in range(k_steps):
            tau = 1.0 + k * dt
            x[:, :p] = tau * eps + (1.0 - tau) * known  # the committed actions, noised to flow time tau
            t = torch.full((1,), tau, dtype=x.dtype, device=x.device)
            with annotate(denoise_step=k):
                v = policy.expert(x, t, cache, mask)
            x = x + dt * v
        x[:, :p] = known
        actions = policy.unnormalize_action(x)
        if cfg.clip_actions:
            actions = actions.clamp(cfg.action_low, cfg.action_high)
        return actions


class ChunkExecutor:
    """Async chunk execution over a :class:`ChunkSource` with a simulated inference delay (see module doc).

    ``delay_steps``: control steps between a chunk's request and its availability (``0 <= d <= H - s`` so the
    schedule never runs dry). ``execute_steps``: steps between requests (default the source's
    ``n_action_steps``). ``aggregate``: one of :data:`AGGREGATIONS`. ``initial_delay_estimate``: RTC's
    prefix length before any delay was measured (default 0: unknown, the first async chunk is not inpainted).
    ``log``: keep, per chunk, ``(t_request, t_available, prefix_len, chunk)`` for inspection (tests).
    """

    def __init__(self, source: ChunkSource, delay_steps: int = 0, aggregate: str = "latest_only",
                 execute_steps: int | None = None, initial_delay_estimate: int = 0, log: bool = False) -> None:
        if aggregate not in AGGREGATIONS:
            raise ValueError(f"aggregate must be one of {AGGREGATIONS}, got {aggregate!r}")
        self.source = source
        self.h = int(source.chunk_size)
        self.s = int(execute_steps if execute_steps is not None else source.n_action_steps)
        self.d = int(delay_steps)
        if not 1 <= self.s <= self.h:
            raise ValueError(f"execute_steps={self.s} must be in [1, chunk_size={self.h}]")
        if not 0 <= self.d <= self.h - self.s:
            raise ValueError(f"delay_steps={self.d} must be in [0, chunk_size - execute_steps = {self.h - self.s}]")
        self.aggregate = aggregate
        self.initial_delay_estimate = int(initial_delay_estimate)
        self.keep_log = log
        self.reset()

    # ---------------------------------------------------------------- Policy protocol
    def reset(self, seed: int | None = None) -> None:
        self.source.reset(seed=seed)
        self.t = 0
        self._schedule: dict[int, np.ndarray] = {}  # absolute step -> action (the merged queue)
        self._pending: tuple[int, int, np.ndarray] | None = None  # (t_request, t_available, chunk)
        self._next_request = 0
        self.delay_estimate = self.initial_delay_estimate
        self.measured_delays: list[int] = []
        self.log: list[tuple[int, int, int, np.ndarray]] = []

    def select_action(self, obs: Observation) -> np.ndarray:
        t = self.t
        if self._pending is not None and t >= self._pending[1]:
            self._arrive()
        if t >= self._next_request and self._pending is None:
            self._request(obs, blocking=(t == 0))
        if t not in self._schedule:  # cannot happen with d <= H - s; guard against silent holds
            raise RuntimeError(f"no action scheduled for step {t}")
        action = self._schedule.pop(t)
        self.t += 1
        return action

    def latent_sites(self) -> Mapping[str, Any]:
        fn: Callable[[], Mapping[str, Any]] | None = getattr(self.source, "latent_sites", None)
        return fn() if fn is not None else {}

    # ---------------------------------------------------------------- internals
    def _request(self, obs: Observation, blocking: bool) -> None:
        t = self.t
        prefix = None
        p = 0
        if self.aggregate == "rtc" and not blocking:
            # the actions that will execute while this chunk is inferred (as far as the estimate says)
            p = min(self.delay_estimate, sum(1 for i in range(self.h) if t + i in self._schedule))
            if p > 0:
                prefix = np.stack([self._schedule[t + i] for i in range(p)])
        chunk = np.asarray(self.source.predict_chunk(obs, prefix), dtype=np.float32)
        if chunk.shape[0] != self.h:
            raise ValueError(f"chunk of {chunk.shape[0]} steps, expected {self.h}")
        avail = t if blocking else t + self.d
        if self.keep_log:
            self.log.append((t, avail, p, chunk.copy()))
        self._pending = (t, avail, chunk)
        self._next_request = t + self.s
        if avail <= t:
            self._arrive()

    def _arrive(self) -> None:
        assert self._pending is not None
        t_req, _, chunk = self._pending
        self._pending = None
        now = self.t
        consumed = now - t_req  # actions actually executed between request and arrival
        self.measured_delays.append(consumed)
        if t_req > 0:  # the blocking first chunk says nothing about the inference delay in steps
            self.delay_estimate = consumed
        for old in [k for k in self._schedule if k < now]:
            del self._schedule[old]
        for i in range(consumed, self.h):  # rows < consumed are stale: their steps already executed
            step = t_req + i
            new = chunk[i]
            old = self._schedule.get(step)
            if old is not None and self.aggregate == "weighted_average":
                new = (OLD_WEIGHT * old + (1.0 - OLD_WEIGHT) * new).astype(np.float32)
            self._schedule[step] = new


class ThreadedChunkExecutor(ChunkExecutor):
    """Real-time variant: each chunk after the first is inferred in a background thread while
    :meth:`select_action` keeps returning the current chunk's actions (for a node's control loop).

    The chunk is merged at the first ``select_action`` after its inference finished; the delay is therefore
    measured in actions actually consumed (what RTC's estimate uses). If the schedule runs dry before the
    chunk arrives (inference slower than ``H - s`` steps) ``select_action`` blocks on it rather than hold a
    stale action. A request due while one is in flight waits for it. Call :meth:`close` to stop the thread.
    """

    def __init__(self, source: ChunkSource, aggregate: str = "latest_only", execute_steps: int | None = None,
                 initial_delay_estimate: int = 0, log: bool = False) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="chunk-inference")
        self._future: Future[np.ndarray] | None = None
        self._request_info = (0, 0)  # (t_request, prefix_len) of the chunk in flight
        super().__init__(source, 0, aggregate, execute_steps, initial_delay_estimate, log)

    def reset(self, seed: int | None = None) -> None:
        fut = getattr(self, "_future", None)
        if fut is not None:
            fut.exception()  # wait: the source must not be reseeded while it samples; the chunk is dropped
        self._future = None
        super().reset(seed)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def select_action(self, obs: Observation) -> np.ndarray:
        t = self.t
        if self._future is not None and (self._future.done() or t not in self._schedule):
            self._collect()  # blocks only if the schedule ran dry
        if t >= self._next_request and self._future is None:
            if t == 0 or t not in self._schedule:
                self._request(obs, blocking=True)  # nothing to execute meanwhile: infer in this thread
            else:
                self._submit(obs)
        action = self._schedule.pop(t)
        self.t += 1
        return action

    def _submit(self, obs: Observation) -> None:
        t = self.t
        p = 0
        prefix = None
        if self.aggregate == "rtc":
            p = min(self.delay_estimate, sum(1 for i in range(self.h) if t + i in self._schedule))
            if p > 0:
                prefix = np.stack([self._schedule[t + i] for i in range(p)])
        self._request_info = (t, p)
        self._next_request = t + self.s
        self._future = self._pool.submit(self.source.predict_chunk, dict(obs), prefix)

    def _collect(self) -> None:
        assert self._future is not None
        chunk = np.asarray(self._future.result(), dtype=np.float32)
        self._future = None
        t_req, p = self._request_info
        if chunk.shape[0] != self.h:
            raise ValueError(f"chunk of {chunk.shape[0]} steps, expected {self.h}")
        if self.keep_log:
            self.log.append((t_req, self.t, p, chunk.copy()))
        self._pending = (t_req, self.t, chunk)
        self._arrive()


def action_jerk(actions: np.ndarray) -> float:
    """Mean L2 norm of the third finite difference of an executed action sequence (T, A); 0 if T < 4."""
    a = np.asarray(actions, dtype=np.float64)
    if a.shape[0] < 4:
        return 0.0
    return float(np.linalg.norm(np.diff(a, n=3, axis=0), axis=-1).mean())
