"""Non-learned baseline: RANSAC ground removal → Euclidean clustering → fitted, classified boxes.

1. Ground: RANSAC plane on the lowest 40 % of points (scipy-free numpy), refined by least
   squares on its inliers; points < ``ground_margin`` above the plane are removed.
2. Clusters: connected components (``scipy.sparse.csgraph``) of the radius graph
   (``scipy.spatial.cKDTree.query_pairs``, radius ``cluster_radius``) in 3-D.
3. Boxes: ``cv2.minAreaRect`` on the cluster's BEV points → yaw along the long side; height
   from the plane. Class by size rules (below). Partially seen objects are completed to the
   class template size, keeping the edges facing the sensor fixed (the usual L-shape prior).
4. Score: grows with the number of points and with how well the fitted extent matches the
   template (so ranking, and hence AP, is meaningful).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from latentstack.sim.lidar_scenes import CLASS_SIZES, CLASSES

__all__ = ["ClusteringConfig", "ClusteringDetector", "fit_ground_plane"]


@dataclass(frozen=True)
class ClusteringConfig:
    ground_margin: float = 0.2
    ransac_iters: int = 60
    ransac_threshold: float = 0.1
    cluster_radius: float = 0.5
    min_points: int = 5
    seed: int = 0


def fit_ground_plane(xyz: np.ndarray, cfg: ClusteringConfig) -> np.ndarray:
    """Plane ``(a, b, c)`` with ground height ``z = a·x + b·y + c``."""
    rng = np.random.default_rng(cfg.seed)
    low = xyz[xyz[:, 2] <= np.quantile(xyz[:, 2], 0.4)]
    best, best_n = np.array([0.0, 0.0, float(np.median(low[:, 2]))]), -1
    design = np.c_[low[:, :2], np.ones(len(low))]
    for _ in range(cfg.ransac_iters):
        s = low[rng.choice(len(low), 3, replace=False)]
        a = np.c_[s[:, :2], np.ones(3)]
        if abs(np.linalg.det(a)) < 1e-6:
            continue
        plane = np.linalg.solve(a, s[:, 2])
        n = int((np.abs(design @ plane - low[:, 2]) < cfg.ransac_threshold).sum())
        if n > best_n:
            best, best_n = plane, n
    inl = np.abs(design @ best - low[:, 2]) < cfg.ransac_threshold
    if inl.sum() >= 3:
        best = np.linalg.lstsq(design[inl], low[inl, 2], rcond=None)[0]
    return best


def _classify(length: float, width: float, height: float) -> int | None:
    """Size rules on the *visible* extent (partial views are smaller than the object)."""
    if not 0.8 <= height <= 2.3:
        return None
    if length <= 1.1 and width <= 1.0:
        return CLASSES.index("Pedestrian") if height >= 1.3 else None
    if length <= 2.3 and width <= 1.0 and height >= 1.3:
        return CLASSES.index("Cyclist")
    if 1.2 <= length <= 5.0 and width <= 2.3 and height <= 2.0:
        return CLASSES.index("Car")
    return None


class ClusteringDetector:
    def __init__(self, cfg: ClusteringConfig | None = None) -> None:
        self.cfg = cfg or ClusteringConfig()

    def detect(self, points: np.ndarray) -> dict[str, np.ndarray]:
        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] < 3:
            raise ValueError(f"points must be (P, >=3), got {pts.shape}")
        empty = {"boxes": np.zeros((0, 7), np.float32), "scores": np.zeros(0, np.float32),
                 "labels": np.zeros(0, np.int64)}
        if len(pts) < 10:
            return empty
        plane = fit_ground_plane(pts[:, :3], self.cfg)
        ground_z = np.c_[pts[:, :2], np.ones(len(pts))] @ plane
        above = pts[:, 2] - ground_z
        obj = pts[above > self.cfg.ground_margin]
        obj_ground = ground_z[above > self.cfg.ground_margin]
        if len(obj) < self.cfg.min_points:
            return empty
        pairs = cKDTree(obj[:, :3]).query_pairs(self.cfg.cluster_radius, output_type="ndarray")
        graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(obj), len(obj)))
        _, lab = connected_components(graph, directed=False)
        boxes, scores, labels = [], [], []
        for k in np.unique(lab):
            c = obj[lab == k]
            if len(c) < self.cfg.min_points:
                continue
            g = float(np.median(obj_ground[lab == k]))
            height = float(c[:, 2].max() - g)
            (cx, cy), (w0, h0), ang = cv2.minAreaRect(c[:, :2].astype(np.float32))
            yaw = math.radians(ang)
            length, width = w0, h0
            if h0 > w0:
                length, width, yaw = h0, w0, yaw + math.pi / 2
            cls = _classify(length, width, height)
            if cls is None:
                continue
            tl, tw, th = CLASS_SIZES[CLASSES[cls]]
            # complete to the template: grow each local axis away from the sensor
            ux, uy = math.cos(yaw), math.sin(yaw)
            vx, vy = -uy, ux
            ctr = np.array([cx, cy])
            for (ax, ay), have, want in (((ux, uy), length, tl), ((vx, vy), width, tw)):
                grow = max(0.0, want - have)
                away = 1.0 if (ctr @ np.array([ax, ay])) >= 0 else -1.0
                ctr = ctr + away * grow / 2 * np.array([ax, ay])
            fit = math.exp(-abs(length - tl) / tl - abs(height - th) / th)
            score = (1 - math.exp(-len(c) / 30.0)) * (0.5 + 0.5 * fit)
            boxes.append([ctr[0], ctr[1], g + th / 2, max(tl, length), max(tw, width), th,
                          (yaw + math.pi) % (2 * math.pi) - math.pi])
            scores.append(score)
            labels.append(cls)
        if not boxes:
            return empty
        return {"boxes": np.asarray(boxes, np.float32), "scores": np.asarray(scores, np.float32),
                "labels": np.asarray(labels, np.int64)}
