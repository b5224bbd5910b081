import math

import pytest

from latentstack.stats import percentile_ms, wilson_interval


def test_wilson_matches_closed_form_reference():
    # Reference values from the textbook formula (Agresti & Coull 1998), z = 1.96.
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4)
    assert hi == pytest.approx(0.9433, abs=1e-4)


def test_wilson_edges_stay_in_unit_interval():
    lo, hi = wilson_interval(0, 20)
    assert lo == 0.0 and 0.0 < hi < 0.2
    lo, hi = wilson_interval(20, 20)
    assert hi == 1.0 and 0.8 < lo < 1.0


def test_wilson_rejects_impossible_counts():
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_percentile_ms():
    assert percentile_ms([0.001, 0.002, 0.003], 50) == pytest.approx(2.0)
    assert math.isnan(percentile_ms([], 50))


def test_wilson_contains_the_estimate_for_every_count():
    for n in range(1, 201):
        for k in (0, 1, n // 2, n - 1, n):
            lo, hi = wilson_interval(k, n)
            assert 0.0 <= lo <= k / n <= hi <= 1.0, (k, n, lo, hi)
        assert wilson_interval(0, n)[0] == 0.0 and wilson_interval(n, n)[1] == 1.0
