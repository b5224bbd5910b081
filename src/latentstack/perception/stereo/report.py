"""Markdown tables for ``reports/stereo/summary.md`` from ``stereo.json`` (and ``bench_stereo.json``)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["combine", "markdown_tables"]


def _fmt(x: Any, pct: bool = False) -> str:
    if not isinstance(x, (int, float)):
        return "—"
    return f"{100 * x:.1f} %" if pct else f"{x:.3f}"


def markdown_tables(result: dict[str, Any]) -> str:
    methods = result["methods"]
    lines = []
    lines.append("### Disparity (non-occluded pixels, pooled) — EPE px / bad-1px / D1-KITTI\n")
    lines.append("| k | " + " | ".join(methods) + " |")
    lines.append("|---|" + "---|" * len(methods))
    for k, t in result["tables"].items():
        cells = [f"{_fmt(t[m]['disparity']['noc']['epe'])} / {_fmt(t[m]['disparity']['noc']['bad1'], True)} / "
                 f"{_fmt(t[m]['disparity']['noc']['d1_kitti'], True)}" for m in methods]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    for mk, title in (("large", "large disparity (> 12 px)"), ("textureless", "textureless")):
        lines.append(f"\n### EPE on {title} pixels\n")
        lines.append("| k | " + " | ".join(methods) + " |")
        lines.append("|---|" + "---|" * len(methods))
        for k, t in result["tables"].items():
            lines.append(f"| {k} | " + " | ".join(_fmt(t[m]["disparity"][mk].get("epe")) for m in methods) + " |")
    lines.append("\n### Depth (per image, 0.1–50 m) — AbsRel / RMSE m / δ<1.25\n")
    lines.append("| k | " + " | ".join(methods) + " |")
    lines.append("|---|" + "---|" * len(methods))
    for k, t in result["tables"].items():
        cells = [f"{_fmt(t[m]['depth'].get('abs_rel'))} / {_fmt(t[m]['depth'].get('rmse'))} / "
                 f"{_fmt(t[m]['depth'].get('delta1'), True)}" for m in methods]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    if result.get("paired"):
        lines.append("\n### Paired per-image comparison (lower EPE wins), Wilson 95 %\n")
        first_k = next(iter(result["paired"]))
        comps = list(result["paired"][first_k])
        lines.append("| k | " + " | ".join(comps) + " |")
        lines.append("|---|" + "---|" * len(comps))
        for k, row in result["paired"].items():
            cells = [f"{c['wins']}/{c['n']} [{100 * c['wilson95'][0]:.0f}, {100 * c['wilson95'][1]:.0f}] %, "
                     f"EPE ratio {c['mean_epe_ratio']:.2f}" for c in row.values()]
            lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def combine(headline: Path | str, sweep: Path | str, out_dir: Path | str) -> Path:
    """``stereo.json`` = the large held-out run at one turbidity (headline, ``epe_turbidity_x3``) plus a
    smaller all-turbidity sweep under ``turbidity_sweep`` (its own pairs, tables, plot and command)."""
    from .evaluate import plot_report, write_json

    h = json.loads(Path(headline).read_text())
    s = json.loads(Path(sweep).read_text())
    res = dict(h)
    res["turbidity_sweep"] = {k: s[k] for k in ("n_pairs", "seeds", "methods", "tables", "paired", "command",
                                                 "latency_1thread_loaded_box") if k in s}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(res, out / "stereo.json")
    plot_report(s, out / "stereo_turbidity.png")
    (out / "tables.md").write_text(
        f"## Headline: held-out turbidity x3, {h['n_pairs']} pairs (seeds {h['seeds'][0]}..{h['seeds'][1]})\n\n"
        + markdown_tables(h)
        + f"\n## Turbidity sweep, first {s['n_pairs']} test pairs (seeds {s['seeds'][0]}..{s['seeds'][1]})\n\n"
        + markdown_tables(s))
    return out / "stereo.json"


if __name__ == "__main__":
    import sys

    if sys.argv[1] == "combine":
        print(combine(sys.argv[2], sys.argv[3], sys.argv[4]))
    else:
        print(markdown_tables(json.loads(Path(sys.argv[1]).read_text())))
