"""Scripted-expert demonstrations written as a LeRobotDataset (lerobot 0.4.4, PNG images in parquet).

Per frame: ``observation.image`` (H, W, 3) uint8, ``observation.state`` (4,) float32,
``action`` (4,) float32 and ``task`` = the instruction. A frame holds the observation seen
*before* its action. Only successful expert episodes are kept; each runs on until
``steps_after_success`` steps past the first success so a policy also learns to stay.

    python -m latentstack.sim.record --suite metaworld_mt6 --root data/demos --episodes-per-task 50
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .rollout import RolloutHook, Transition, rollout
from .suites import Suite, load_suite

if TYPE_CHECKING:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

__all__ = ["DEFAULT_REPO_ID", "FPS", "demo_features", "load_demos", "record_demos", "run_expert_episode"]

FPS = 80  # MetaWorld control period: frame_skip 5 x 2.5 ms = 12.5 ms
DEFAULT_REPO_ID = "latentstack/metaworld_demos"
STEPS_AFTER_SUCCESS = 10


def _lerobot_dataset_cls():
    # Import torchvision before lerobot: lerobot probes it with importlib.util.find_spec first,
    # which can consume the venv's one-shot torchvision CPU import hook (scripts/torchvision_shim.py).
    import torchvision  # noqa: F401
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    return LeRobotDataset


def demo_features(image_size: int) -> dict:
    return {
        "observation.image": {
            "dtype": "image",
            "shape": (image_size, image_size, 3),
            "names": ["height", "width", "channels"],
        },
        "observation.state": {
            "dtype": "float32",
            "shape": (4,),
            "names": ["hand_x", "hand_y", "hand_z", "gripper_opening"],
        },
        "action": {
            "dtype": "float32",
            "shape": (4,),
            "names": ["dx", "dy", "dz", "grip"],
        },
    }


class _ExpertFrames(RolloutHook):
    """(image, state, action) per step, the observation seen before its action; the first success step."""

    def __init__(self) -> None:
        self.frames: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.first_success: int | None = None

    def on_action(self, obs, action, seconds: float) -> None:
        self.frames.append((obs["image"], obs["state"], action))

    def on_step(self, tr: Transition) -> None:
        if self.first_success is None and tr.info["success"]:
            self.first_success = tr.t


def run_expert_episode(env, expert, seed: int, steps_after_success: int = STEPS_AFTER_SUCCESS):
    """One expert episode. Returns (frames, first_success_step or None); frames are (image, state, action).

    The shared rollout loop, run on past MetaWorld's terminate-at-success until ``steps_after_success``
    steps after the first success (or truncation)."""
    rec = _ExpertFrames()
    rollout(env, lambda obs: expert(env.full_state), seed, hooks=[rec], end_on_terminated=False,
            steps_after_success=steps_after_success, task=getattr(env, "task", ""))
    return rec.frames, rec.first_success


def record_demos(
    suite: Suite,
    root: Path,
    episodes_per_task: int,
    split: str = "train",
    repo_id: str = DEFAULT_REPO_ID,
    progress: bool = True,
    *,
    overwrite: bool = False,
    steps_after_success: int = STEPS_AFTER_SUCCESS,
    max_attempts_factor: float = 2.0,
) -> LeRobotDataset:
    """Runs the scripted expert on ``suite.seeds[split]`` (in order) until ``episodes_per_task``
    successful episodes per task are kept, and writes them as one LeRobotDataset at ``root``.

    A summary (per-task attempts, successes, expert episode lengths, seeds used, speed) is
    written to ``root/recording.json`` and returned as ``dataset.recording_summary``.
    """
    from tqdm import tqdm

    from .experts import make_expert
    from .metaworld_env import MetaWorldLangEnv

    root = Path(root)
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{root} exists and is not empty (pass overwrite=True / --overwrite)")
        shutil.rmtree(root)
    elif root.exists():
        root.rmdir()  # LeRobot creates the folder itself and refuses an existing one
    root.parent.mkdir(parents=True, exist_ok=True)

    seeds = list(suite.seeds[split])
    if split == "test":
        print("[record] warning: recording demos on the held-out test seeds", file=sys.stderr)
    max_attempts = min(len(seeds), max(episodes_per_task, int(np.ceil(episodes_per_task * max_attempts_factor))))

    ds = _lerobot_dataset_cls().create(
        repo_id=repo_id,
        fps=FPS,
        features=demo_features(suite.image_size),
        root=root,
        robot_type="sawyer",
        use_videos=False,
    )
    summary: dict = {
        "suite": suite.name,
        "split": split,
        "repo_id": repo_id,
        "fps": FPS,
        "image_size": suite.image_size,
        "camera": suite.camera,
        "episodes_per_task": episodes_per_task,
        "steps_after_success": steps_after_success,
        "tasks": {},
    }
    # LeRobot embeds each episode's images with datasets.map, which draws a bar per episode.
    import datasets

    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    bar = tqdm(total=episodes_per_task * len(suite.tasks), desc="demos", unit="ep",
               dynamic_ncols=True, disable=not progress)
    t_start = time.perf_counter()
    total_frames = 0
    sim_steps = 0
    try:
        for spec in suite.tasks:
            env = MetaWorldLangEnv(spec.name, image_size=suite.image_size, camera=suite.camera,
                                   max_episode_steps=spec.max_episode_steps, instruction=spec.instruction)
            expert = make_expert(spec.name)
            kept_seeds: list[int] = []
            failed_seeds: list[int] = []
            success_steps: list[int] = []
            t_task = time.perf_counter()
            try:
                for seed in seeds[:max_attempts]:
                    if len(kept_seeds) >= episodes_per_task:
                        break
                    frames, first_success = run_expert_episode(env, expert, seed, steps_after_success)
                    sim_steps += len(frames)
                    if first_success is None:
                        failed_seeds.append(seed)
                        bar.set_postfix_str(f"{spec.name} (expert failed seed {seed})")
                        continue
                    for image, state, action in frames:
                        ds.add_frame({
                            "observation.image": image,
                            "observation.state": state,
                            "action": action,
                            "task": spec.instruction,
                        })
                    ds.save_episode()
                    kept_seeds.append(seed)
                    success_steps.append(first_success)
                    total_frames += len(frames)
                    bar.set_postfix_str(spec.name, refresh=False)
                    bar.update(1)
            finally:
                env.close()
            attempts = len(kept_seeds) + len(failed_seeds)
            summary["tasks"][spec.name] = {
                "instruction": spec.instruction,
                "max_episode_steps": spec.max_episode_steps,
                "attempts": attempts,
                "successes": len(kept_seeds),
                "success_rate": len(kept_seeds) / attempts if attempts else 0.0,
                "steps_to_success_mean": float(np.mean(success_steps)) if success_steps else None,
                "steps_to_success_max": int(max(success_steps)) if success_steps else None,
                "kept_seeds": kept_seeds,
                "failed_seeds": failed_seeds,
                "seconds": round(time.perf_counter() - t_task, 2),
            }
            if len(kept_seeds) < episodes_per_task:
                print(f"[record] warning: {spec.name}: only {len(kept_seeds)}/{episodes_per_task} successful "
                      f"episodes in {attempts} attempts", file=sys.stderr)
    finally:
        bar.close()
        ds.finalize()
        if bars_were_on:
            datasets.enable_progress_bars()
    _remove_empty_dirs(root / "images")  # LeRobot's temporary PNG folders, emptied by save_episode
    elapsed = time.perf_counter() - t_start
    summary.update({
        "episodes": sum(t["successes"] for t in summary["tasks"].values()),
        "frames": total_frames,
        "sim_steps": sim_steps,
        "seconds": round(elapsed, 2),
        "frames_per_s": round(total_frames / elapsed, 1) if elapsed > 0 else None,
    })
    (root / "recording.json").write_text(json.dumps(summary, indent=2))
    ds.recording_summary = summary  # type: ignore[attr-defined]
    return ds


def _remove_empty_dirs(path: Path) -> None:
    if not path.is_dir():
        return
    for sub in sorted(path.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if sub.is_dir() and not any(sub.iterdir()):
            sub.rmdir()
    if not any(path.iterdir()):
        path.rmdir()


def load_demos(root: Path, repo_id: str = DEFAULT_REPO_ID, **kwargs) -> LeRobotDataset:
    """Reads a recorded dataset back with LeRobot's own loader (offline)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return _lerobot_dataset_cls()(repo_id, root=Path(root), **kwargs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m latentstack.sim.record", description=__doc__.splitlines()[0])
    p.add_argument("--suite", default="metaworld_mt6", help="suite name (sim/suites/<name>.yaml) or YAML path")
    p.add_argument("--root", type=Path, default=Path("data/demos"), help="dataset folder to create")
    p.add_argument("--episodes-per-task", type=int, default=50)
    p.add_argument("--split", default="train", choices=["train", "select", "test"])
    p.add_argument("--repo-id", default=DEFAULT_REPO_ID)
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --root")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import torch

        torch.set_num_threads(1)  # a simulator runs in this process
    except ImportError:
        pass
    suite = load_suite(args.suite)
    ds = record_demos(suite, args.root, args.episodes_per_task, split=args.split, repo_id=args.repo_id,
                      progress=not args.no_progress, overwrite=args.overwrite)
    s = ds.recording_summary
    for name, t in s["tasks"].items():
        mean = t["steps_to_success_mean"]
        print(f"{name:28s} expert {t['successes']}/{t['attempts']}  steps-to-success mean "
              f"{mean if mean is None else round(mean, 1)} max {t['steps_to_success_max']}")
    print(f"{s['episodes']} episodes, {s['frames']} frames in {s['seconds']:.1f} s "
          f"({s['frames_per_s']} frames/s) -> {args.root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
