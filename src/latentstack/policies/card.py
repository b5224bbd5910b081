"""Writes a policy artifact's CARD.md from what produced it: the training log, the demo
recording summary and a paired evaluation report. Numbers are copied, never typed in."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def fmt_success(b: dict[str, Any]) -> str:
    """``k/n = p% [lo, hi]`` from an evaluation success block (Wilson 95 %)."""
    return f"{b['successes']}/{b['episodes']} = {b['success']:.1%} [{b['ci_low']:.2f}, {b['ci_high']:.2f}]"


def evaluation_lines(evaluation: dict[str, Any], what_untrained: str) -> list[str]:
    """The card's ``## Evaluation`` section from an ``lstack eval`` JSON: per-task Wilson table, mean task
    success, latency and wall time (every policy card renders its evaluation with this)."""
    conds, meta = evaluation["conditions"], evaluation["meta"]
    seeds = meta["seeds"]
    tasks = list(next(iter(conds.values()))["per_task"])
    lines = [
        (f"## Evaluation ({meta['split']} seeds {seeds[0]}–{seeds[-1]}, {len(seeds)} per task, "
         "same seeds for every condition)"),
        "",
        f"Success with Wilson 95% intervals. {what_untrained}",
        "",
        "| task | " + " | ".join(conds) + " |",
        "|---|" + "---|" * len(conds),
    ]
    for t in tasks:
        lines.append(f"| {t} | " + " | ".join(fmt_success(c["per_task"][t]) for c in conds.values()) + " |")
    lines.append("| **overall** | " + " | ".join(fmt_success(c["overall"]) for c in conds.values()) + " |")
    lines.append(
        "| mean task success | " + " | ".join(f"{c['overall']['mean_task_success']:.1%}" for c in conds.values()) + " |"
    )
    lines.append(
        "| policy latency p50 / p99 (ms) | "
        + " | ".join(f"{c['latency_ms_p50']:.2f} / {c['latency_ms_p99']:.2f}" for c in conds.values())
        + " |"
    )
    lines += ["", f"Evaluation wall time {meta['wall_s'] / 60:.1f} min, torch threads {meta['torch_threads']}."]
    return lines


def render_card(
    name: str,
    train_log: dict[str, Any],
    evaluation: dict[str, Any],
    recording: dict[str, Any] | None,
    commands: list[str],
    notes: list[str] | None = None,
) -> str:
    tc, pc, ds = train_log["train_config"], train_log["policy_config"], train_log["dataset"]
    hist = train_log.get("history", [])
    wall = hist[-1].get("elapsed_s") if hist else None
    meta = evaluation["meta"]
    tasks = list(next(iter(evaluation["conditions"].values()))["per_task"])
    lines = [
        f"# {name}",
        "",
        (
            "Small pi0-like VLA (conv vision encoder, word-level language embeddings trained here, "
            "transformer backbone over image + language + state tokens, flow-matching action expert)."
        ),
        "",
        "## How it was made",
        "",
        f"- **tasks**: {', '.join(tasks)} (suite `{meta['suite']}`)",
        (
            f"- **demos**: {ds['episodes']} scripted-expert episodes, {ds['frames']} frames "
            "(MetaWorld `Sawyer*V3Policy`, successful episodes only, suite *train* seeds)"
        ),
        (
            f"- **steps**: {train_log['step']} at batch {tc['batch_size']}, AdamW lr {tc['lr']}, "
            f"cosine with {tc['warmup_steps']} warm-up steps; **seed** {tc['seed']}"
        ),
        f"- **wall time**: {wall / 60:.1f} min on a 2-core CPU" if wall else "- **wall time**: n/a",
        (
            f"- **parameters**: {train_log['num_parameters'] / 1e6:.2f} M; image {pc['image_size']}², "
            f"d_model {pc['d_model']}, backbone {pc['backbone_layers']} layers, expert {pc['expert_layers']} layers, "
            f"chunk H={pc['chunk_size']} (executes {pc['n_action_steps']}), K={pc['num_inference_steps']} Euler steps"
        ),
        "",
        "Commands:",
        "",
        "```bash",
        *commands,
        "```",
        "",
        *evaluation_lines(evaluation, "`untrained` is the same architecture and normalisation with random "
                          "weights, evaluated in the same run."),
    ]
    if recording:
        lines += ["", "## Demonstrations", "", "| task | expert successes | mean steps to success |", "|---|---|---|"]
        for task, r in recording.get("tasks", {}).items():
            lines.append(f"| {task} | {r['successes']}/{r['attempts']} | {r['steps_to_success_mean']:.1f} |")
    if notes:
        lines += ["", "## Notes", "", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="write CARD.md for a trained policy directory")
    ap.add_argument("policy_dir")
    ap.add_argument("--train-log", required=True)
    ap.add_argument("--eval", required=True, help="eval JSON written by `lstack eval --out`")
    ap.add_argument("--recording", default=None, help="recording.json of the demo dataset")
    ap.add_argument("--command", action="append", default=[], help="a command that produced it (repeat)")
    ap.add_argument("--note", action="append", default=[], help="a limitation or caveat to state (repeat)")
    a = ap.parse_args(argv)
    out = Path(a.policy_dir)
    recording = json.loads(Path(a.recording).read_text()) if a.recording else None
    text = render_card(
        out.name,
        json.loads(Path(a.train_log).read_text()),
        json.loads(Path(a.eval).read_text()),
        recording,
        a.command,
        a.note,
    )
    (out / "CARD.md").write_text(text)
    print(out / "CARD.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
