"""``lstack unilion eval``: UniLION in L / LT / LC / LCT, the LION-only model and the clustering baseline on the
same held-out sequences; AP / mIoU / IoU tables, paired cluster-bootstrap intervals, a plot and a summary.

Metrics (spec lion.md §9, issue 17):

- **BEV AP** (``bev_ap``): Car, BEV IoU 0.5, R40 — LION's main number (:mod:`latentstack.perception.lion.eval`),
  over all ranges and by range bin (0–20 / 20–40 / 40 m+). Ground-truth boxes count when they hold **≥ 1 LiDAR
  point** (nuScenes' rule; LION's KITTI-like report used ≥ 5 — also given, ``bev_ap_min5``); boxes with none are
  "don't care" (neither missed nor a false positive when detected). Full tables: every class, BEV and 3-D, both
  IoUs, every bin.
- **BEV segmentation mIoU** (``seg_miou``): drivable area + one footprint channel per class, ratio of sums over the
  split, best of BEVFusion's thresholds per channel (:mod:`.metrics`).
- **Occupancy IoU** (``occ_iou``): all (z, y, x) cells at 0.5.

Temporal modes run each sequence frame by frame from its first frame (:func:`.train.predict_sequences`).
**Intervals** resample *sequences* (frames of one sequence are correlated), the same resamples for every method
and metric, 95 % percentile: per-method intervals and paired differences (LCT − L first). The clustering baseline
only detects; its seg / occupancy entries are null.
"""
from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from latentstack.sim.unilion_scenes import SPLIT_SEEDS, camera_calibration, load_split

from ..lion.clustering import ClusteringDetector
from ..lion.eval import RANGE_BINS, ap_from_matches, evaluate_detections, match_scans
from .metrics import occupancy_counts, occupancy_iou, seg_counts, seg_miou

__all__ = ["MAIN", "PAIRS", "run_evaluation"]

MAIN = {"class": "Car", "metric": "bev", "iou": 0.5, "min_points": 1}
# paired differences reported (a − b); LCT − L is the goal
PAIRS: tuple[tuple[str, str], ...] = (("LCT", "L"), ("LC", "L"), ("LT", "L"), ("LCT", "LC"), ("L", "lion_only"),
                                      ("LCT", "lion_only"), ("L", "clustering"))


def _gt(frame: Any) -> dict[str, np.ndarray]:
    return {"boxes": frame.boxes, "labels": frame.box_class, "num_points": frame.box_num_points}


def _methods(unilion: str, lion_only: str | None, clustering: bool, frames: list, intr: np.ndarray,
             c2e: np.ndarray, device: str) -> tuple[dict[str, list], dict[str, Any]]:
    from .configuration_unilion import MODES
    from .modeling_unilion import load_unilion
    from .train import predict_sequences

    dets: dict[str, list] = {}
    info: dict[str, Any] = {}

    def meta(path: str) -> dict[str, Any]:
        extra = json.loads((Path(path) / "config.json").read_text()).get("extra", {})
        return {"artifact": str(path), "num_parameters": extra.get("num_parameters"), "train": extra.get("train")}

    model = load_unilion(unilion, device=device)
    for mode in MODES:
        t = time.perf_counter()
        dets[mode] = predict_sequences(model, frames, mode, intr, c2e, batch_size=1)
        info[mode] = {**meta(unilion), "mode": mode, "ms_per_frame": (time.perf_counter() - t) / len(frames) * 1e3}
    if lion_only:
        base = load_unilion(lion_only, device=device)
        t = time.perf_counter()
        dets["lion_only"] = predict_sequences(base, frames, "L", intr, c2e, batch_size=1)
        info["lion_only"] = {**meta(lion_only), "mode": "L",
                             "ms_per_frame": (time.perf_counter() - t) / len(frames) * 1e3}
    if clustering:
        c = ClusteringDetector()
        t = time.perf_counter()
        dets["clustering"] = [c.detect(f.points) for f in frames]
        info["clustering"] = {"kind": "non-learned", "config": c.cfg.__dict__,
                              "ms_per_frame": (time.perf_counter() - t) / len(frames) * 1e3}
    return dets, info


