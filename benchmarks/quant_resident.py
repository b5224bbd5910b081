"""Resident memory of the float policy vs the shipped quantized artifact, each in a fresh process.

    .venv/bin/python benchmarks/quant_resident.py   # -> reports/quantvla/resident_memory.{json,png}

Each process imports the stack, loads one policy, runs one chunk prediction and reports VmRSS
(``latentstack.quant.memory.resident_memory``). On a 1.9 M-parameter model the torch runtime dominates
the RSS, so the comparison that matters is the load delta (after load − after import). Repeats are
interleaved; medians reported.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from latentstack.quant.memory import resident_memory

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "policies/vla_metaworld_mt6"
ARTIFACT = "policies/vla_metaworld_mt6_w4a8"
REPEATS = 3


def main() -> None:
    runs: dict[str, list[dict]] = {"fp32": [], "w4a8": []}
    for _ in range(REPEATS):
        runs["fp32"].append(resident_memory(str(ROOT / SOURCE)))
        runs["w4a8"].append(resident_memory(str(ROOT / SOURCE), str(ROOT / ARTIFACT)))
    keys = sorted(runs["fp32"][0])
    med = {name: {k: statistics.median(r[k] for r in rs) for k in keys} for name, rs in runs.items()}
    out = ROOT / "reports" / "quantvla"
    payload = {"command": "python benchmarks/quant_resident.py", "source": SOURCE, "artifact": ARTIFACT,
               "repeats": REPEATS, "median": med, "runs": runs}
    (out / "resident_memory.json").write_text(json.dumps(payload, indent=2))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    shown = [k for k in keys if k.endswith("bytes") or k.startswith("rss")]
    for i, name in enumerate(med):
        ax.bar([j + 0.4 * i for j in range(len(shown))], [med[name][k] / 2**20 for k in shown], 0.4, label=name)
    ax.set_xticks([j + 0.2 for j in range(len(shown))], shown, rotation=20, ha="right", fontsize=7)
    ax.set_ylabel("MiB")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "resident_memory.png", dpi=110)
    print(json.dumps(med, indent=2))


if __name__ == "__main__":
    main()
