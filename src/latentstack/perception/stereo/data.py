"""Stereo training/evaluation batches from rendered splits (``latentstack.sim.stereo_scenes``).

The clean renders are turned into underwater images on the fly: training draws a random
turbidity ``k ~ U(0, k_max)`` and jitters β, B∞ and the noise per sample; evaluation uses a
fixed ``k`` and a noise generator seeded by (scene seed, k), so every method sees identical pixels.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from latentstack.sim.stereo_scenes import (
    BACKSCATTER,
    BETA,
    disparity_from_depth,
    load_split,
    occlusion_mask,
    underwater,
)

__all__ = ["StereoSplit", "textureless_mask"]


def textureless_mask(clean_left: np.ndarray, thresh: float = 0.012, win: int = 7) -> np.ndarray:
    """Pixels whose clean-radiance local std (``win``×``win``, grey) is below ``thresh``."""
    g = clean_left.astype(np.float32).mean(-1) / (255.0 if clean_left.dtype == np.uint8 else 1.0)
    mu = cv2.blur(g, (win, win))
    var = cv2.blur(g * g, (win, win)) - mu * mu
    return np.sqrt(np.maximum(var, 0)) < thresh


@dataclass
class StereoSplit:
    left: np.ndarray  # (N, H, W, 3) uint8 clean
    right: np.ndarray
    depth_left: np.ndarray  # (N, H, W) float32
    depth_right: np.ndarray
    focal: np.ndarray  # (N,)
    baseline: np.ndarray
    seeds: np.ndarray
    disp: np.ndarray  # (N, H, W) exact disparity
    noc: np.ndarray  # (N, H, W) bool, non-occluded

    @classmethod
    def load(cls, path: Path | str, limit: int | None = None) -> StereoSplit:
        z = load_split(path)
        n = len(z["seeds"]) if limit is None else min(limit, len(z["seeds"]))
        fb = (z["focal"] * z["baseline"])[:n]
        dl = z["depth_left"][:n]
        dr = z["depth_right"][:n]
        disp = np.stack([disparity_from_depth(dl[i], 1.0, fb[i]) for i in range(n)])
        disp_r = np.stack([disparity_from_depth(dr[i], 1.0, fb[i]) for i in range(n)])
        noc = np.stack([occlusion_mask(disp[i], disp_r[i]) for i in range(n)])
        return cls(z["left"][:n], z["right"][:n], dl, dr, z["focal"][:n], z["baseline"][:n], z["seeds"][:n], disp, noc)

    def __len__(self) -> int:
        return len(self.seeds)

    @property
    def focal_baseline(self) -> np.ndarray:
        return (self.focal * self.baseline).astype(np.float32)

    def pair(self, i: int, turbidity: float, rng: np.random.Generator, jitter: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Underwater uint8 (left, right) of sample ``i``."""
        beta, binf, noise = BETA, BACKSCATTER, 0.01
        if jitter:
            beta = tuple(np.asarray(BETA) * rng.uniform(0.8, 1.2, 3))
            binf = tuple(np.clip(np.asarray(BACKSCATTER) * rng.uniform(0.7, 1.3, 3), 0, 1))
            noise = float(rng.uniform(0.004, 0.02))
        f = float(self.focal[i])
        lc = self.left[i].astype(np.float32) / 255.0
        rc = self.right[i].astype(np.float32) / 255.0
        left = underwater(lc, self.depth_left[i], f, turbidity, rng, beta=beta, backscatter=binf, noise_std=noise)
        right = underwater(rc, self.depth_right[i], f, turbidity, rng, beta=beta, backscatter=binf, noise_std=noise)
        return left, right

    def eval_pair(self, i: int, turbidity: float) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([int(self.seeds[i]), round(turbidity * 1000), 0xE7A1])
        return self.pair(i, turbidity, rng)

    def train_batch(self, idx: np.ndarray, rng: np.random.Generator, k_max: float = 3.0) -> dict[str, torch.Tensor]:
        L, R = [], []
        for i in idx:
            left, right = self.pair(int(i), float(rng.uniform(0.0, k_max)), rng, jitter=True)
            L.append(left)
            R.append(right)
        return self.batch(idx, np.stack(L), np.stack(R))

    def batch(self, idx: np.ndarray, left: np.ndarray, right: np.ndarray) -> dict[str, torch.Tensor]:
        def img(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(a).permute(0, 3, 1, 2).float()

        return {
            "left": img(left), "right": img(right),
            "disp": torch.from_numpy(self.disp[idx]).unsqueeze(1),
            "valid": torch.ones(len(idx), 1, *self.disp.shape[1:]),  # dense GT: train on every pixel (RAFT-Stereo)
            "noc": torch.from_numpy(self.noc[idx]).unsqueeze(1),
            "depth": torch.from_numpy(self.depth_left[idx]).unsqueeze(1),
            "fb": torch.from_numpy(self.focal_baseline[idx]),
        }
