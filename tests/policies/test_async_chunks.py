"""ChunkExecutor: asynchronous chunk execution with latest_only / weighted_average / rtc aggregation."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from latentstack.policies.async_chunks import (
    OLD_WEIGHT,
    ChunkExecutor,
    ThreadedChunkExecutor,
    VLAChunker,
    action_jerk,
    sample_chunk_with_prefix,
)
from latentstack.policies.vla import VLAPolicy
from latentstack.policies.vla.configuration_vla import get_vla_config
from latentstack.policies.vla.tokenizer import WordTokenizer

TASKS = ["press the button", "close the drawer"]


class StampSource:
    """Fake chunk source: row i of the chunk requested at step t is ``[t, i, t + i, obs]`` (traceable)."""

    chunk_size = 16
    n_action_steps = 8

    def __init__(self) -> None:
        self.prefixes: list[np.ndarray | None] = []
        self.t = 0

    def reset(self, seed: int | None = None) -> None:
        self.prefixes.clear()

    def predict_chunk(self, obs, prefix=None):
        t = obs["t"]
        rows = np.array([[t, i, t + i, obs["x"]] for i in range(self.chunk_size)], np.float32)
        if prefix is not None:
            rows[: len(prefix)] = prefix
        self.prefixes.append(None if prefix is None else prefix.copy())
        return rows


def _run(ex: ChunkExecutor, steps: int) -> list[np.ndarray]:
    ex.reset(seed=0)
    return [ex.select_action({"t": t, "x": float(t % 5)}) for t in range(steps)]


@pytest.mark.parametrize("delay", [0, 2, 4, 8])
@pytest.mark.parametrize("agg", ["latest_only", "weighted_average", "rtc"])
def test_delay_honoured(delay: int, agg: str) -> None:
    ex = ChunkExecutor(StampSource(), delay_steps=delay, aggregate=agg, log=True)
    acts = _run(ex, 60)
    avail = {t_req: t_av for t_req, t_av, _, _ in ex.log}
    assert [t for t, _, _, _ in ex.log] == list(range(0, 60, 8))  # a request every n_action_steps
    for t, a in enumerate(acts):
        if agg == "weighted_average":
            continue  # blended values are not stamps; checked below
        t_req = int(a[0])
        assert t_req + int(a[1]) == t  # row i of a chunk is for step t_req + i
        assert t >= avail[t_req]  # never used before it is available
        assert t_req == 0 or t >= t_req + delay
    arrived = sum(t_av < 60 for _, t_av, _, _ in ex.log)  # arrival is processed at a step's select_action
    assert ex.measured_delays == [0] + [delay] * (arrived - 1)


def test_delay_too_long_rejected() -> None:
    with pytest.raises(ValueError):
        ChunkExecutor(StampSource(), delay_steps=9)


def test_latest_only_switches_at_arrival() -> None:
    ex = ChunkExecutor(StampSource(), delay_steps=3, aggregate="latest_only")
    acts = _run(ex, 24)
    # steps 8..10 still execute the chunk requested at 0; from 11 the chunk requested at 8
    assert [int(a[0]) for a in acts[8:12]] == [0, 0, 0, 8]
    assert [int(a[0]) for a in acts[16:20]] == [8, 8, 8, 16]


def test_weighted_average_blends_exactly() -> None:
    ex = ChunkExecutor(StampSource(), delay_steps=2, aggregate="weighted_average", log=True)
    acts = _run(ex, 14)
    c0, c8 = ex.log[0][3], ex.log[1][3]
    # steps 10..13: chunk 0 rows 10..13 and chunk 8 rows 2..5 overlap -> 0.3 old + 0.7 new
    for t in range(10, 14):
        expect = (OLD_WEIGHT * c0[t] + (1 - OLD_WEIGHT) * c8[t - 8]).astype(np.float32)
        np.testing.assert_array_equal(acts[t], expect)
        np.testing.assert_allclose(acts[t], 0.3 * c0[t] + 0.7 * c8[t - 8], rtol=1e-6)
    np.testing.assert_array_equal(acts[8], c0[8])  # during inference: the old chunk, unblended
    np.testing.assert_array_equal(acts[9], c0[9])


def test_rtc_prefix_is_the_committed_actions_with_measured_delay() -> None:
    src = StampSource()
    ex = ChunkExecutor(src, delay_steps=3, aggregate="rtc", log=True)
    acts = _run(ex, 40)
    # request at 8: no delay measured yet (the first chunk was blocking) -> no prefix; then 3 measured
    assert [p for _, _, p, _ in ex.log] == [0, 0, 3, 3, 3]
    for (t_req, _, p, _), prefix in zip(ex.log, src.prefixes):
        if p:
            np.testing.assert_array_equal(prefix, np.stack(acts[t_req:t_req + p]))  # what then executed


def _tiny_vla() -> VLAPolicy:
    cfg = get_vla_config("vla_tiny", vocab=tuple(WordTokenizer.build(TASKS).vocab))
    p = VLAPolicy(cfg)
    # the init (std 0.02) makes attention nearly uniform; larger expert weights make tokens depend on each other
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in p.expert.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * 0.3)
    p.eval()
    return p


def _obs(t: int) -> dict:
    rng = np.random.default_rng(t)
    return {"image": rng.integers(0, 255, (32, 32, 3), dtype=np.uint8),
            "state": rng.normal(size=4).astype(np.float32), "instruction": TASKS[t % 2]}


def test_delay0_latest_only_reproduces_sync_policy() -> None:
    torch.set_num_threads(1)
    p = _tiny_vla()
    p.reset(seed=3)
    sync = [p.select_action(_obs(t)) for t in range(13)]
    ex = ChunkExecutor(VLAChunker(p), delay_steps=0, aggregate="latest_only")
    ex.reset(seed=3)
    asy = [ex.select_action(_obs(t)) for t in range(13)]
    for a, b in zip(sync, asy):
        assert np.array_equal(a, b)  # same ops, same noise draws, same order


def test_vla_rtc_sampling_keeps_prefix() -> None:
    torch.set_num_threads(1)
    p = _tiny_vla()
    p.reset(seed=1)
    batch = p._processor.observation_batch(_obs(0))
    prefix = np.array([[0.5, -0.25, 0.1, 0.9], [0.4, -0.2, 0.0, 0.8]], np.float32)
    chunk = sample_chunk_with_prefix(p, batch, prefix)[0].numpy()
    assert chunk.shape == (8, 4)
    np.testing.assert_allclose(chunk[:2], prefix, atol=1e-5)  # only the normalization round trip
    p.reset(seed=1)
    free = p.predict_action_chunk(batch)[0].numpy()
    assert np.abs(chunk[2:] - free[2:]).max() > 1e-2  # the rest is conditioned on the prefix
    # through the executor: each rtc chunk's rows [0, p) are the actions executed at those steps
    ex = ChunkExecutor(VLAChunker(p), delay_steps=2, aggregate="rtc", log=True)
    ex.reset(seed=2)
    acts = [ex.select_action(_obs(t)) for t in range(17)]
    conditioned = [(t, k, c) for t, _, k, c in ex.log if k and t + k <= len(acts)]
    assert conditioned
    for t_req, k, c in conditioned:
        np.testing.assert_allclose(c[:k], np.stack(acts[t_req:t_req + k]), atol=1e-5)


def test_action_jerk() -> None:
    t = np.arange(10, dtype=np.float64)[:, None]
    assert action_jerk(np.hstack([t, 2 * t])) == 0.0  # linear: no jerk
    assert action_jerk(t**3) == pytest.approx(6.0)  # third difference of t^3 is 6
    assert action_jerk(t[:3]) == 0.0


class GatedSource(StampSource):
    """Every chunk after the first waits until the test opens the gate (inference that takes a while)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.calls = 0

    def predict_chunk(self, obs, prefix=None):
        self.calls += 1
        if self.calls > 1:
            assert self.gate.wait(10.0)
            self.gate.clear()
        return super().predict_chunk(obs, prefix)


