"""Cards copy their numbers from the evaluation JSON (one renderer for every policy card)."""
from latentstack.policies.card import evaluation_lines, fmt_success


def _block(k, n):
    from latentstack.stats import wilson_interval

    lo, hi = wilson_interval(k, n)
    return {"successes": k, "episodes": n, "success": k / n, "ci_low": lo, "ci_high": hi, "mean_task_success": k / n}


def test_evaluation_lines_copy_the_report():
    ev = {"meta": {"split": "test", "seeds": [20, 21, 22], "wall_s": 90.0, "torch_threads": 1},
          "conditions": {c: {"per_task": {"a": _block(k, 3)}, "overall": _block(k, 3), "latency_ms_p50": 1.0,
                             "latency_ms_p99": 2.5} for c, k in (("policy", 3), ("untrained", 1))}}
    text = "\n".join(evaluation_lines(ev, "untrained: random weights."))
    assert "## Evaluation (test seeds 20–22, 3 per task" in text
    assert f"| a | {fmt_success(_block(3, 3))} | {fmt_success(_block(1, 3))} |" in text
    assert "| policy latency p50 / p99 (ms) | 1.00 / 2.50 | 1.00 / 2.50 |" in text
    assert "Evaluation wall time 1.5 min" in text and "untrained: random weights." in text
    assert fmt_success(_block(1, 3)).startswith("1/3 = 33.3% [")
