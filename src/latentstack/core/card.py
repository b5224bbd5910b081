"""The one CARD.md renderer: generic pieces every artifact card is built from.

A card is rendered from the files that produced the artifact (training log, evaluation JSON, the artifact's own
``config.json``) — numbers are copied, never typed in. Each model family writes its own prose around these
pieces; the pieces themselves (header, commands block, evaluation table, provenance block) live here so every
card shows them the same way. Nothing here imports torch.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

_SHORT = 16  # hex digits of a sha256 shown on a card (the full hash is in config.json)


def fmt_success(b: Mapping[str, Any]) -> str:
    """``k/n = p% [lo, hi]`` from an evaluation success block (Wilson 95 %)."""
    return f"{b['successes']}/{b['episodes']} = {b['success']:.1%} [{b['ci_low']:.2f}, {b['ci_high']:.2f}]"


def header_lines(title: str, summary: str | None = None) -> list[str]:
    """``# title`` and an optional one-paragraph summary."""
    lines = [f"# {title}", ""]
    if summary:
        lines += [summary, ""]
    return lines


def bullet_lines(items: Iterable[str], title: str | None = None) -> list[str]:
    """A bullet list, under ``## title`` when given (empty list when there are no items)."""
    items = list(items)
    if not items:
        return []
    lines = [f"## {title}", ""] if title else []
    return lines + [f"- {x}" for x in items]


def commands_lines(commands: Iterable[str], title: str = "Commands:") -> list[str]:
    """The commands that produced the artifact, as a bash block."""
    return [title, "", "```bash", *commands, "```"]


def evaluation_lines(evaluation: Mapping[str, Any], what_untrained: str) -> list[str]:
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


def _describe(value: Any) -> str:
    """One provenance value: ``path`` (sha256 ``…``) for a described file, else its JSON-ish text."""
    if isinstance(value, Mapping) and "path" in value and "sha256" in value:
        if not value["sha256"]:
            note = value.get("note") or "no content hash recorded"
            return f"`{value['path']}` ({note})"
        return f"`{value['path']}` (sha256 `{str(value['sha256'])[:_SHORT]}…`)"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {_describe(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_describe(v) for v in value)
    return f"`{value}`" if isinstance(value, str) else str(value)


def provenance_lines(doc: Mapping[str, Any]) -> list[str]:
    """``## Artifact`` block from an artifact's ``config.json`` document (or an ``Artifact``'s fields): type,
    format version, source artifact, recorded provenance and the sha256 of every file."""
    lines = [
        "## Artifact",
        "",
        (f"- **type** `{doc['type']}`, format version {doc['format_version']}; load with "
         "`latentstack.core.artifacts.load_artifact` (every file's sha256 below is checked on load)"),
    ]
    src = doc.get("source")
    if src:
        lines.append(f"- **derived from** {_describe(src)} (refused on any other source)")
    for k, v in (doc.get("provenance") or {}).items():
        lines.append(f"- **{k}**: {_describe(v)}")
    for name, digest in (doc.get("files") or {}).items():
        lines.append(f"- `{name}`: sha256 `{digest[:_SHORT]}…`")
    return lines


def with_provenance(card_text: str, doc: Mapping[str, Any]) -> str:
    """``card_text`` with its ``## Artifact`` block replaced by (or, when absent, followed by) the one rendered
    from ``doc``: how an existing card is updated when only the artifact's files change (its numbers stay)."""
    lines = card_text.rstrip("\n").split("\n")
    if "## Artifact" in lines:
        i = lines.index("## Artifact")
        j = next((k for k in range(i + 1, len(lines)) if lines[k].startswith("## ")), len(lines))
        before, after = lines[:i], lines[j:]
    else:
        before, after = lines, []
    return render(before, provenance_lines(doc), after)


def render(*sections: Iterable[str]) -> str:
    """Join sections (lists of lines) with one blank line between non-empty ones; ends with a newline."""
    parts = [list(s) for s in sections]
    lines: list[str] = []
    for s in parts:
        if not s:
            continue
        if lines and lines[-1] != "":
            lines.append("")
        lines += s
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def write_card(artifact_dir: str | os.PathLike, text: str) -> Path:
    """Write ``CARD.md`` into an artifact folder (not hashed in ``config.json``: a card may be re-rendered)."""
    out = Path(artifact_dir) / "CARD.md"
    out.write_text(text)
    return out


__all__ = [
    "bullet_lines",
    "commands_lines",
    "evaluation_lines",
    "fmt_success",
    "header_lines",
    "provenance_lines",
    "render",
    "with_provenance",
    "write_card",
]
