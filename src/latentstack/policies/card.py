"""Writes a VLA artifact's CARD.md from what produced it: the training log, the demo recording summary, a
paired evaluation report and the artifact's own ``config.json``. Numbers are copied, never typed in.
The generic pieces (evaluation table, commands, provenance) come from :mod:`latentstack.core.card`."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from latentstack.core.card import (
    bullet_lines,
    commands_lines,
    evaluation_lines,
    fmt_success,
    header_lines,
    provenance_lines,
    render,
    write_card,
)


def render_card(
    name: str,
    train_log: dict[str, Any],
    evaluation: dict[str, Any],
    recording: dict[str, Any] | None,
    commands: list[str],
    notes: list[str] | None = None,
    artifact_doc: dict[str, Any] | None = None,
) -> str:
    """The VLA card; ``artifact_doc``: the artifact's ``config.json`` (adds the provenance block)."""
    tc, pc, ds = train_log["train_config"], train_log["policy_config"], train_log["dataset"]
    hist = train_log.get("history", [])
    wall = hist[-1].get("elapsed_s") if hist else None
    meta = evaluation["meta"]
    tasks = list(next(iter(evaluation["conditions"].values()))["per_task"])
    lines = [
        *header_lines(name, (
            "Small pi0-like VLA (conv vision encoder, word-level language embeddings trained here, "
            "transformer backbone over image + language + state tokens, flow-matching action expert)."
        )),
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
    ]
    demos: list[str] = []
    if recording:
        demos = ["## Demonstrations", "", "| task | expert successes | mean steps to success |", "|---|---|---|"]
        for task, r in recording.get("tasks", {}).items():
            demos.append(f"| {task} | {r['successes']}/{r['attempts']} | {r['steps_to_success_mean']:.1f} |")
    return render(
        lines,
        commands_lines(commands),
        evaluation_lines(evaluation, "`untrained` is the same architecture and normalisation with random "
                         "weights, evaluated in the same run."),
        demos,
        bullet_lines(notes or [], "Notes"),
        provenance_lines(artifact_doc) if artifact_doc else [],
    )


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
        json.loads((out / "config.json").read_text()) if (out / "config.json").is_file() else None,
    )
    print(write_card(out, text))
    return 0


__all__ = ["evaluation_lines", "fmt_success", "main", "render_card"]  # the first two re-exported from core.card


if __name__ == "__main__":
    raise SystemExit(main())
