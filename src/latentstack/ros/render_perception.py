"""One frame of the perception graph as a picture: BEV LiDAR cloud with predicted and true boxes; the left stereo
image with its predicted depth, the true depth and the error.

Inputs are plain arrays (decoded messages), so the same function draws a live graph run (``lstack launch
ros/graphs/perception.yaml --render DIR``) or a recorded bag.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["bev_corners", "render_perception_frame"]

CLASS_COLORS = {"Car": "tab:blue", "Pedestrian": "tab:red", "Cyclist": "tab:green"}


def bev_corners(box: Sequence[float]) -> np.ndarray:
    """(5, 2) closed polygon of a box ``(x, y, z, l, w, h, yaw)`` in the x-y plane."""
    x, y, _, length, width, _, yaw = (float(v) for v in box[:7])
    c, s = np.cos(yaw), np.sin(yaw)
    local = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1], [1, 1]], float) * [length / 2, width / 2]
    return local @ np.array([[c, s], [-s, c]]) + [x, y]


def render_perception_frame(path: str | Path, *, points: np.ndarray, gt_boxes: np.ndarray, gt_labels: Sequence[str],
                            det_boxes: np.ndarray, det_scores: Sequence[float], det_labels: Sequence[str],
                            left: np.ndarray, depth: np.ndarray, gt_depth: np.ndarray, title: str = "",
                            gt_num_points: Sequence[int] | None = None, score_threshold: float = 0.3,
                            max_depth_m: float = 12.0) -> dict[str, Any]:
    """Writes the PNG; returns the frame's numbers (detections shown, depth error on valid pixels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig = plt.figure(figsize=(13, 6.2))
    gs = fig.add_gridspec(2, 3, width_ratios=[1.25, 1, 1])
    ax = fig.add_subplot(gs[:, 0])
    pts = np.asarray(points, np.float32).reshape(-1, 4)
    # BEV with x (forward) up and y (left) to the left, as seen from above the car
    ax.scatter(-pts[:, 1], pts[:, 0], s=0.3, c=pts[:, 2], cmap="viridis", vmin=-1.8, vmax=0.5, linewidths=0)
    shown_gt = 0
    for i, (b, lab) in enumerate(zip(np.asarray(gt_boxes).reshape(-1, 7), gt_labels, strict=True)):
        if gt_num_points is not None and int(gt_num_points[i]) < 5:
            continue  # not a valid ground truth (evaluation ignores it too)
        poly = bev_corners(b)
        ax.plot(-poly[:, 1], poly[:, 0], color="black", lw=1.6, ls="--")
        shown_gt += 1
    shown = 0
    for b, s, lab in zip(np.asarray(det_boxes).reshape(-1, 7), det_scores, det_labels, strict=True):
        if s < score_threshold:
            continue
        poly = bev_corners(b)
        col = CLASS_COLORS.get(str(lab), "tab:orange")
        ax.plot(-poly[:, 1], poly[:, 0], color=col, lw=1.4)
        ax.text(-b[1], b[0] + b[3] / 2 + 0.3, f"{s:.2f}", color=col, fontsize=6, ha="center")
        shown += 1
    ax.set_xlim(-20, 20)
    ax.set_ylim(0, 40)
    ax.set_aspect("equal")
    ax.set_xlabel("-y (m, right)")
    ax.set_ylabel("x (m, forward)")
    handles = [Line2D([], [], color="black", ls="--", label="ground truth (>= 5 points)")]
    handles += [Line2D([], [], color=c, label=f"LION {k}") for k, c in CLASS_COLORS.items()]
    ax.legend(handles=handles, loc="lower left", fontsize=7)
    ax.set_title(f"LiDAR BEV: {shown} detections (score >= {score_threshold:g}), {shown_gt} true objects", fontsize=9)

    valid = np.isfinite(gt_depth) & (gt_depth > 0) & np.isfinite(depth)
    err = np.where(valid, np.abs(depth - gt_depth), np.nan)
    abs_rel = float(np.nanmean(err[valid] / gt_depth[valid])) if valid.any() else float("nan")
    panels = [(gs[0, 1], left, "left image (rectified, underwater)", {}),
              (gs[1, 1], depth, "predicted depth (m)", {"cmap": "magma_r", "vmin": 0, "vmax": max_depth_m}),
              (gs[0, 2], gt_depth, "true depth (m)", {"cmap": "magma_r", "vmin": 0, "vmax": max_depth_m}),
              (gs[1, 2], err, f"|error| (m), AbsRel {abs_rel:.3f}", {"cmap": "inferno", "vmin": 0, "vmax": 1.0})]
    for spec, img, name, kw in panels:
        a = fig.add_subplot(spec)
        im = a.imshow(img, **kw)
        a.set_title(name, fontsize=9)
        a.axis("off")
        if kw:
            fig.colorbar(im, ax=a, fraction=0.046, pad=0.02)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return {"detections_shown": shown, "true_objects_shown": shown_gt, "score_threshold": score_threshold,
            "depth_abs_rel": abs_rel, "depth_valid_pixels": int(valid.sum())}