@pytest.mark.parametrize("agg", ["latest_only", "rtc"])
def test_threaded_keeps_acting_while_inferring(agg: str) -> None:
    src = GatedSource()
    ex = ThreadedChunkExecutor(src, aggregate=agg, log=True)
    try:
        ex.reset(seed=0)
        obs = lambda t: {"t": t, "x": 0.0}
        acts = [ex.select_action(obs(t)) for t in range(12)]  # the request at 8 is in flight, gate closed
        assert [int(a[0]) for a in acts] == [0] * 12  # steps 8..11 ran the first chunk meanwhile
        assert [int(a[1]) for a in acts] == list(range(12))
        src.gate.set()
        ex._future.result(timeout=10.0)  # inference done: merged at the next step
        a12 = ex.select_action(obs(12))
        assert (int(a12[0]), int(a12[1])) == (8, 4)  # chunk requested at 8, row for step 12
        assert ex.measured_delays == [0, 4] and ex.delay_estimate == 4  # delay = actions consumed
        src.gate.set()  # from here on inference is let through (requests at 16 and 24)
        for t in range(13, 30):
            a = ex.select_action(obs(t))
            assert int(a[0]) + int(a[1]) == t
            src.gate.set()
        if agg == "rtc":  # later requests are inpainted with the measured delay's committed actions
            assert any(p == 4 for _, _, p, _ in ex.log[2:])
    finally:
        src.gate.set()
        ex.close()
