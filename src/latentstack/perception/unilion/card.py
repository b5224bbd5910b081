"""CARD.md of the UniLION artifacts, rendered from what produced them: the artifact's ``config.json`` (config,
training summary, file hashes) and the held-out report ``unilion.json``. Numbers are copied, never typed in."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from latentstack.core.card import (
    bullet_lines,
    commands_lines,
    header_lines,
    provenance_lines,
    render,
    write_card,
)

__all__ = ["render_unilion_card", "write_unilion_cards"]


def _f(v: Any, ci: Any = None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def render_unilion_card(artifact_dir: str | Path, report: dict[str, Any], report_path: str) -> str:
    """The card of one artifact (``kind`` from its training summary: ``unilion`` or ``lion_only``)."""
    doc = json.loads((Path(artifact_dir) / "config.json").read_text())
    cfg, extra = doc["config"], doc.get("extra", {})
    train = extra.get("train", {})
    kind = train.get("kind", "unilion")
    tr = train.get("train", {})
    name = Path(artifact_dir).name
    rows = report["modes"] if kind == "unilion" else {"L": report["baselines"]["lion_only"]}
    if kind == "unilion":
        summary = ("UniLION-tiny: one LION (BiMamba) backbone over LiDAR voxels, camera voxels (LSS, top-4 depth bins) "
                   "and temporal voxels (the previous frame's output warped by ego pose), with 3-D detection, BEV "
                   "segmentation and BEV occupancy heads. **One set of weights runs as L, LT, LC or LCT**, chosen "
                   "per call; trained by modality dropout.")
    else:
        summary = ("The LION-only baseline of UniLION: the same architecture, recipe and number of steps, trained "
                   "on LiDAR tokens only (mode L). It is the comparison for the modality-dropout model.")
    arch = [
        f"Config type `unilion`, preset `{cfg['name']}`; {extra.get('num_parameters', 0):,} parameters.",
        (f"Grid x {cfg['point_range'][0]}–{cfg['point_range'][3]} m, |y| ≤ {cfg['point_range'][4]} m, z "
         f"{cfg['point_range'][2]}…{cfg['point_range'][5]} m at {' × '.join(str(v) for v in cfg['voxel_size'])} m; "
         f"BEV map at stride {cfg['out_stride']}; {cfg['num_cameras']} cameras of "
         f"{cfg['image_size'][0]} × {cfg['image_size'][1]} px; depth bins {cfg['depth_range']}."),
        ("Departures from the released UniLION (stated in the report too): a CenterPoint-style head instead of "
         "TransFusion (CPU budget); the temporal memory keeps only output voxels under the frame's own tokens "
         "(`memory_footprint`); modality dropout instead of the released staged training."),
    ]
    recipe = [
        (f"`lstack unilion train --kind {kind}`: {tr.get('iterations')} steps × batch {tr.get('batch_size')} frame "
         f"pairs, modes {'/'.join(tr.get('modes', []))} drawn uniformly per step; AdamW one-cycle, LR {tr.get('lr')}, "
         f"weight decay {tr.get('weight_decay')}, clip {tr.get('grad_clip')}; camera-consistent y-flip augmentation; "
         f"seed {tr.get('seed')}."),
        (f"Data: {train.get('num_train_frames')} frames of {train.get('num_train_sequences')} training sequences "
         f"(`lstack unilion gen-data`, train seeds from 1,000,000). Wall {train.get('wall_s', 0) / 60:.1f} min on "
         "1 CPU thread of a shared 2-core box; loss curve `train_loss.png`, log `train_log.json`."),
    ]
    lines = [(f"Held-out test split ({report['num_sequences']} sequences, {report['num_frames']} frames, "
             f"{report['num_gt_main']} cars with ≥ {report['main']['min_points']} LiDAR point; `{report_path}`). "
             "Car BEV AP@0.5 (R40), 95 % sequence-bootstrap intervals:"), "",
             "| mode | BEV AP | 0–20 m | 20–40 m | 40 m+ | seg mIoU | occ IoU | ms/frame |",
             "|---|---|---|---|---|---|---|---|"]
    for m, r in rows.items():
        br = r["by_range"]
        lines.append(f"| {m} | {_f(r['bev_ap'], r['bev_ap_ci'])} | {_f(br['0-20m']['bev_ap'])} | "
                     f"{_f(br['20-40m']['bev_ap'])} | {_f(br['40m+']['bev_ap'])} | {_f(r['seg_miou'])} | "
                     f"{_f(r['occ_iou'])} | {r['ms_per_frame']:.0f} |")
    base = report["baselines"]
    if "clustering" in base:
        lines += ["", f"Clustering baseline on the same frames: BEV AP {_f(base['clustering']['bev_ap'])}."]
    if kind == "unilion":
        if "lion_only" in base:
            lines[-1] += (f" LION-only model (`policies/unilion_tiny_lion_only`): BEV AP "
                          f"{_f(base['lion_only']['bev_ap'], base['lion_only']['bev_ap_ci'])}, seg mIoU "
                          f"{_f(base['lion_only']['seg_miou'])}, occ IoU {_f(base['lion_only']['occ_iou'])}.")
        d = report["paired"].get("LCT - L")
        if d:
            lines += ["", (f"Paired LCT − L: BEV AP {_f(d['bev_ap']['diff'], d['bev_ap']['ci'])}, at 40 m+ "
                          f"{_f(d['by_range']['40m+']['diff'], d['by_range']['40m+']['ci'])}.")]
    load = [(f"`latentstack.perception.unilion.load_unilion(\"policies/{name}\")` (the one artifact loader), then "
            "`model(mode=..., memory=..., **model.processor(clouds, images=..., intrinsics=..., cam2ego=..., "
            "ego_pose=..., time_s=..., scene_id=...))`; nodes: graph kind `unilion_detection`.")]
    cmds = [f"lstack unilion gen-data && lstack unilion train --kind {kind} --out policies/{name}",
            report["command"], "lstack unilion card"]
    return render(header_lines(f"{name} — {'UniLION-tiny' if kind == 'unilion' else 'LION-only baseline'}", summary),
                  bullet_lines(load, "Use"), bullet_lines(arch, "Architecture"), bullet_lines(recipe, "Training"),
                  ["## Test results", "", *lines], commands_lines(cmds), provenance_lines(doc))


def write_unilion_cards(report_path: str | Path, artifacts: list[str | Path]) -> list[Path]:
    """Write CARD.md into each artifact from ``report_path`` (``unilion.json``; repo-relative in the card)."""
    report = json.loads(Path(report_path).read_text())
    return [write_card(a, render_unilion_card(a, report, str(report_path))) for a in artifacts]