# ----------------------------------------------------------------------------- from a recorded graph run
TOPICS = {  # ros/graphs/perception.yaml
    "points": "/lidar/points", "ground_truth": "/lidar/ground_truth", "detections": "/lidar/detections",
    "left": "/stereo/left/image_rect", "depth": "/stereo/depth", "gt_disparity": "/stereo/ground_truth/disparity",
}


def render_bag(bag: str | Path, out_dir: str | Path, *, stamp_ns: int | None = None, command: str = "",
               score_threshold: float = 0.3) -> dict[str, Any]:
    """Renders one frame of a perception graph recording (``lstack launch ros/graphs/perception.yaml --record``):
    the last frame that has every topic, or the one stamped ``stamp_ns``. Writes ``perception_frame.png`` and
    ``perception_frame.json`` (frame, numbers, command) to ``out_dir``."""
    import json

    from latentstack import msgs
    from latentstack.nodes.recorder import read_bag

    frames: dict[int, dict[str, Any]] = {}
    inverse = {v: k for k, v in TOPICS.items()}
    for topic, _, m in read_bag(bag, list(TOPICS.values())):
        frames.setdefault(msgs.stamp_ns(m), {}).setdefault(inverse[topic], m)  # first copy of a re-sent frame
    complete = sorted(s for s, f in frames.items() if len(f) == len(TOPICS))
    if not complete:
        raise ValueError(f"{bag}: no frame has all of {sorted(TOPICS.values())}")
    stamp = complete[-1] if stamp_ns is None else int(stamp_ns)
    if stamp not in complete:
        raise ValueError(f"{bag}: frame {stamp} is not complete; complete frames: {complete}")
    f = frames[stamp]
    cloud = msgs.pointcloud2_to_numpy(f["points"])
    pts = np.stack([cloud[k].astype(np.float32) for k in ("x", "y", "z", "intensity")], 1)
    gt = msgs.detection3d_array_to_numpy(f["ground_truth"])
    det = msgs.detection3d_array_to_numpy(f["detections"])
    n_pts = [int(d.id) if str(d.id).isdigit() else 5 for d in f["ground_truth"].detections]
    gd = f["gt_disparity"]
    disp = msgs.msg_to_image(gd.image)
    with np.errstate(divide="ignore", invalid="ignore"):
        gt_depth = np.where(disp > 0, float(gd.f) * float(gd.t) / disp, np.nan).astype(np.float32)
    out_dir = Path(out_dir)
    numbers = render_perception_frame(
        out_dir / "perception_frame.png", points=pts, gt_boxes=gt["boxes"], gt_labels=gt["labels"],
        det_boxes=det["boxes"], det_scores=det["scores"], det_labels=det["labels"], left=msgs.msg_to_image(f["left"]),
        depth=msgs.msg_to_image(f["depth"]), gt_depth=gt_depth, gt_num_points=n_pts, score_threshold=score_threshold,
        title=f"perception graph, frame stamped {stamp / 1e9:.1f} s: simulated LiDAR -> LION, simulated stereo -> SA2")
    info = {"frame_stamp_ns": stamp, "complete_frames": len(complete), "points": len(pts), **numbers,
            "command": command}
    (out_dir / "perception_frame.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m latentstack.ros.render_perception BAG --out DIR``."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m latentstack.ros.render_perception", description=render_bag.__doc__)
    ap.add_argument("bag", help="rosbag2 directory recorded from ros/graphs/perception.yaml (--record)")
    ap.add_argument("--out", default="reports/perception_graph")
    ap.add_argument("--stamp-ns", type=int, default=None)
    ap.add_argument("--command-line", default="", help="the command that recorded the bag (kept in the JSON)")
    args = ap.parse_args(argv)
    info = render_bag(args.bag, args.out, stamp_ns=args.stamp_ns,
                      command=args.command_line or " ".join(["python -m latentstack.ros.render_perception", *sys.argv[1:]]))
    print(f"frame {info['frame_stamp_ns']} -> {Path(args.out) / 'perception_frame.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