def _bootstrap(stats: dict[str, Callable[[np.ndarray], float]], groups: list[np.ndarray], num_resamples: int,
               seed: int = 0) -> dict[str, np.ndarray]:
    """Each statistic (a function of frame indices) on ``num_resamples`` resamples of whole groups (sequences)."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[float]] = {k: [] for k in stats}
    for _ in range(num_resamples):
        pick = rng.integers(0, len(groups), len(groups))
        idx = np.concatenate([groups[g] for g in pick])
        for k, fn in stats.items():
            out[k].append(fn(idx))
    return {k: np.asarray(v) for k, v in out.items()}


def _ci(samples: np.ndarray) -> list[float]:
    if np.isnan(samples).all():  # e.g. a range bin without ground truth
        return [float("nan"), float("nan")]
    lo, hi = np.nanpercentile(samples, [2.5, 97.5])
    return [float(lo), float(hi)]


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {**result["modes"], **result["baselines"]}
    names = list(rows)
    bins = list(RANGE_BINS)
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6), gridspec_kw={"width_ratios": [3, 1.2, 1.2]})
    w = 0.8 / len(names)
    for i, n in enumerate(names):
        vals = [rows[n]["by_range"][b]["bev_ap"] for b in bins]
        axes[0].bar(np.arange(len(bins)) + i * w, np.nan_to_num(vals), w, label=n)
    axes[0].set_xticks(np.arange(len(bins)) + 0.4 - w / 2, bins)
    axes[0].set_ylabel("Car BEV AP@0.5 (R40)")
    axes[0].set_ylim(0, 1)
    axes[0].legend(fontsize=8, ncol=2)
    axes[0].set_title("detection by range")
    for ax, key, title in ((axes[1], "seg_miou", "BEV seg mIoU"), (axes[2], "occ_iou", "occupancy IoU")):
        have = [n for n in names if rows[n].get(key) is not None]
        vals = [rows[n][key] for n in have]
        err = np.array([[v - rows[n][key + "_ci"][0], rows[n][key + "_ci"][1] - v] for n, v in zip(have, vals,
                                                                                                   strict=True)]).T
        ax.bar(range(len(have)), vals, yerr=err, color=[f"C{names.index(n)}" for n in have], capsize=3)
        ax.set_xticks(range(len(have)), have, rotation=45, fontsize=8)
        ax.set_title(title)
        ax.set_ylim(0, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fmt(v: float | None, ci: list[float] | None = None) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "—"
    return f"{v:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _summary(result: dict[str, Any]) -> str:
    rows = {**result["modes"], **result["baselines"]}
    bins = [b for b in RANGE_BINS if b != "all"]
    lines = [
        "## Tables (written by the command below; the text above them is the analysis)", "",
        (f"Split `{result['split']}`: {result['num_sequences']} sequences, {result['num_frames']} frames, "
        f"{result['num_gt_main']} cars with ≥ {MAIN['min_points']} LiDAR point. 95 % intervals: percentile bootstrap "
        f"over sequences ({result['bootstrap_resamples']} resamples, paired)."), "",
        "| method | Car BEV AP@0.5 | " + " | ".join(bins) + " | AP (≥ 5 pts) | seg mIoU | occ IoU | ms/frame |",
        "|---|---|" + "---|" * len(bins) + "---|---|---|---|",
    ]
    for n, r in rows.items():
        lines.append(f"| {n} | {_fmt(r['bev_ap'], r['bev_ap_ci'])} | "
                     + " | ".join(_fmt(r["by_range"][b]["bev_ap"]) for b in bins)
                     + f" | {_fmt(r['bev_ap_min5'])} | {_fmt(r.get('seg_miou'), r.get('seg_miou_ci'))} | "
                       f"{_fmt(r.get('occ_iou'), r.get('occ_iou_ci'))} | {r['ms_per_frame']:.0f} |")
    lines += ["", "Paired differences (a − b), same resamples:", "",
              "| a − b | BEV AP | " + " | ".join(bins) + " | seg mIoU | occ IoU |",
              "|---|---|" + "---|" * len(bins) + "---|---|"]
    for name, d in result["paired"].items():
        cells = [_fmt(d["bev_ap"]["diff"], d["bev_ap"]["ci"])]
        cells += [_fmt(d["by_range"][b]["diff"], d["by_range"][b]["ci"]) for b in bins]
        cells += [_fmt(d[k]["diff"], d[k]["ci"]) if k in d else "—" for k in ("seg_miou", "occ_iou")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Car BEV AP@0.5 by scene variant (LiDAR-weak variants: sparse, far, occluded):", "",
              "| method | " + " | ".join(result["variants"]) + " |", "|---|" + "---|" * len(result["variants"])]
    for n in rows:
        lines.append(f"| {n} | " + " | ".join(_fmt(result["by_variant"][v][n]) for v in result["variants"]) + " |")
    seg_names = result["seg_channels"]
    lines += ["", "Segmentation IoU per channel:", "", "| method | " + " | ".join(seg_names) + " |",
              "|---|" + "---|" * len(seg_names)]
    for n, r in rows.items():
        if r.get("seg_per_channel") is not None:
            lines.append(f"| {n} | " + " | ".join(_fmt(v) for v in r["seg_per_channel"]) + " |")
    lines += ["", f"Command: `{result['command']}`", ""]
    return "\n".join(lines)


def run_evaluation(unilion: str, lion_only: str | None = None, clustering: bool = True,
                   data_dir: str | Path = "data/unilion", split: str = "test", out_dir: Path | None = None,
                   bootstrap: int = 1000, command: str | None = None, device: str = "cpu") -> dict[str, Any]:
    """Evaluate every method on ``split``; write ``unilion.json`` + ``unilion.png`` + ``summary.md`` tables."""
    from .configuration_unilion import MODES

    frames, scfg = load_split(Path(data_dir) / split)
    intr, c2e = camera_calibration(scfg)
    gts = [_gt(f) for f in frames]
    dets, info = _methods(unilion, lion_only, clustering, frames, intr, c2e, device)
    names = list(dets)
    car = ("Car", "Pedestrian", "Cyclist").index(MAIN["class"])
    seg_names = list(json.loads((Path(unilion) / "config.json").read_text())["config"]["seg_classes"])

    seqs: dict[int, list[int]] = {}
    for i, f in enumerate(frames):
        seqs.setdefault(f.seq_seed, []).append(i)
    groups = [np.asarray(v) for v in seqs.values()]

    matches = {n: {b: match_scans(d, gts, car, MAIN["iou"], MAIN["metric"], rb, MAIN["min_points"])
                   for b, rb in RANGE_BINS.items()} for n, d in dets.items()}
    seg_c = {n: np.stack([seg_counts(x["seg"], f.bev_semantic) for x, f in zip(d, frames, strict=True)])
             for n, d in dets.items() if "seg" in d[0]}
    occ_c = {n: np.stack([occupancy_counts(x["occ"], f.occupancy) for x, f in zip(d, frames, strict=True)])
             for n, d in dets.items() if "occ" in d[0]}

    stats: dict[str, Callable[[np.ndarray], float]] = {}
    for n in names:
        for b in RANGE_BINS:
            stats[f"{n}/ap/{b}"] = (lambda idx, m=matches[n][b]: ap_from_matches([m[i] for i in idx]).ap)
        if n in seg_c:
            stats[f"{n}/seg"] = lambda idx, c=seg_c[n]: seg_miou(c[idx])[0]
            stats[f"{n}/occ"] = lambda idx, c=occ_c[n]: occupancy_iou(c[idx])
    boot = _bootstrap(stats, groups, bootstrap)

    def row(n: str) -> dict[str, Any]:
        r: dict[str, Any] = {
            "bev_ap": ap_from_matches(matches[n]["all"]).ap, "bev_ap_ci": _ci(boot[f"{n}/ap/all"]),
            "by_range": {b: {"bev_ap": ap_from_matches(matches[n][b]).ap, "ci": _ci(boot[f"{n}/ap/{b}"]),
                             "num_gt": int(sum(m[2] for m in matches[n][b]))} for b in RANGE_BINS},
            "bev_ap_min5": ap_from_matches(match_scans(dets[n], gts, car, MAIN["iou"], "bev", None, 5)).ap,
            "seg_miou": None, "occ_iou": None, "ms_per_frame": info[n]["ms_per_frame"],
        }
        if n in seg_c:
            miou, per = seg_miou(seg_c[n])
            r.update(seg_miou=miou, seg_miou_ci=_ci(boot[f"{n}/seg"]), seg_per_channel=[float(v) for v in per],
                     occ_iou=occupancy_iou(occ_c[n]), occ_iou_ci=_ci(boot[f"{n}/occ"]))
        return r

    rows = {n: row(n) for n in names}
    paired: dict[str, Any] = {}
    for a, b in PAIRS:
        if a not in rows or b not in rows:
            continue
        d: dict[str, Any] = {"bev_ap": {"diff": rows[a]["bev_ap"] - rows[b]["bev_ap"],
                                        "ci": _ci(boot[f"{a}/ap/all"] - boot[f"{b}/ap/all"])},
                             "by_range": {r: {"diff": rows[a]["by_range"][r]["bev_ap"] - rows[b]["by_range"][r]["bev_ap"],
                                              "ci": _ci(boot[f"{a}/ap/{r}"] - boot[f"{b}/ap/{r}"])}
                                          for r in RANGE_BINS}}
        for k, key in (("seg", "seg_miou"), ("occ", "occ_iou")):
            if a in seg_c and b in seg_c:
                d[key] = {"diff": rows[a][key] - rows[b][key], "ci": _ci(boot[f"{a}/{k}"] - boot[f"{b}/{k}"])}
        paired[f"{a} - {b}"] = d

    variants = sorted({f.variant for f in frames}, key=lambda v: ("base", "sparse", "far", "occluded").index(v)
                      if v in ("base", "sparse", "far", "occluded") else 9)
    by_variant = {v: {n: ap_from_matches([matches[n]["all"][i] for i, f in enumerate(frames) if f.variant == v]).ap
                      for n in names} for v in variants}
    tables = {n: evaluate_detections(d, gts, ("Car", "Pedestrian", "Cyclist"), min_points=MAIN["min_points"])
              for n, d in dets.items()}
    seeds = sorted(seqs)
    result = {
        "main": {**MAIN, "range": "all", "ap": "R40"},
        "modes": {m: rows[m] for m in MODES if m in rows},
        "baselines": {n: rows[n] for n in names if n not in MODES},
        "paired": paired,
        "variants": variants,
        "by_variant": by_variant,
        "seg_channels": seg_names,
        "split": split,
        "num_sequences": len(seqs),
        "num_frames": len(frames),
        "sequence_seed_range": [int(seeds[0]), int(seeds[-1])],
        "split_seed_ranges": {k: [r.start, r.stop - 1] for k, r in SPLIT_SEEDS.items()},
        "num_gt_main": int(sum(m[2] for m in matches[names[0]]["all"])),
        "bootstrap_resamples": bootstrap,
        "bootstrap_unit": "sequence",
        "methods": info,
        "tables": tables,
        "command": command or " ".join(["lstack", *sys.argv[1:]]),
    }
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "unilion.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
        _plot(result, out_dir / "unilion.png")
        summary = out_dir / "summary.md"
        head = ""
        if summary.is_file():  # keep the hand-written analysis above the generated tables
            text = summary.read_text()
            head = text.split("## Tables (written by the command below")[0]
        summary.write_text(head + _summary(result))
    for n, r in rows.items():
        print(f"{n:>12}: Car BEV AP@0.5 = {r['bev_ap']:.3f} [{r['bev_ap_ci'][0]:.3f}, {r['bev_ap_ci'][1]:.3f}]  "
              f"seg mIoU {_fmt(r['seg_miou'])}  occ IoU {_fmt(r['occ_iou'])}  ({r['ms_per_frame']:.0f} ms/frame)")
    return result
