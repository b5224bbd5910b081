"""Small statistics shared by every evaluation: Wilson intervals and latency percentiles."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z_95 = 1.959963984540054


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (stays inside [0, 1], sane at 0/n and n/n)."""
    if trials <= 0:
        return (0.0, 1.0)
    if not 0 <= successes <= trials:
        raise ValueError(f"successes={successes} outside [0, trials={trials}]")
    p = successes / trials
    denom = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    # min/max with p: rounding must never put the estimate outside its own interval (0/n, n/n).
    return (max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half)))


def percentile_ms(samples_s: Sequence[float], q: float) -> float:
    """The q-th percentile of durations given in seconds, in milliseconds (nan if empty)."""
    if len(samples_s) == 0:
        return float("nan")
    return float(np.percentile(np.asarray(samples_s, dtype=np.float64), q) * 1e3)
