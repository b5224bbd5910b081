"""Steering overhead per policy call, measured as a ratio in one run (coast.md §11.21).

A *policy call* is one model forward that produces an action chunk (``predict_action_chunk``):
the unit the gate actually touches (every denoising step of the expert). Conditions are timed
interleaved, in a rotating order, on the same observation, one torch thread, hooks installed
before the timer starts (a deployed node keeps its steering hook installed). The ratio is the
median steered time over the median unsteered time — medians because these shared machines
have long scheduler tails.
"""
from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

__all__ = ["measure_call_overhead"]


def measure_call_overhead(
    call: Callable[[], Any],
    interventions: Mapping[str, contextlib.AbstractContextManager[Any] | None],
    reps: int = 200,
    warmup: int = 20,
    base: str = "base",
) -> dict[str, Any]:
    """Time ``call()`` under each named intervention (``None`` = unsteered), interleaved.

    Returns ``{"median_ms", "ratio" (median / median[base]), "min_ms", "ratio_min", "reps", "threads"}``.
    """
    if base not in interventions:
        raise KeyError(f"no {base!r} condition among {sorted(interventions)}")
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    names = list(interventions)
    samples: dict[str, list[float]] = {n: [] for n in names}
    with torch.inference_mode():
        for r in range(warmup + reps):
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:  # rotate so no condition always runs first
                iv = interventions[name]
                with iv if iv is not None else contextlib.nullcontext():
                    t0 = time.perf_counter()
                    call()
                    dt = time.perf_counter() - t0
                if r >= warmup:
                    samples[name].append(dt)
    med = {n: statistics.median(v) * 1e3 for n, v in samples.items()}
    low = {n: min(v) * 1e3 for n, v in samples.items()}
    return {"median_ms": med, "ratio": {n: med[n] / med[base] for n in names},
            # min: the interference-free cost (other processes only ever add time; timeit's rule)
            "min_ms": low, "ratio_min": {n: low[n] / low[base] for n in names},
            "reps": reps, "warmup": warmup, "threads": torch.get_num_threads(),
            "what": "predict_action_chunk (one policy call)"}
