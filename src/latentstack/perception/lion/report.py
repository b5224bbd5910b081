"""``lstack lion eval``: every method on the same held-out scans, AP tables, bootstrap CIs, plots, summary.

Main number (``lion.json["ap"]``): BEV AP R40 for Car at IoU 0.5 over all ranges (the spec's
learning-test metric, §15.15), on test-split scans (seeds 200000+, never used for training or
selection). Full tables hold BEV and 3-D AP for all classes at both thresholds, by range bin.
Intervals: percentile bootstrap over scans (1000 resamples, the same resamples for every
method, so the paired differences are meaningful).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from latentstack.sim.lidar_scenes import CLASSES, SPLIT_SEEDS

from .clustering import ClusteringDetector
from .eval import RANGE_BINS, bootstrap_ap, evaluate_detections, match_scans
from .train import gt_dict, load_or_generate

__all__ = ["MAIN", "run_evaluation"]

MAIN = {"class": "Car", "metric": "bev", "iou": 0.5, "range": "all"}


def _predict_all(models: dict[str, str], clustering: bool, scans: list, device: str = "cpu"
                 ) -> tuple[dict[str, list], dict[str, Any]]:
    import torch

    from .modeling_lion import load_detector
    from .train import predict

    dets: dict[str, list] = {}
    info: dict[str, Any] = {}
    if clustering:
        c = ClusteringDetector()
        t = time.perf_counter()
        dets["clustering"] = [c.detect(s.points) for s in scans]
        info["clustering"] = {"kind": "non-learned", "config": c.cfg.__dict__,
                              "ms_per_scan": (time.perf_counter() - t) / len(scans) * 1e3}
    for name, path in models.items():
        model = load_detector(path, device=device)  # detect(): points moved by its processor, boxes decoded on the host
        t = time.perf_counter()
        with torch.no_grad():
            dets[name] = predict(model, scans, batch_size=1)
        meta = json.loads((Path(path) / "config.json").read_text())
        info[name] = {"checkpoint": str(path), "preset": model.config.name, "operator": model.config.operator,
                      "device": str(model.device),  # where it ran (ms_per_scan depends on it)
                      "num_parameters": meta["extra"].get("num_parameters"), "train": meta["extra"].get("train"),
                      "ms_per_scan": (time.perf_counter() - t) / len(scans) * 1e3}
    return dets, info


def _plot(tables: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = list(RANGE_BINS)
    rows = [("Car", "bev@0.5"), ("Car", "bev@0.7"), ("Pedestrian", "bev@0.5"), ("Cyclist", "bev@0.5")]
    fig, axes = plt.subplots(1, len(rows), figsize=(4 * len(rows), 3.4), sharey=True)
    names = list(tables)
    w = 0.8 / len(names)
    for ax, (cls, key) in zip(axes, rows, strict=True):
        for i, name in enumerate(names):
            vals = [tables[name][cls][key][b]["ap"] for b in bins]
            ax.bar(np.arange(len(bins)) + i * w, np.nan_to_num(vals), w, label=name)
        ax.set_xticks(np.arange(len(bins)) + 0.4 - w / 2, bins, fontsize=8)
        ax.set_title(f"{cls} {key.replace('@', ' AP@')}")
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("AP (R40)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_evaluation(models: dict[str, str], clustering: bool = True, data_dir: str | Path = "data/lion",
                   split: str = "test", num_scans: int = 100, out_dir: Path | None = Path("reports/lion"),
                   command: str | None = None, device: str = "cpu") -> dict[str, Any]:
    scans = load_or_generate(data_dir, split, num_scans)[:num_scans]
    gts = [gt_dict(s) for s in scans]
    dets, info = _predict_all(models, clustering, scans, device)
    tables = {name: evaluate_detections(d, gts, CLASSES) for name, d in dets.items()}
    k = CLASSES.index(MAIN["class"])
    matches = {name: match_scans(d, gts, k, MAIN["iou"], MAIN["metric"]) for name, d in dets.items()}
    boot = bootstrap_ap(matches)
    samples = boot.pop("_samples")
    ap = {name: tables[name][MAIN["class"]][f"{MAIN['metric']}@{MAIN['iou']}"]["all"]["ap"] for name in dets}
    paired = {}
    names = list(dets)
    for a in names:
        for b in names:
            if a != b and a not in ("clustering",):
                diff = np.asarray(samples[a]) - np.asarray(samples[b])
                paired[f"{a} - {b}"] = {"diff": ap[a] - ap[b], "lo": float(np.nanpercentile(diff, 2.5)),
                                        "hi": float(np.nanpercentile(diff, 97.5))}
    seeds = [s.seed for s in scans]
    result = {
        "ap": ap,
        "main": MAIN,
        "ap_ci95_bootstrap": boot,
        "paired_diff_ci95_bootstrap": paired,
        "split": split,
        "num_scans": len(scans),
        "seed_range": [min(seeds), max(seeds)],
        "split_seed_ranges": {k2: [r.start, r.stop - 1] for k2, r in SPLIT_SEEDS.items()},
        "num_gt_main": int(sum(m[2] for m in matches[names[0]])) if names else 0,
        "methods": info,
        "tables": tables,
        "command": command or " ".join(["lstack", *sys.argv[1:]]),
    }
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "lion.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
        _plot(tables, out_dir / "lion_ap.png")
    for name in names:
        ci = boot[name]
        print(f"{name:>20}: Car BEV AP@0.5 = {ap[name]:.3f} [{ci['lo']:.3f}, {ci['hi']:.3f}]  "
              f"({info[name]['ms_per_scan']:.0f} ms/scan)")
    return result
